"""Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding Recurrent Networks": in a
character-level LSTM trained on real text with long-range structure, some single cells track
interpretable features (inside quotes, line length, indentation / nesting), and the gates show a
characteristic saturation pattern (some forget gates right-saturated most of the time: cells that
integrate over long spans; no forget gate consistently left-saturated: no cell works in a purely
feed-forward way).  Measured on the zoo's ``code-lstm`` (2 layers of 96
cells, trained on CPython's standard-library sources; held-out text textwrap.py and shlex.py).

Verdict rule (numbers in :data:`RULE`):
- interpretable cells: for each of the quote feature (``in_string``) and the position in the line
  (``line_position``), the cell with the largest |correlation| on windows of three training files
  (csv.py, pprint.py, string.py: selected there, so the held-out number is not inflated by the
  selection) has a held-out correlation whose
  95% bootstrap interval over text windows lies beyond 0.5 in absolute value; and at least one of
  ``indent`` and ``bracket_depth`` has such a cell too;
- gates (their Figure 3 as the brief states it): at least one forget-gate unit is right-saturated
  (> 0.9) more than half the time (an integrator), and no forget-gate unit is left-saturated
  (< 0.1) more than half the time (none purely feed-forward).  The mean right- minus
  left-saturated fraction of each layer's forget gates is reported with its interval.
Reproduced if all hold, partial if some do.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from interp.reproduce.finding import Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import Estimate, bootstrap

MODEL = "code-lstm"
LENGTH = 384  # characters a window (BOS first)
SKIP = 64  # leading positions left out: the state warming up (a string or bracket may open before)
THRESHOLD = 0.5  # |correlation| a cell must exceed (interval) to count as tracking a feature
MUST = ("in_string", "line_position")
ONE_OF = ("indent", "bracket_depth")
RULE = (
    f"reproduced if: the best cells (chosen on training text) for in_string and line_position have held-out "
    f"correlations whose 95% interval over text windows lies beyond {THRESHOLD} in absolute value, at least one "
    f"of indent / bracket_depth has such a cell too, and in every layer the forget gates are right-saturated "
    "(> 0.9) more often than left-saturated (< 0.1) (interval of the mean difference above 0) with at least one "
    "forget-gate unit right-saturated more than half the time. Partial if some of these hold."
)


def _windows(files: tuple[str, ...], n: int, seed: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    from interp.tasks.text import code

    corpus = code.corpus(files)
    tokens, starts = corpus.windows(n, LENGTH, seed=seed)
    return tokens, corpus.window_features(starts, LENGTH)


def _corr_estimate(act: np.ndarray, feat: np.ndarray) -> Estimate:
    """Pearson correlation pooled over windows ``[n, pos]``, with its interval resampling windows."""

    def r(a: np.ndarray, f: np.ndarray) -> float:
        a, f = a.reshape(-1), f.reshape(-1)
        keep = np.isfinite(f)
        a, f = a[keep], f[keep]
        if a.std() == 0 or f.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, f)[0, 1])

    return bootstrap((act, feat), r, unit="text windows")


def experiment(model, quick: bool, progress: bool, *, retrain: bool = False) -> Outcome:
    from interp.plots.cells import cells_figure
    from interp.recurrent import cells
    from interp.reproduce.trained import models
    from interp.tasks import loss_by_position
    from interp.tasks.text import code

    lstm = models([MODEL], retrain=retrain, progress=progress)[MODEL]
    n = 8 if quick else 24
    held, held_feats = _windows(code.HELDOUT_FILES, n, seed=10_000_019)
    train, train_feats = _windows(code.SELECT_FILES, n, seed=1)

    # cells chosen on training text, measured on held-out text
    chosen = cells.best_cells(cells.feature_cells(lstm, train, train_feats, skip=SKIP))
    held_frame = cells.feature_cells(lstm, held, held_feats, skip=SKIP)
    acts = cells.activations(lstm, held, ("cell", *cells.GATES))
    best_rows, estimates = [], {}
    for _, row in chosen.iterrows():
        f, layer, cell = row["feature"], int(row["layer"]), int(row["cell"])
        est = _corr_estimate(acts[("cell", layer)][:, SKIP:, cell], held_feats[f][:, SKIP:])
        estimates[f] = est
        best_rows.append(
            {
                "feature": f,
                "layer": layer,
                "cell": cell,
                "correlation": est.value,
                "low": est.low,
                "high": est.high,
                "train_correlation": float(row["correlation"]),
            }
        )
    best = pd.DataFrame(best_rows)

    def tracks(f: str) -> bool:
        e = estimates[f]
        return bool(e.low > THRESHOLD or e.high < -THRESHOLD)

    # gate saturation, per window so layers' means get intervals
    saturation = cells.gate_saturation(lstm, held, skip=SKIP)
    summary = cells.saturation_summary(saturation)
    gate_checks, sat_details = [], {}
    for layer in range(lstm.cfg.n_layers):
        fg = acts[("forget_gate", layer)][:, SKIP:]  # [n, pos, units]
        left = (fg < cells.LEFT).mean(1)  # [n, units]: per window and unit
        right = (fg > cells.RIGHT).mean(1)
        diff = bootstrap((right, left), lambda r, l: float(np.mean(r) - np.mean(l)), unit="text windows")
        mostly = float((right.mean(0) > 0.5).sum())
        feed_forward = float((left.mean(0) > 0.5).sum())
        gate_checks.append((layer, diff, mostly, feed_forward))
        for gate in cells.GATES:
            g = acts[(gate, layer)][:, SKIP:]
            sat_details[f"L{layer} {gate}"] = {
                "left": bootstrap((g < cells.LEFT).mean((1, 2)), unit="text windows").to_dict(),
                "right": bootstrap((g > cells.RIGHT).mean((1, 2)), unit="text windows").to_dict(),
            }

    # bits per character on the held-out windows
    with torch.no_grad():
        per = loss_by_position(lstm(held), held).float().numpy() / math.log(2)  # [n, pos - 1]
    bpc = bootstrap(per.mean(1), unit="text windows")

    checks = [
        (
            f"a cell tracks {f}: L{int(best.set_index('feature').loc[f, 'layer'])} cell "
            f"{int(best.set_index('feature').loc[f, 'cell'])}, held-out correlation {estimates[f]} beyond +-{THRESHOLD}",
            tracks(f),
        )
        for f in MUST
    ]
    extra = ", ".join(f"{f} {estimates[f]}" for f in ONE_OF)
    checks.append(
        (f"a cell tracks indentation or bracket depth ({extra}; beyond +-{THRESHOLD})", any(map(tracks, ONE_OF)))
    )
    checks.append(
        (
            "forget-gate units right-saturated more than half the time (integrators): "
            + ", ".join(f"layer {l}: {int(m)}" for l, _, m, _ in gate_checks)
            + " (at least one)",
            sum(m for _, _, m, _ in gate_checks) >= 1,
        )
    )
    checks.append(
        (
            "forget-gate units left-saturated more than half the time (purely feed-forward): "
            + ", ".join(f"layer {l}: {int(f)}" for l, _, _, f in gate_checks)
            + " (none); mean right - left fraction "
            + "; ".join(f"layer {l}: {d}" for l, d, _, _ in gate_checks),
            sum(f for _, _, _, f in gate_checks) == 0,
        )
    )
    verdict, reason = decide(checks)
    frame = pd.concat(
        [
            held_frame.assign(part="correlation").rename(columns={"correlation": "value"}),
            saturation.melt(["layer", "gate", "unit"], ["left", "right"], var_name="side").assign(part="saturation"),
        ],
        ignore_index=True,
    )
    fig = cells_figure(
        saturation,
        best,
        title=f"Karpathy et al. 2015 on {MODEL}: gate saturation and the best cell per feature "
        f"(held-out {bpc.value:.2f} bits/char)",
    )
    interpretable = held_frame.groupby("feature")["correlation"].apply(lambda r: int((r.abs() > THRESHOLD).sum()))
    return Outcome(
        frame,
        fig,
        estimates["in_string"],
        verdict,
        reason,
        counts={
            "windows": n,
            "characters_per_window": LENGTH - 1,
            "positions_scored": int(n * (LENGTH - SKIP)),
            "cells": int(lstm.cfg.d_model * lstm.cfg.n_layers),
        },
        details={
            "best_cells": best.round(4).to_dict("records"),
            "cells_beyond_threshold": {k: int(v) for k, v in interpretable.items()},
            "saturation_by_layer": summary.round(4).to_dict("records"),
            "saturation_intervals": sat_details,
            "heldout_bits_per_char": bpc.to_dict(),
            "corpus": f"{', '.join(code.HELDOUT_FILES)} (held out) of {code.LICENCE}",
            "retrained": bool(retrain),
        },
        models=(MODEL,),
    )


FINDING = register(
    Finding(
        id="karpathy2015",
        paper="Karpathy et al. 2015",
        citation="A. Karpathy, J. Johnson, L. Fei-Fei, Visualizing and Understanding Recurrent Networks, "
        "arXiv:1506.02078 (ICLR 2016 workshop)",
        claim="A character-level LSTM trained on real text has interpretable cells (a quote cell, a line-length "
        "cell, cells tracking indentation or nesting) and saturated gates: some forget gates right-saturated most "
        "of the time (integrators) and none consistently left-saturated (no purely feed-forward cell).",
        published=Published(
            None,
            "character LSTMs (1-3 layers, 64-512 cells) on Leo Tolstoy's War and Peace and the Linux kernel source",
            "Section 4.2 (gate saturation, Figure 3) and Section 4.3 (interpretable cells, Figure 2)",
            "unverified",
            "correlation",
            "Qualitative: the paper shows cells that turn on inside quotes, count position in the line, and track "
            "indentation / nesting depth in code, found by inspection; and saturation scatter plots of the gates. "
            "It reports no correlation numbers; the paper was not at hand here, so the claim is stated from the "
            "project's brief, not quoted.",
        ),
        metric="held-out correlation of the quote cell's tanh(c) with being inside a string (the best in_string "
        "cell, chosen on training text)",
        protocol=f"The shipped code-lstm (2-layer LSTM, 96 cells, trained on 49 CPython 3.11.7 standard-library "
        f"modules, 3 MB; --retrain trains it again). Text: 24 windows of {LENGTH - 1} characters (quick: 8) of the "
        f"held-out textwrap.py and shlex.py, the first {SKIP} positions of each left out; features from Python's "
        "tokenize: in_string, bracket_depth, indent, line_position. Each feature's best cell is chosen by "
        "|correlation| on as many windows of three training files (csv.py, pprint.py, string.py), then its correlation measured on the held-out windows "
        "(95% bootstrap over windows, 2000 draws). Gate saturation: the fraction of time steps each unit of the "
        "input, forget and output gates is < 0.1 / > 0.9 on the held-out windows.",
        rule=RULE,
        requires=(),
        experiment=experiment,
        text="CPython 3.11.7's textwrap.py and shlex.py (Python Software Foundation License), shipped with interp",
        module=__name__,
        retrainable=True,
    )
)
