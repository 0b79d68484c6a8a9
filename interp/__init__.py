"""interp: a mechanistic-interpretability workbench for transformers, RNNs and SSMs.

``interp.load(source)`` gives a hooked :class:`Model`; analyses are plain functions over
(model, tokens) returning pandas DataFrames; plots take those frames and return plotly
figures.  Submodules (``interp.heads``, ``interp.steering``, ...) load on first use.
"""

from __future__ import annotations

import importlib

from interp.capabilities import support
from interp.errors import InputError, Unsupported
from interp.loading import load
from interp.model import Model, ModelConfig
from interp.tokens import TokenBatch

__all__ = ["load", "support", "Model", "ModelConfig", "TokenBatch", "InputError", "Unsupported"]
__version__ = "0.2.0"

_SUBMODULES = (
    "ablation",
    "arch",
    "attention",
    "caches",
    "capabilities",
    "checkpoint",
    "decoding",
    "function_vectors",
    "gradients",
    "heads",
    "interventions",
    "lens",
    "logits",
    "massive",
    "memory",
    "metrics",
    "norms",
    "plots",
    "recurrent",
    "reproduce",
    "retrieval",
    "runs",
    "sae",
    "sites",
    "steering",
    "streaming",
    "tasks",
    "tokens",
    "training",
    "weights",
    "zoo",
)


def __getattr__(name: str):
    # `import interp; interp.heads.scores(...)` works without importing every analysis up front
    if name in _SUBMODULES:
        return importlib.import_module(f"interp.{name}")
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
