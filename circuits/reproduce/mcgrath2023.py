"""McGrath et al. 2023, "The Hydra Effect: Emergent Self-repair in Language Model
Computations": ablating an attention layer changes the answer logit by less than its direct
effect, because later layers change their outputs to compensate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.reproduce.finding import Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import bootstrap


def experiment(model, quick: bool, progress: bool) -> Outcome:
    from circuits import selfrepair
    from interp.plots.reproduce import finding_plot
    from interp.tasks import text

    n = 8 if quick else 16
    batch = text.facts(model, n, seed=0)
    prompts = batch.clean.tokens
    source = prompts.roll(1, dims=0)  # resample ablation: each prompt takes another fact's activations
    effects = selfrepair.direct_and_total(model, prompts, batch.answer, source, component="attn_out", progress=progress)
    means = effects.groupby("layer")[["direct", "total", "compensation"]].mean()
    layer = int(means["direct"].idxmin())  # the layer whose ablation lowers the answer's logit most directly
    at = effects[effects["layer"] == layer].sort_values("prompt")
    d, t = at["direct"].to_numpy(), at["total"].to_numpy()
    direct = bootstrap(d, unit="prompts")
    ours = bootstrap((d, t), lambda a, b: float(np.mean(a - b) / np.mean(a)), unit="prompts")
    changes = selfrepair.downstream_changes(model, prompts, batch.answer, source, layer, component="attn_out")
    attn_later = changes[changes["component"] == "attn_out"].groupby("prompt")["change"].sum().to_numpy()
    repair = bootstrap(attn_later, unit="prompts")
    by_comp = changes.groupby(["layer", "component"], as_index=False)["change"].mean()
    helpers = by_comp[by_comp["change"] > 0].nlargest(3, "change")
    verdict, reason = decide(
        [
            (
                f"ablating attention layer {layer} lowers the answer's centred logit directly: direct effect {direct} (< 0)",
                direct.below(0),
            ),
            (
                f"its total effect ({t.mean():+.3f}) is smaller: later layers make up {ours} of the direct effect "
                "(interval above 0)",
                ours.above(0),
            ),
            (
                f"later attention layers compensate: their direct contributions rise by {repair} logits (interval "
                "above 0); most: "
                + ", ".join(f"{r.component} L{r.layer} {r.change:+.3f}" for r in helpers.itertuples()),
                repair.above(0),
            ),
        ]
    )
    plot = means.reset_index().melt(
        id_vars="layer", value_vars=["direct", "total"], var_name="effect", value_name="logit change"
    )
    fig = finding_plot(
        plot,
        "layer",
        "logit change",
        group="effect",
        title=f"McGrath et al. 2023 on {model.cfg.name}: resample-ablating each attention layer; at layer {layer} "
        f"{ours.value:.0%} of the direct effect is compensated",
        x_title="attention layer ablated",
        y_title="change of the answer logit",
    )
    frame = pd.concat(
        [effects.assign(measure="direct_total"), changes.assign(measure=f"downstream_change_after_L{layer}")],
        ignore_index=True,
    )
    return Outcome(
        frame,
        fig,
        ours,
        verdict,
        reason,
        counts={"prompts": n, "layers": model.cfg.n_layers},
        details={
            "layer": layer,
            "direct": direct.to_dict(),
            "total": float(t.mean()),
            "later_attention_change": repair.to_dict(),
            "compensating": [f"{r.component} L{r.layer} {r.change:+.3f}" for r in helpers.itertuples()],
            "prompts": batch.texts,
        },
    )


FINDING = register(
    Finding(
        id="mcgrath2023",
        paper="McGrath et al. 2023",
        citation="T. McGrath, M. Rahtz, J. Kramar, V. Mikulik, S. Legg, The Hydra Effect: Emergent Self-repair in "
        "Language Model Computations, arXiv:2307.15771, 2023",
        claim="Ablating an attention layer changes the output less than its direct effect predicts, because later "
        "layers change what they write and compensate (self-repair).",
        published=Published(
            None,
            "Chinchilla 7B (factual recall, Counterfact prompts)",
            "direct vs total effect figures per layer",
            "unverified",
            "share of the direct effect",
            "Qualitative here: total effects fall below direct effects for the most important attention layers, "
            "downstream attention layers compensate and MLPs erase.  Figure values were not checked.",
        ),
        metric="share of the strongest attention layer's direct effect on the answer's centred logit made up by "
        "later layers: (direct - total) / direct",
        protocol="Factual prompts 'The capital of X is' (shipped country-capital pairs, single tokens, facts the "
        "model knows; 16, quick: 8), the answer's centred logit (minus the mean logit) at the last token; each attention layer resample-ablated (its "
        "output replaced at every position by another prompt's); direct effect through the unembedding with the "
        "final norm's scale frozen, total effect with everything recomputed (circuits.selfrepair); for the layer "
        "with the largest negative direct effect, the change of every later attention / MLP output's direct "
        "contribution.",
        rule="reproduced if that layer's direct effect is below 0 (interval), later layers make up part of it "
        "((direct - total)/direct interval above 0), and the later attention layers' contributions rise "
        "(summed change interval above 0).  Partial if some hold.",
        requires=("attention", "text", "residual"),
        experiment=experiment,
        text="shipped country-capital pairs (interp/tasks/data/function_tasks.json)",
        module=__name__,
    )
)
