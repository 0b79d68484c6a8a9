"""Sun et al. 2024, "Massive Activations in Large Language Models": a few residual-stream
entries about a thousand times the median, in fixed dimensions at a few tokens; setting them
to zero destroys the model, setting them to their mean leaves it unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.reproduce.finding import Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import bootstrap

SEGMENT = 256


def experiment(model, quick: bool, progress: bool) -> Outcome:
    from interp import massive
    from interp.errors import Unsupported
    from interp.plots.reproduce import finding_plot
    from interp.reproduce.text import own_text
    from interp.tasks import loss_by_position

    rows = 4 if quick else 8
    if model.cfg.n_ctx < 2 * SEGMENT:
        raise Unsupported(f"it needs {2 * SEGMENT} tokens of text, beyond the model's context of {model.cfg.n_ctx}")
    text = own_text(model, rows, 2 * SEGMENT, progress=progress)
    evaluate = text[:, :SEGMENT]
    # a disjoint calibration segment (the second half of each generation, behind the BOS) finds the
    # dimensions and their means, as the paper's means come from other sequences
    calibrate = torch.cat([text[:, :1], text[:, SEGMENT + 1 :]], dim=1)
    found = massive.massive_activations(model, calibrate)
    mags = massive.layer_magnitudes(model, calibrate)
    top = mags[mags["rank"] == 1].reset_index(drop=True)
    if found.empty:
        verdict, reason = decide(
            [
                (
                    f"massive activations exist (an entry >= {massive.RATIO:g} x its layer's median and >= "
                    f"{massive.FLOOR:g}); the largest ratio is {top['ratio'].max():.0f}",
                    False,
                )
            ]
        )
        fig = finding_plot(top, "layer", "ratio", title=f"Sun et al. 2024 on {model.cfg.name}: none found", log_y=True)
        # nothing to intervene on: no headline number (the reason gives the largest ratio found)
        return Outcome(top, fig, None, verdict, reason, counts={"text_rows": rows})
    first = int(found["layer"].min())
    at_first = found[found["layer"] == first]
    dims = sorted(set(at_first["dim"]))
    means = {
        (bool(first_tok), int(d)): float(g["value"].mean())
        for (first_tok, d), g in at_first.assign(first_tok=at_first["pos"] == 0).groupby(["first_tok", "dim"])
    }
    with torch.no_grad():
        base = loss_by_position(model(evaluate), evaluate).mean(1).float().cpu().numpy()
        with massive.reset_massive(model, first, dims, "zero"):
            zero = loss_by_position(model(evaluate), evaluate).mean(1).float().cpu().numpy()
        with massive.reset_massive(model, first, dims, "mean", means=means):
            mean = loss_by_position(model(evaluate), evaluate).mean(1).float().cpu().numpy()
    ours = bootstrap((zero, base), lambda z, b: float(np.exp(z.mean() - b.mean())), unit="text rows")
    kept = bootstrap((mean, base), lambda m, b: float(np.exp(m.mean() - b.mean())), unit="text rows")
    share = len(at_first[["row", "pos"]].drop_duplicates()) / float(calibrate.numel())
    ratio_max = float(found["ratio"].max())
    verdict, reason = decide(
        [
            (
                f"massive activations exist from layer {first} on: {len(dims)} dimension(s) {dims}, at "
                f"{share:.2%} of the tokens, up to {ratio_max:.0f} x the median (>= {massive.RATIO:g}; few dims "
                "(<= 4) at under 1% of tokens)",
                len(dims) <= 4 and share < 0.01,
            ),
            (f"setting them to zero multiplies perplexity by {ours} (interval above 2)", ours.above(2.0)),
            (
                f"setting them to their mean leaves it unchanged: x {kept} (interval within 0.95-1.05)",
                kept.low > 0.95 and kept.high < 1.05,
            ),
        ]
    )
    frame = pd.concat(
        [
            top.assign(measure="top_magnitude")[["measure", "layer", "magnitude", "median", "ratio", "pos", "dim"]],
            pd.DataFrame(
                {
                    "measure": "row_loss",
                    "condition": np.repeat(["original", "set to zero", "set to mean"], rows),
                    "row": np.tile(np.arange(rows), 3),
                    "loss": np.concatenate([base, zero, mean]),
                }
            ),
        ],
        ignore_index=True,
    )
    fig = finding_plot(
        top[["layer", "magnitude"]].assign(kind="largest magnitude"),
        "layer",
        "magnitude",
        group="kind",
        title=f"Sun et al. 2024 on {model.cfg.name}: largest |activation| per layer (median "
        f"{top['median'].median():.2f}); perplexity x{ours.value:.3g} zeroed, x{kept.value:.3g} at the mean",
        x_title="layer (block output)",
        y_title="magnitude",
        log_y=True,
    )
    fig.add_scatter(x=top["layer"], y=top["median"], mode="lines", name="median magnitude")
    return Outcome(
        frame,
        fig,
        ours,
        verdict,
        reason,
        counts={"text_rows": rows, "tokens_per_row": SEGMENT, "calibration_tokens": int(calibrate.numel())},
        details={
            "first_layer": first,
            "dims": dims,
            "means": {f"{'first' if k[0] else 'other'}:{k[1]}": v for k, v in means.items()},
            "max_ratio": ratio_max,
            "token_share": share,
            "mean_over_original": kept.to_dict(),
            "perplexity": {
                "original": float(np.exp(base.mean())),
                "zero": float(np.exp(zero.mean())),
                "mean": float(np.exp(mean.mean())),
            },
        },
    )


FINDING = register(
    Finding(
        id="sun2024",
        paper="Sun et al. 2024",
        citation="M. Sun, X. Chen, J. Z. Kolter, Z. Liu, Massive Activations in Large Language Models, COLM 2024 "
        "(arXiv:2402.17762)",
        claim="A few residual-stream activations, in fixed dimensions at the first token and a few delimiters, "
        "are about a thousand times the median; zeroing them destroys the model while setting them to their "
        "mean leaves it unchanged: they act as biases.",
        published=Published(
            None,
            "LLaMA2-7B",
            "Section 3 (intervention analysis); perplexities not checked",
            "unverified",
            "perplexity ratio",
            "Qualitative here: zeroing the massive activations makes perplexity explode, setting them to their "
            "mean keeps it; the paper's perplexity table was not at hand, so no number is given.",
        ),
        also=(
            Published(
                2546.8,
                "LLaMA2-7B",
                "official code: lib/hook.py (the means the intervention writes)",
                "official code",
                "activation value",
                "dims 2533 and 1415 at the layer-2 output: 2546.8 / -1502.0 at the non-first token carrying them, "
                "767.6 / -458.55 at the first token; LLaMA2-13B dims 4743 / 2100: -1223.5 / -717.95 at the first token.",
            ),
        ),
        metric="perplexity ratio: massive activations set to zero / original",
        protocol="The model's own text (8 rows; quick: 4): a calibration segment (tokens 257-511 behind the BOS) "
        "finds every residual entry >= 1000 x its layer's median magnitude (and >= 100), the first layer where "
        "they appear, their dimensions and mean values (first token / others); on the evaluation segment (tokens "
        "0-255) they are set to zero, or to their means, at that layer's output wherever they are massive "
        "(the paper's intervention), and perplexity is compared with the original.",
        rule="reproduced if: massive activations exist in few dimensions (<= 4) at under 1% of tokens; zeroing "
        "them multiplies perplexity by more than 2 (interval); setting them to their mean keeps it within 5% "
        "(interval within 0.95-1.05).  Partial if some hold; not reproduced if none (or none are found).",
        requires=("residual", "causal"),
        experiment=experiment,
        text="the model's own generations (interp.tasks.text.generated_text, cached)",
        module=__name__,
    )
)
