"""In-context learning: loss by position and the in-context-learning score (Olsson et al. 2022)."""

from __future__ import annotations

import pandas as pd
import torch

from interp.model import Model
from interp.tasks import TaskBatch
from interp.tasks import loss_by_position as _loss_by_position


def loss_by_position(model: Model, tokens: torch.Tensor | TaskBatch, *, batch_size: int | None = None) -> pd.DataFrame:
    """Next-token loss per position, ``DataFrame[pos, loss, sem, n]``: ``loss`` (nats) is the
    mean over the batch of the cross-entropy of the logits at ``pos`` on token ``pos + 1``;
    ``sem`` its standard error over the ``n`` sequences.  Active hooks apply."""
    if isinstance(tokens, TaskBatch):
        tokens = tokens.tokens
    tokens = model.validate_tokens(tokens)
    if tokens.shape[1] < 2:
        raise ValueError("loss by position needs sequences of at least 2 tokens")
    step = tokens.shape[0] if batch_size is None else int(batch_size)
    with torch.no_grad():
        losses = torch.cat([_loss_by_position(model(tokens[i:i + step]), tokens[i:i + step])
                            for i in range(0, tokens.shape[0], step)])          # [batch, pos-1]
    n = losses.shape[0]
    sem = losses.std(0) / n ** 0.5 if n > 1 else torch.full((losses.shape[1],), float("nan"))
    return pd.DataFrame({"pos": range(losses.shape[1]), "loss": losses.mean(0).cpu().numpy(),
                         "sem": sem.cpu().numpy(), "n": n})


def icl_score(model: Model, tokens: torch.Tensor | TaskBatch, *, early: int | None = None,
              late: int | None = None) -> float:
    """In-context-learning score (Olsson et al. 2022): mean loss at position ``late`` minus
    mean loss at position ``early`` (nats; negative = the model predicts better with more
    context).  Defaults: ``early`` = 10% into the sequence, ``late`` = the last predicting
    position (Olsson et al. use tokens 50 and 500 of 512)."""
    frame = loss_by_position(model, tokens)
    last = int(frame["pos"].max())
    early = max(1, round(0.1 * (last + 1))) if early is None else int(early)
    late = last if late is None else int(late)
    for name, p in (("early", early), ("late", late)):
        if not 0 <= p <= last:
            raise ValueError(f"{name}={p} is outside the predicting positions [0, {last}]")
    if early >= late:
        raise ValueError(f"early ({early}) must come before late ({late})")
    return float(frame.loc[late, "loss"] - frame.loc[early, "loss"])
