"""The model zoo: small trained models shipped as safetensors + JSON cards in ``weights/``.

``available()`` lists them as a DataFrame; ``load(name)`` returns an :class:`interp.Model`.
Each card records the recipe that made the model and the metric it reached; the tests
re-check that metric on the shipped weights.  ``interp train NAME`` retrains one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

WEIGHTS = Path(__file__).parent / "weights"


def names() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in WEIGHTS.glob("*.json"))


def card(name: str) -> dict:
    """The JSON card of a shipped model."""
    _check(name)
    return json.loads((WEIGHTS / f"{name}.json").read_text())


def available() -> pd.DataFrame:
    """One row per shipped model: family, geometry, task, the card's metric and training time."""
    rows = []
    for n in names():
        c = card(n)
        cfg = c["config"]
        metric = c["metric"]["name"]
        rows.append({"name": n, "arch": c["arch"], "family": _family(c), "n_layers": cfg.get("n_layers"),
                     "n_heads": cfg.get("n_heads", 0), "d_model": cfg["d_model"], "d_vocab": cfg["d_vocab"],
                     "task": c["task"], "metric": metric, "value": round(c["metrics"][metric], 4),
                     "threshold": c["metric"]["threshold"], "train_seconds": c["train_seconds"],
                     "description": c["description"]})
    return pd.DataFrame(rows)


def _family(c: dict) -> str:
    if c["arch"] == "bridge":
        return "transformer"
    return "ssm" if c["config"].get("cell") == "ssm" else "rnn"


def _check(name: str) -> None:
    if name not in names():
        raise ValueError(f"unknown zoo model {name!r}; available: {names()}")


def load(name: str):
    """Loads a shipped model (eval mode) as an :class:`interp.Model`."""
    from interp.checkpoint import load_checkpoint
    from interp.loading import from_module

    _check(name)
    module, c = load_checkpoint(WEIGHTS / name)
    return from_module(module, c)
