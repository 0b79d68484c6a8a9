"""Contrast pairs: prompts that differ in one behaviour (the input of steering vectors).

Natural prompts differ in length, so a pair's two prompts need not align token by token:
each prompt is read at its own position (``answer_pos``: an int, -1 = each prompt's last
token, counted from each row's end) or averaged over its tokens (``"mean"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.errors import InputError
from interp.tokens import TokenBatch

Prompts = torch.Tensor | TokenBatch | Sequence[str] | Sequence[Sequence[int]]
AnswerPos = int | str


@dataclass
class ContrastPairs:
    """``positive[i]`` against ``negative[i]``: prompts (texts, token-id lists, a tensor or a
    :class:`TokenBatch`) and where each is read (``answer_pos``: int or ``"mean"``)."""

    positive: Prompts
    negative: Prompts
    answer_pos: AnswerPos = -1

    def tokens(self, model) -> tuple[TokenBatch, TokenBatch]:
        """Both sides as validated token batches for ``model`` (one row per prompt)."""
        pos, neg = model.tokenize(_as_batchable(self.positive)), model.tokenize(_as_batchable(self.negative))
        if len(pos) != len(neg):
            raise InputError(
                f"{len(pos)} positive but {len(neg)} negative prompts: contrast pairs need one negative per positive"
            )
        check_answer_pos(self.answer_pos, pos, neg)
        return pos, neg

    def __len__(self) -> int:
        return len(self.positive)


def _as_batchable(prompts: Prompts):
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (torch.Tensor, TokenBatch)):
        return prompts
    items = list(prompts)
    if not items:
        raise InputError("no prompts given")
    for p in items:
        if isinstance(p, str) and not p.strip():
            raise InputError("a prompt is empty: every pair needs text on both sides")
    return items


def check_answer_pos(answer_pos: AnswerPos, *batches: TokenBatch) -> None:
    """Raises unless ``answer_pos`` is ``"mean"`` or an int inside every prompt."""
    if answer_pos == "mean":
        return
    if isinstance(answer_pos, bool) or not isinstance(answer_pos, int):
        raise InputError(f"answer_pos must be an int or 'mean', got {answer_pos!r}")
    for batch in batches:
        shortest = int(batch.lengths.min())
        if not -shortest <= answer_pos < shortest:
            raise InputError(f"answer_pos {answer_pos} is outside the shortest prompt ({shortest} tokens)")
