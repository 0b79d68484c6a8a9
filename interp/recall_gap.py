"""Recall accuracy by the number of key-value pairs (Arora et al. 2023, Zoology's multi-query
associative recall): the measurement behind the recall gap between attention and fixed-state
models.

``recall_by_pairs(model)`` scores a model on the recall-gap task of the zoo
(:func:`interp.zoo.recipes_memory.gap_batch`: ``[BOS] k1 v1 .. kn vn _ q1 a1 q2 a2 ..``, 12
queries drawn with replacement) at each number of pairs, one row per sequence, so intervals can
be taken over sequences.  Any model with the task's vocabulary runs it: transformers, LSTM / GRU,
the selective SSM and Hugging Face Mamba alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model
from interp.tasks import IGNORE


@torch.no_grad()
def recall_by_pairs(
    model: Model, pairs: Sequence[int] | None = None, *, n: int = 256, seed: int | None = None
) -> pd.DataFrame:
    """Per-sequence recall accuracy at each number of key-value pairs.

    pairs: pair counts (default :data:`interp.zoo.recipes_memory.GAP_PAIRS`, 1 2 4 8; at most 8,
    the task's context).  n: sequences per count.  seed: the batches' seed (default held out from
    training: ``EVAL_SEED + 1000 + pairs``).  Returns ``DataFrame[n_pairs, sequence, queries,
    correct, accuracy]`` (``accuracy`` = correct / queries of that sequence; chance when guessing
    among the values in context is 1 / n_pairs)."""
    from interp.zoo.recipes import EVAL_SEED
    from interp.zoo.recipes_memory import GAP_MAX_PAIRS, GAP_PAIRS, GAP_TASK, gap_batch

    pairs = list(GAP_PAIRS if pairs is None else pairs)
    bad = [p for p in pairs if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= GAP_MAX_PAIRS]
    if not pairs or bad:
        raise InputError(f"pair counts must be ints in 1..{GAP_MAX_PAIRS}, got {pairs}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise InputError(f"n must be an int >= 2 (sequences per pair count), got {n!r}")
    if model.cfg.d_vocab != GAP_TASK["d_vocab"]:
        raise InputError(
            f"{model.cfg.name or 'the model'} has {model.cfg.d_vocab} tokens; the recall-gap task has "
            f"{GAP_TASK['d_vocab']} (train one with a gap-* recipe)"
        )
    frames = []
    for p in pairs:
        batch = gap_batch(n, (EVAL_SEED if seed is None else seed) + 1000 + p, p)
        mask = batch.labels != IGNORE
        hit = (model(batch.tokens).argmax(-1) == batch.labels) & mask
        queries, correct = mask.sum(1), hit.sum(1)
        frames.append(
            pd.DataFrame(
                {
                    "n_pairs": p,
                    "sequence": range(n),
                    "queries": queries.numpy(),
                    "correct": correct.numpy(),
                    "accuracy": (correct.float() / queries.float()).numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
