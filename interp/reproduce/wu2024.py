"""Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality": few heads
copy a needle out of a haystack (retrieval score > 0.1), and masking them breaks retrieval while
masking as many other heads does not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.reproduce.finding import Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import bootstrap


def experiment(model, quick: bool, progress: bool) -> Outcome:
    from interp.plots.reproduce import finding_plot
    from interp.retrieval import RETRIEVAL_THRESHOLD, retrieval_experiment
    from interp.tasks import text

    n, n_random = (6, 3) if quick else (12, 5)
    context = min(400 if quick else 512, model.cfg.n_ctx)
    total = model.cfg.n_layers * model.cfg.n_heads
    k = max(1, round(0.03 * total))  # Wu et al. mask 30 of Llama-2-7B's 1024 heads
    outside = max(k, round(0.1 * total))  # their control heads come from outside the top 100 (~10%)
    task = text.needle_haystack(model, n, context_length=context, seed=0)
    exp = retrieval_experiment(
        model, task, k=k, n_random=n_random, control_outside=outside, progress=progress, batch_size=n
    )
    assert exp.per_sample is not None  # retrieval_experiment always returns the per-prompt scores
    per = exp.per_sample.reshape(n, -1).numpy()  # [prompts, heads]
    ours = bootstrap(per, lambda s: float((s.mean(0) > RETRIEVAL_THRESHOLD).mean()), unit="prompts")
    m = exp.masking
    clean = float(m.loc[m["condition"] == "clean", "value"].iloc[0])
    target = float(m.loc[m["condition"] == "target", "value"].iloc[0])
    random_acc = m.loc[m["condition"] == "random", "value"].to_numpy()
    rand = bootstrap(random_acc, unit="random head sets")
    verdict, reason = decide(
        [
            (f"the model retrieves the needle (greedy accuracy {exp.accuracy:.2f} >= 0.5)", exp.accuracy >= 0.5),
            (
                f"retrieval heads are sparse: {ours.value:.1%} of heads score > {RETRIEVAL_THRESHOLD} "
                f"(interval {ours.low:.1%}-{ours.high:.1%} reaches below 5%)",
                ours.low < 0.05 and ours.value > 0,
            ),
            (
                f"masking the top {k} drops accuracy from {clean:.2f} to {target:.2f}, below {k} random heads' "
                f"{rand} by at least 0.25",
                target < rand.low - 0.25,
            ),
        ]
    )
    scores = exp.scores.sort_values("score", ascending=False).reset_index(drop=True)
    scores["rank"] = np.arange(1, len(scores) + 1)
    frame = pd.concat(
        [
            scores.assign(measure="retrieval_score", condition="", value=scores["score"])[
                ["measure", "layer", "head", "rank", "condition", "value"]
            ],
            m.assign(measure="answer_accuracy", layer=None, head=None, rank=None)[
                ["measure", "layer", "head", "rank", "condition", "value"]
            ],
        ],
        ignore_index=True,
    )
    acc = pd.DataFrame(
        [
            {"condition": "no masking", "value": clean, "lo": clean, "hi": clean},
            {"condition": f"top {k} retrieval heads masked", "value": target, "lo": target, "hi": target},
            {"condition": f"{k} random heads masked", "value": rand.value, "lo": rand.low, "hi": rand.high},
        ]
    )
    fig = finding_plot(
        acc,
        "condition",
        "value",
        low="lo",
        high="hi",
        kind="bar",
        title=f"Wu et al. 2024 on {model.cfg.name}: {ours.value:.1%} of heads are retrieval heads "
        f"(published {FINDING.published.value:.1%}); needle accuracy under masking",
        x_title="",
        y_title="needle accuracy",
    )
    return Outcome(
        frame,
        fig,
        ours,
        verdict,
        reason,
        counts={"prompts": n, "context_tokens": context, "masked_heads": k, "random_sets": n_random, "heads": total},
        details={
            "top_heads": [f"L{r.layer}H{r.head} {r.score:.2f}" for r in scores.head(k).itertuples()],
            "accuracy": exp.accuracy,
            "masked_accuracy": target,
            "random_masked_accuracy": rand.to_dict(),
            "control_outside_top": outside,
        },
    )


FINDING = register(
    Finding(
        id="wu2024",
        paper="Wu et al. 2024",
        citation="W. Wu, Y. Wang, G. Xiao, H. Peng, Y. Fu, Retrieval Head Mechanistically Explains Long-Context "
        "Factuality, arXiv:2404.15574, 2024",
        claim="A small minority of attention heads (retrieval score above 0.1, under 5%) copy facts out of long "
        "context; masking them breaks needle-in-a-haystack retrieval while masking as many other heads does not.",
        published=Published(
            33 / 1024,
            "Llama-2-7B-80K",
            "official code: head_score/llama-2-7b-80k.json (33 of 1024 heads have mean retrieval score > 0.1)",
            "official code",
            "share of heads",
            "Computed from the authors' released scores: Llama-2-7B-80K 33/1024 (3.2%), Llama-2-13B-64K 33/1600 "
            "(2.1%), Mistral-7B-v0.2 43/1024 (4.2%), Mixtral-8x7B 63/1024 (6.2%), Qwen1.5-14B 61/1600 (3.8%), "
            "Yi-6B-200K 53/1024 (5.2%).  The masking effect (top 30 vs 30 random heads) is shown in their "
            "README's needle heat maps (viz/top30.png, viz/random.png), not as a number.",
        ),
        metric="share of heads with retrieval score > 0.1 (mean over prompts)",
        protocol="Needle-in-a-haystack prompts from the shipped filler sentences (12 prompts of <= 512 tokens; "
        "quick: 6 of <= 400), the needle at random depths; retrieval score as in Wu et al.'s code (at each greedy "
        "decoding step, +1/len(needle) when a head's most-attended position is in the needle and holds the token "
        "just generated); query masking (decoding only) of the top 3% of heads against as many random heads drawn "
        "outside the top 10% (5 draws; quick: 3).",
        rule="reproduced if: the model retrieves the needle (accuracy >= 0.5); the sparsity interval reaches below "
        "5% (and some head scores > 0.1); and masking the top heads leaves accuracy at least 0.25 below the lower "
        "end of the random sets' interval.  Partial if some hold.",
        requires=("attention", "text"),
        experiment=experiment,
        text="shipped filler sentences and needles (interp/tasks/data/retrieval.json)",
        module=__name__,
    )
)
