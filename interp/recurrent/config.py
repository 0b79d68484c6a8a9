"""Configuration of :class:`interp.recurrent.HookedRecurrent` models."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from interp.errors import InputError

CELLS = ("lstm", "gru", "ssm")


@dataclass
class RecurrentConfig:
    """Geometry of a :class:`HookedRecurrent`.

    cell: "lstm" | "gru" | "ssm".  d_model: embedding width, which is also the hidden width
    of every rnn layer and the residual width of an ssm.  n_ctx: the longest sequence the
    model is meant for (informational: the recurrence itself runs on any length).
    d_state, expand, d_conv, dt_rank: ssm only (state size N per channel, d_inner =
    expand * d_model, causal depthwise conv width, 1 = no conv, rank of the delta
    projection, 0 = ceil(d_model / 16)).  residual: rnn only, adds the block input to the
    hidden sequence (ssm blocks are always residual).  seed: parameter initialisation.
    """

    cell: str
    d_vocab: int
    d_model: int
    n_layers: int = 1
    n_ctx: int = 64
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0
    residual: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.cell not in CELLS:
            raise InputError(f"cell must be one of {CELLS}, got {self.cell!r}")
        for name in ("d_vocab", "d_model", "n_layers", "n_ctx", "d_state", "expand", "d_conv"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.dt_rank, int) or self.dt_rank < 0:
            raise InputError(f"dt_rank must be an int >= 0, got {self.dt_rank!r}")

    @property
    def family(self) -> str:
        return "ssm" if self.cell == "ssm" else "rnn"

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def delta_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RecurrentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"family"})
        if unknown:
            raise InputError(f"unknown RecurrentConfig fields {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})
