"""interp: a mechanistic-interpretability workbench for transformers, RNNs and SSMs.

``interp.load(source)`` gives a hooked :class:`Model`; analyses are plain functions over
(model, tokens) returning pandas DataFrames; plots take those frames and return plotly
figures.
"""

from interp.loading import load
from interp import zoo
from interp.model import Model, ModelConfig

__all__ = ["load", "Model", "ModelConfig", "zoo"]
__version__ = "0.1.0"
