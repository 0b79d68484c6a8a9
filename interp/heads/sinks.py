"""Attention sinks (Xiao et al. 2023): how much attention each layer pays the first token,
and what the model loses when that token is gone."""

from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model, Tokens
from interp.runs import analysis, record
from interp.tasks import loss_by_position


@analysis("sink_share", figure="interp.plots.heads.sink_plot")
def sink_share(model: Model, tokens: Tokens) -> pd.DataFrame:
    """Per layer, the share of attention mass on the first position: ``DataFrame[layer,
    sink_share, sink_heads]`` (the mean over heads and over query positions 1.. of the
    attention to position 0; ``sink_heads``: heads with at least
    :data:`interp.heads.SINK_THRESHOLD` of it).  Meta ``heads``: the per-head frame."""
    from interp.heads.patterns import SINK_THRESHOLD, scores

    per_head = scores(model, tokens, ["sink"])
    layer = per_head.groupby("layer")["score"]
    df = pd.DataFrame(
        {
            "layer": layer.mean().index,
            "sink_share": layer.mean().to_numpy(),
            "sink_heads": per_head.assign(s=per_head["score"] >= SINK_THRESHOLD).groupby("layer")["s"].sum().to_numpy(),
        }
    )
    record(heads=per_head)
    return df


@analysis("sink_removal")
@torch.no_grad()
def sink_removal(model: Model, tokens: Tokens) -> pd.DataFrame:
    """The loss on the same text with and without its first token (the sink position):
    ``DataFrame[pos, with_first, without_first, increase]`` where ``pos`` counts the tokens
    predicted (both runs predict token ``pos + 2`` of the original sequence), losses in nats
    averaged over rows.  Without the first token the second becomes position 0.
    Meta: the mean losses ``with_first`` / ``without_first``."""
    batch = model.tokenize(tokens)
    if batch.padded:
        raise InputError("sink_removal needs equally long rows")
    ids = batch.tokens
    if ids.shape[1] < 3:
        raise InputError("sink_removal needs sequences of at least 3 tokens")
    full = loss_by_position(model(ids), ids)[:, 1:]  # predictions of tokens 2..
    dropped = loss_by_position(model(ids[:, 1:]), ids[:, 1:])  # same predictions, no first token
    w, wo = full.mean(0).cpu(), dropped.mean(0).cpu()
    df = pd.DataFrame({"pos": range(len(w)), "with_first": w.numpy(), "without_first": wo.numpy()})
    df["increase"] = df["without_first"] - df["with_first"]
    record(with_first=float(w.mean()), without_first=float(wo.mean()))
    return df
