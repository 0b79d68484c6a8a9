"""Meng et al. 2022, "Locating and Editing Factual Associations in GPT" (ROME): causal tracing of
factual recall finds two sites, mid-layer MLPs at the last subject token (the early site) and
attention at the last token in later layers (the late site).

Protocol: the shipped subject / relation / object facts (``interp/tasks/data/facts_sro.json``)
kept where the object is one token and the model's arg-max at the last position is the object
(how many of how many: ``counts``); ``n`` of them drawn with a fixed seed.  Gaussian noise of 3 x
the embedding std on the subject tokens, ``samples`` draws per fact; every window of 10 MLP
outputs and of 10 attention outputs restored, one per (window, position), at the two positions
the claim is about, the last subject token and the last token (:func:`circuits.causal_tracing`
with ``only=``; the library's default traces every position, the residual stream and single
layers too, and the app shows it).  A window is named by its first layer (layers l .. l + 9);
Meng et al. centre theirs on l and clip them at the model's edges.  Per fact, each site's peak
indirect effect (restored minus corrupted probability of the object) over the windows, and the
window where it peaks.

Verdict rule (95% bootstrap intervals over facts, :func:`interp.reproduce.stats.bootstrap`):

1. *early site*: at the last subject token the MLP windows restore more than the attention windows
   (per fact, peak MLP minus peak attention effect, windows from layer 1 on: the first MLP reads
   the noised token itself, an extended embedding that restores the token under any corruption;
   interval above 0);
2. *late site*: the attention windows restore more at the last token than at the last subject
   token (per fact, the difference of the peaks, interval above 0);
3. *early before late*: the attention peak at the last token lies in later layers than the MLP
   peak at the last subject token (per fact, the difference of the peak windows' first layers,
   interval above 0).

Reproduced if all three hold, partial if some do, not reproduced if none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.reproduce.finding import Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import bootstrap

WINDOW, NOISE = 10, 3.0
#: the positions traced: the two sites (a fraction of the full grid's work; circuits.causal_tracing
#: traces every position, the app shows it)
SITES = ("last subject token", "last token")
#: facts and noise draws (full, quick): the full run stays near 90 s on 2 shared CPU cores
FULL, QUICK = (6, 5), (2, 3)


def peaks(trace: pd.DataFrame, component: str, role: str, *, first: int = 0) -> pd.DataFrame:
    """Per fact, the largest indirect effect of ``component`` at positions of ``role`` over the
    windows (the trace's largest) that start at layer ``first`` or later: ``[fact, effect, layer]``."""
    w = int(trace.loc[trace["component"] == component, "window"].max())
    d = trace[
        (trace["component"] == component) & (trace["window"] == w) & (trace["role"] == role) & (trace["layer"] >= first)
    ]
    idx = d.groupby("fact")["effect"].idxmax()
    return d.loc[idx, ["fact", "effect", "layer"]].set_index("fact")


def experiment(model, quick: bool, progress: bool) -> Outcome:
    from circuits.plots_tracing import tracing_heatmap
    from circuits.tracing import causal_tracing
    from interp.tasks.text import fact_set

    n, samples = QUICK if quick else FULL
    known = fact_set(model)
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(known), size=min(n, len(known)), replace=False).tolist())
    facts = known.take(chosen)
    trace = causal_tracing(
        model,
        facts,
        components=("mlp", "attn"),
        window=WINDOW,
        noise=NOISE,
        samples=samples,
        singles=False,
        only=SITES,
        progress=progress,
    )
    w = int(trace["window"].max())
    # windows holding the first layer are left out of the MLP site: the first MLP re-reads the subject token
    # itself (an extended embedding), so restoring it restores the token under any corruption
    mlp_subject = peaks(trace, "mlp", "last subject token", first=1)
    attn_subject_mid = peaks(trace, "attn", "last subject token", first=1)
    attn_last = peaks(trace, "attn", "last token")
    attn_subject = peaks(trace, "attn", "last subject token")
    total = trace.groupby("fact")[["clean", "corrupted"]].first()

    def diff(a, b):
        return float(np.mean(a - b))

    early = bootstrap((mlp_subject["effect"].to_numpy(), attn_subject_mid["effect"].to_numpy()), diff, unit="facts")
    late = bootstrap((attn_last["effect"].to_numpy(), attn_subject["effect"].to_numpy()), diff, unit="facts")
    order = bootstrap((attn_last["layer"].to_numpy(), mlp_subject["layer"].to_numpy()), diff, unit="facts")
    ours = bootstrap(mlp_subject["effect"].to_numpy(), unit="facts")
    te = bootstrap((total["clean"] - total["corrupted"]).to_numpy(), unit="facts")
    # the mean curves over facts: where each site peaks on average
    curves = {}
    for comp, role in (("mlp", "last subject token"), ("attn", "last token"), ("attn", "last subject token")):
        d = trace[(trace["component"] == comp) & (trace["role"] == role)]
        curve = d.groupby("layer")["effect"].mean()
        curves[f"{comp} at the {role}"] = {
            "peak_window_first_layer": int(curve.idxmax()),
            "peak_mean_effect": float(curve.max()),
            "by_window_first_layer": {int(k): round(float(v), 4) for k, v in curve.items()},
        }
    verdict, reason = decide(
        [
            (
                f"early site: at the last subject token the MLP windows (of {w}, after the first layer) restore more "
                f"than the attention windows, by {early} probability (interval above 0)",
                early.above(0),
            ),
            (
                f"late site: the attention windows restore more at the last token than at the last subject token, by "
                f"{late} probability (interval above 0)",
                late.above(0),
            ),
            (
                f"the attention peak (last token) starts {order} layers after the MLP peak (last subject token) "
                "(interval above 0)",
                order.above(0),
            ),
        ]
    )
    fig = tracing_heatmap(
        trace,
        title=f"Meng et al. 2022 on {model.cfg.name}: causal tracing of {len(facts)} known facts (indirect effect on "
        f"the object's probability, {samples} noise draws)",
    )
    return Outcome(
        trace.assign(measure="indirect_effect"),
        fig,
        ours,
        verdict,
        reason,
        counts={
            "facts": len(facts),
            "facts_offered": known.counts["offered"],
            "single_token_object": known.counts["single_token_object"],
            "known_to_the_model": known.counts["known"],
            "noise_samples": samples,
            "window": w,
        },
        details={
            "known_facts": f"{known.counts['known']} of the {known.counts['single_token_object']} shipped facts with a "
            f"single-token object ({known.counts['offered']} shipped) are answered correctly; {len(facts)} traced",
            "facts": list(facts.prompts),
            "total_effect": te.to_dict(),
            "mlp_last_subject_peak": ours.to_dict(),
            "mlp_last_subject_peak_layer": bootstrap(mlp_subject["layer"].to_numpy(), unit="facts").to_dict(),
            "attn_last_token_peak": bootstrap(attn_last["effect"].to_numpy(), unit="facts").to_dict(),
            "attn_last_token_peak_layer": bootstrap(attn_last["layer"].to_numpy(), unit="facts").to_dict(),
            "mean_curves": curves,
            "layer_order": order.to_dict(),
            "mlp_last_subject_peak_layers": mlp_subject["layer"].tolist(),
            "attn_last_token_peak_layers": attn_last["layer"].tolist(),
            "early_mlp_minus_attention": early.to_dict(),
            "late_minus_subject": late.to_dict(),
            "noise": f"{NOISE:g} x the embedding std on the subject tokens",
        },
    )


