"""The model's next-token distribution as a table: what a prompt predicts, before and after
an intervention (steering, ablation: run it inside their ``with`` block)."""

from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model


@torch.no_grad()
def next_token_probs(model: Model, tokens: torch.Tensor | str, k: int = 10, pos: int = -1) -> pd.DataFrame:
    """The ``k`` most probable next tokens at position ``pos`` of one sequence (token ids
    ``[pos]`` / ``[1, pos]``, or a prompt as text).

    Returns ``DataFrame[rank, token_id, token, prob, logit]`` (prob in [0, 1], logit in the
    model's units), highest first.  Active hooks apply.
    """
    tokens = model.tokenize(tokens).tokens if isinstance(tokens, str) else model.validate_tokens(tokens)
    if tokens.shape[0] != 1:
        raise InputError(f"next_token_probs takes one sequence, got a batch of {tokens.shape[0]}")
    n = tokens.shape[1]
    if not -n <= pos < n:
        raise InputError(f"pos {pos} is outside the {n} positions")
    if not 1 <= k <= model.cfg.d_vocab:
        raise InputError(f"k must be in [1, d_vocab={model.cfg.d_vocab}], got {k}")
    logits = model(tokens)[0, pos].float().cpu()
    probs = logits.softmax(-1)
    top = probs.topk(k)
    ids = top.indices.tolist()
    return pd.DataFrame(
        {
            "rank": range(1, k + 1),
            "token_id": ids,
            "token": model.to_str_tokens(top.indices),
            "prob": top.values.numpy(),
            "logit": logits[top.indices].numpy(),
        }
    )
