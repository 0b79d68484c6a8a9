"""How far to trust the gradient estimates: attribution patching and EAP-IG against exact
patching, per attention head, on one prompt set.

All three measure the same quantity, the change of the metric when a head's output (at
every position) is replaced by its corrupt value in the clean run (noising):

- ``exact``: :func:`circuits.patching.patch` (``site="z"``, ``by="layer,head"``, noising);
- ``attribution``: :func:`circuits.attribution.attribute`, the first-order estimate at the
  clean run;
- ``eap_ig``: the head's node score, the sum of the EAP-IG scores of every edge out of it
  (:func:`circuits.attribution.edge_attribution`), which integrates the gradient from the
  corrupt to the clean input.

:func:`calibration` returns them in one frame with their rank correlations and costs, and
flags the heads where an estimate misses most (large exact effect, small estimate: the
likely false negatives of the linear estimate, where saturation or cancellation hides an
effect).
"""

from __future__ import annotations

import time

import pandas as pd
from scipy.stats import spearmanr

from circuits.attribution import attribute, edge_attribution
from circuits.patching import patch
from interp.errors import InputError
from interp.runs import analysis, record, run

ESTIMATES = ("attribution", "eap_ig")


@analysis("calibration", figure="circuits.plots.calibration_plot")
def calibration(model, clean, corrupt, metric="logit_diff", *, steps: int = 5, progress: bool = False) -> pd.DataFrame:
    """One row per head: ``layer, head, exact, attribution, eap_ig`` (metric change when the
    head is noised, in the metric's units) and ``miss_attribution`` / ``miss_eap_ig`` (how many
    places the head falls in the |estimate| ranking below its |exact| rank; large = a likely
    false negative).  Meta: ``spearman`` and ``spearman_abs`` per estimate, ``seconds``
    per method, ``metric``."""
    seconds = {}
    t = time.perf_counter()
    exact_run = run(
        patch, model, clean, corrupt, site="z", by="layer,head", metric=metric, direction="noise", progress=progress
    )
    exact, exact_meta = exact_run.frame, exact_run.meta
    seconds["exact"] = time.perf_counter() - t
    t = time.perf_counter()
    approx = attribute(model, clean, corrupt, site="z", by="layer,head", metric=metric, direction="noise")
    seconds["attribution"] = time.perf_counter() - t
    t = time.perf_counter()
    circuit = edge_attribution(model, clean, corrupt, metric=metric, method="eap-ig", steps=steps, progress=progress)
    seconds["eap_ig"] = time.perf_counter() - t
    edges = circuit.edges_frame()
    node = edges[edges["src"].str.startswith("a")].groupby("src")["score"].sum()
    df = exact[["layer", "head"]].copy()
    df["exact"] = exact["effect"].to_numpy()
    df["attribution"] = approx["effect"].to_numpy()
    df["eap_ig"] = [float(node.get(f"a{l}.h{h}", 0.0)) for l, h in zip(df["layer"], df["head"])]
    exact_rank = df["exact"].abs().rank(ascending=False)
    attrs = {
        "spearman": {},
        "spearman_abs": {},
        "seconds": seconds,
        "metric": exact_meta["metric"],
        "clean_value": exact_meta["clean_value"],
        "corrupt_value": exact_meta["corrupt_value"],
    }
    for name in ESTIMATES:
        df[f"miss_{name}"] = (df[name].abs().rank(ascending=False) - exact_rank).astype(int)
        attrs["spearman"][name] = float(spearmanr(df["exact"], df[name]).statistic)
        attrs["spearman_abs"][name] = float(spearmanr(df["exact"].abs(), df[name].abs()).statistic)
    record(**attrs)
    return df


def worst(df: pd.DataFrame, estimate: str = "attribution", k: int = 5) -> pd.DataFrame:
    """The ``k`` heads an estimate misses most (among those with a large exact effect)."""
    if estimate not in ESTIMATES:
        raise InputError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
    strong = df[df["exact"].abs() >= df["exact"].abs().quantile(0.9)]
    return strong.sort_values(f"miss_{estimate}", ascending=False).head(k)