FINDING = register(
    Finding(
        id="meng2022",
        paper="Meng et al. 2022",
        citation="K. Meng, D. Bau, A. Andonian, Y. Belinkov, Locating and Editing Factual Associations in GPT, "
        "NeurIPS 2022 (arXiv:2202.05262)",
        claim="Causal tracing localizes factual recall: restoring mid-layer MLP outputs at the last subject token "
        "(the early site) and attention outputs at the last token in later layers (the late site) recovers the "
        "object's probability after the subject is noised.",
        published=Published(
            None,
            "GPT-2 XL (1,000 known facts)",
            "Abstract; Section 2 and Figure 2 (qualitative)",
            "quoted",
            "probability",
            "'This reveals a distinct set of steps in middle-layer feed-forward modules that mediate factual "
            "predictions while processing subject tokens' (abstract, read in a copy of arXiv v3).  The average "
            "indirect effects of Figure 2 were not at hand, so no number is compared.",
        ),
        metric="peak indirect effect (restored minus corrupted probability of the object) of the MLP windows at the "
        "last subject token",
        protocol="Shipped subject / relation / object facts (interp/tasks/data/facts_sro.json, 212 written for this "
        "project), kept where the object is one token and the model's arg-max is the object; 6 of them (quick: 2) "
        "drawn with a fixed seed; Gaussian noise of 3 x the embedding std on the subject tokens, 5 draws (quick: 3); "
        "every window of 10 MLP / attention outputs restored, one per (window, position) at the last subject token "
        "and the last token (circuits.causal_tracing, only=...; the full grid with residual "
        "states and single layers is the library's default and the app's); per fact the peak effect of each site.",
        rule="reproduced if: at the last subject token the MLP windows after the first layer restore more than the "
        "attention windows (paired interval above 0); the attention windows restore more at the last token than at "
        "the last subject token (interval above 0); and the attention peak lies in later layers than the MLP peak "
        "(interval above 0).  Partial if some hold.",
        requires=("attention", "text", "mlp"),
        experiment=experiment,
        text="shipped facts (interp/tasks/data/facts_sro.json)",
        module=__name__,
    )
)
