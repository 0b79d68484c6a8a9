"""A whitespace tokenizer over named tokens, for the zoo models (which have no BPE).

Text is split on whitespace; each piece is a token name (``"BOS"``, ``"k5"``) or an
integer token id.  This keeps prompts typed into the app or the CLI readable and
validated.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import torch


class WordVocab:
    """Names for token ids ``0..len(names)-1``; ``bos`` is the id prepended by default."""

    def __init__(self, names: Sequence[str], bos: int | None = 0):
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.bos = bos

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        pieces = text.split()
        if not pieces:
            raise ValueError("empty prompt: type some tokens, e.g. " + " ".join(self.names[1:6]))
        ids = []
        for piece in pieces:
            if piece in self.index:
                ids.append(self.index[piece])
            elif piece.lstrip("-").isdigit():
                value = int(piece)
                if not 0 <= value < len(self.names):
                    raise ValueError(f"token id {value} is outside the vocabulary [0, {len(self.names)})")
                ids.append(value)
            else:
                near = difflib.get_close_matches(piece, self.names, n=5)
                raise ValueError(f"unknown token {piece!r}; close names: {near or self.names[:10]} "
                                 f"(or use an integer id in [0, {len(self.names)}))")
        if prepend_bos and self.bos is not None and ids[0] != self.bos:
            ids.insert(0, self.bos)
        return ids

    def decode(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        return [self.names[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {"names": self.names, "bos": self.bos}

    @classmethod
    def from_dict(cls, d: dict) -> "WordVocab":
        return cls(d["names"], d.get("bos", 0))


def default_names(d_vocab: int) -> list[str]:
    """``BOS, t1, t2, ...``: names for a vocabulary of anonymous random tokens."""
    return ["BOS"] + [f"t{i}" for i in range(1, d_vocab)]
