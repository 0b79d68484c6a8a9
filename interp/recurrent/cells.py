"""Interpretable cells of an LSTM (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and
Understanding Recurrent Networks"): how often each gate is saturated, and which cells track a
feature of the text (inside a string, bracket depth, indentation, position in the line).

Analyses over (model, tokens) that read the recurrent model's own sites
(``model.site("forget_gate", layer)``, ``model.site("cell", layer)``, ...), so any model with
LSTM gates works: the zoo's ``code-lstm`` or a user's :class:`interp.recurrent.HookedRecurrent`.
A cell's activation is ``tanh(c_t)`` of its cell state, the quantity Karpathy et al. colour
their text by (range -1..1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from interp.errors import InputError, Unsupported

if TYPE_CHECKING:
    from interp.model import Model

GATES = ("input_gate", "forget_gate", "output_gate")
LEFT, RIGHT = 0.1, 0.9  # Karpathy et al.'s saturation thresholds


def _require_lstm(model: Model, what: str) -> None:
    missing = [k for k in (*GATES, "cell") if k not in model.site_kinds()]
    if missing:
        raise Unsupported(
            f"{what} reads LSTM gates and cell states; {model.cfg.name or 'this model'} has no {', '.join(missing)} "
            f"sites (its kinds: {model.site_kinds()})"
        )


def _check(tokens: torch.Tensor, skip: int) -> None:
    if not isinstance(skip, int) or skip < 0 or skip >= tokens.shape[-1]:
        raise InputError(f"skip must be an int in [0, {tokens.shape[-1] - 1}] (positions left out), got {skip!r}")


def activations(
    model: Model, tokens: torch.Tensor, kinds: Sequence[str] = ("cell",)
) -> dict[tuple[str, int], np.ndarray]:
    """``{(kind, layer): [batch, pos, d_model]}`` of the LSTM's per-step sites (``cell`` is
    returned as ``tanh(c_t)``, the cell's activation; gates as they are, in (0, 1))."""
    _require_lstm(model, "LSTM cell analysis")
    tokens = model.validate_tokens(tokens)
    names = {model.site(k, l): (k, l) for k in kinds for l in range(model.cfg.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, list(names), logits=False)
    out = {}
    for name, (k, l) in names.items():
        x = cache[name].float()
        out[(k, l)] = (torch.tanh(x) if k == "cell" else x).cpu().numpy()
    return out


def gate_saturation(
    model: Model, tokens: torch.Tensor, *, skip: int = 0, left: float = LEFT, right: float = RIGHT
) -> pd.DataFrame:
    """Per gate unit, the fraction of time steps it is left-saturated (< ``left``) and
    right-saturated (> ``right``) (Karpathy et al. 2015, Figure 3).

    tokens ``[batch, pos]``; ``skip``: leading positions left out (the state warming up).
    Returns ``DataFrame[layer, gate, unit, left, right]`` (fractions in [0, 1]); a layer's
    summary is its mean over units (:func:`saturation_summary`)."""
    _require_lstm(model, "gate saturation")
    if not 0 <= left < right <= 1:
        raise InputError(f"need 0 <= left < right <= 1, got left={left}, right={right}")
    tokens = model.validate_tokens(tokens)
    _check(tokens, skip)
    acts = activations(model, tokens, GATES)
    rows = []
    for (gate, layer), a in acts.items():
        a = a[:, skip:].reshape(-1, a.shape[-1])  # [steps, units]
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "gate": gate,
                    "unit": np.arange(a.shape[1]),
                    "left": (a < left).mean(0),
                    "right": (a > right).mean(0),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def saturation_summary(saturation: pd.DataFrame) -> pd.DataFrame:
    """Per layer and gate, the mean over units of the left- and right-saturated fractions and the
    share of units saturated more than half the time: ``DataFrame[layer, gate, left, right,
    mostly_left, mostly_right]``."""
    from interp.plots import require

    require(saturation, ["layer", "gate", "unit", "left", "right"], "saturation_summary")
    g = saturation.groupby(["layer", "gate"], sort=False)
    return pd.DataFrame(
        {
            "left": g["left"].mean(),
            "right": g["right"].mean(),
            "mostly_left": g["left"].apply(lambda x: float((x > 0.5).mean())),
            "mostly_right": g["right"].apply(lambda x: float((x > 0.5).mean())),
        }
    ).reset_index()


def _pearson(a: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Correlation of each column of ``a`` [n, units] with ``f`` [n] (NaN where either is constant)."""
    a = a - a.mean(0)
    f = f - f.mean()
    den = np.sqrt((a * a).sum(0) * (f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * f[:, None]).sum(0) / den, np.nan)


def feature_cells(
    model: Model, tokens: torch.Tensor, features: Mapping[str, np.ndarray], *, skip: int = 0, kind: str = "cell"
) -> pd.DataFrame:
    """The correlation of every cell's activation with every feature of the text.

    tokens ``[batch, pos]``; features ``{name: [batch, pos]}`` (one value per token, NaN where
    undefined, e.g. at BOS: such positions are left out); ``skip``: leading positions left out;
    kind: ``cell`` (tanh of the cell state, default) or another LSTM site (``hidden``, a gate).
    Returns ``DataFrame[feature, layer, cell, correlation]`` (Pearson over every kept position),
    sorted by feature and |correlation| (the best cell of each feature first)."""
    _require_lstm(model, "feature cells")
    tokens = model.validate_tokens(tokens)
    _check(tokens, skip)
    if not features:
        raise InputError("give at least one feature {name: [batch, pos] values}")
    for name, f in features.items():
        if np.shape(f) != tuple(tokens.shape):
            raise InputError(f"feature {name!r} has shape {np.shape(f)}; the tokens are {tuple(tokens.shape)}")
    acts = activations(model, tokens, (kind,))
    rows = []
    for name, f in features.items():
        f = np.asarray(f, dtype=float)[:, skip:].reshape(-1)
        keep = np.isfinite(f)
        for (_, layer), a in acts.items():
            a = a[:, skip:].reshape(-1, a.shape[-1])[keep]
            r = _pearson(a, f[keep])
            rows.append(pd.DataFrame({"feature": name, "layer": layer, "cell": np.arange(len(r)), "correlation": r}))
    frame = pd.concat(rows, ignore_index=True)
    order = frame.assign(_abs=-frame["correlation"].abs()).sort_values(["feature", "_abs"], kind="stable")
    return order.drop(columns="_abs").reset_index(drop=True)


def best_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The cell with the largest |correlation| per feature of a :func:`feature_cells` frame."""
    from interp.plots import require

    require(frame, ["feature", "layer", "cell", "correlation"], "best_cells")
    idx = frame.assign(_abs=frame["correlation"].abs()).groupby("feature", sort=False)["_abs"].idxmax()
    return frame.loc[idx.to_numpy()].reset_index(drop=True)


def cell_trace(model: Model, tokens: torch.Tensor, layer: int, cell: int, kind: str = "cell") -> np.ndarray:
    """One cell's activation ``[batch, pos]`` (tanh of its cell state for ``kind="cell"``): what
    :func:`interp.plots.cells.colored_text` colours the characters by."""
    _require_lstm(model, "a cell's activation")
    layer = model.check_layer(layer)
    if not isinstance(cell, int) or not 0 <= cell < model.cfg.d_model:
        raise InputError(f"cell must be an int in [0, {model.cfg.d_model - 1}], got {cell!r}")
    a = activations(model, tokens, (kind,))[(kind, layer)]
    return a[..., cell]
