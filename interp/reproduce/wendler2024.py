"""Wendler et al. 2024, "Do Llamas Work in English? On the Latent Language of Multilingual
Transformers": translating between two non-English languages, the logit lens reads the
English word in the middle layers before the target-language word takes over at the end."""

from __future__ import annotations

import numpy as np

from interp.reproduce.finding import NOT_APPLICABLE, Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import bootstrap

SOURCE, TARGET, MIN_ACCURACY = "fr", "de", 0.3


def experiment(model, quick: bool, progress: bool) -> Outcome:
    from interp.lens import token_set_probs
    from interp.plots.reproduce import finding_plot
    from interp.tasks import text

    task = text.translation(model, SOURCE, TARGET, shots=4, seed=0)
    n = min(len(task), 24 if quick else len(task))
    prompts = model.tokenize(task.texts[:n])
    probs = token_set_probs(
        model, prompts, {"target": task.target_ids[:n], "english": task.english_ids[:n], "source": task.source_ids[:n]}
    )
    wide = probs.pivot_table(index=["prompt", "layer"], columns="set", values="prob").reset_index()
    readings = int(wide["layer"].max()) + 1
    final = wide[wide["layer"] == readings - 1].set_index("prompt")
    # translation accuracy: the model's own next token is the target word's first token
    accuracy = _accuracy(model, prompts, np.array(task.answer[:n]))
    # the latent-English gap: per prompt, the largest lead of English over the target before the last
    # quarter of the layers (the "middle"), where the paper sees English; and the end, where the target wins
    middle = wide[wide["layer"] < int(0.75 * readings)]
    gap = (middle["english"] - middle["target"]).groupby(middle["prompt"]).max().to_numpy()
    ours = bootstrap(gap, unit="prompts")
    end = bootstrap((final["target"].to_numpy(), final["english"].to_numpy()), lambda t, e: float(np.mean(t - e)))
    curve = probs.groupby(["layer", "set"], as_index=False)["prob"].agg(["mean", "sem"]).reset_index()
    curve = curve.rename(columns={"mean": "prob"})
    curve["lo"] = curve["prob"] - 1.96 * curve["sem"].fillna(0)
    curve["hi"] = curve["prob"] + 1.96 * curve["sem"].fillna(0)
    fig = finding_plot(
        curve,
        "layer",
        "prob",
        group="set",
        low="lo",
        high="hi",
        order=["english", "target", "source"],
        title=f"Wendler et al. 2024 on {model.cfg.name}: logit lens at the last token, {SOURCE} -> {TARGET} "
        f"(translation accuracy {accuracy.mean():.2f})",
        x_title="layer (reading)",
        y_title="probability of the word's first tokens",
    )
    frame = probs.assign(measure="lens_probability")
    counts = {"prompts": n, "shots": 4, "readings": readings}
    details = {
        "translation_accuracy": float(accuracy.mean()),
        "final_target_minus_english": end.to_dict(),
        "pair": f"{SOURCE}->{TARGET}",
    }
    if accuracy.mean() < MIN_ACCURACY:
        reason = (
            f"{model.cfg.name or 'the model'} is too monolingual for this test: it translates {SOURCE} -> "
            f"{TARGET} correctly on {accuracy.mean():.0%} of {n} prompts (needs >= {MIN_ACCURACY:.0%}), so there is "
            "no translation whose latent language could be read; the lens curves are shown anyway"
        )
        return Outcome(frame, fig, ours, NOT_APPLICABLE, reason, counts, details)
    verdict, reason = decide(
        [
            (
                f"English leads the target language in the middle layers: max over layers < 75% of P(en) - "
                f"P({TARGET}) = {ours} (interval above 0)",
                ours.above(0),
            ),
            (
                f"the target language wins at the last layer: P({TARGET}) - P(en) = {end} (interval above 0)",
                end.above(0),
            ),
        ]
    )
    return Outcome(frame, fig, ours, verdict, reason, counts, details)


def _accuracy(model, prompts, answers: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = model(prompts)
    top = logits[torch.arange(len(prompts)), prompts.last.to(logits.device)].argmax(-1).cpu().numpy()
    return (top == answers).astype(float)


FINDING = register(
    Finding(
        id="wendler2024",
        paper="Wendler et al. 2024",
        citation="C. Wendler, V. Veselovsky, G. Monea, R. West, Do Llamas Work in English? On the Latent Language "
        "of Multilingual Transformers, ACL 2024 (arXiv:2402.10588)",
        claim="When a multilingual model translates between two non-English languages, the logit lens decodes the "
        "English word in the middle layers; the target-language word only takes over in the final layers.",
        published=Published(
            None,
            "Llama-2 7B / 13B / 70B",
            "translation task figures (latent-language probability by layer)",
            "unverified",
            "probability",
            "Qualitative: P(English) rises above P(target) in the middle layers and falls as P(target) rises at the "
            "end.  The figures' values were not checked, so no number is given.",
        ),
        metric="max over the layers before the last quarter of P(English word) - P(target word) at the last token",
        protocol="French -> German word translation, 4-shot, in Wendler et al.'s format "
        '(\'Français: "fleur" - Deutsch: "Blume"\'), one prompt per shipped word whose French, German and '
        "English first tokens differ (quick: 24 prompts); the logit lens (final norm recomputed) at the last "
        "token: the probability of the German word's first tokens and of the English word's, by layer.  A model "
        "that translates under 30% of the prompts correctly is too monolingual: not applicable.",
        rule="reproduced if English leads the target in the middle layers (interval of the max gap above 0) and "
        "the target leads English at the last layer (interval above 0); partial if one holds; not applicable "
        "when the model translates under 30% of the prompts.",
        requires=("text", "residual"),
        experiment=experiment,
        text="shipped word list (interp/tasks/data/translation.json)",
        module=__name__,
    )
)
