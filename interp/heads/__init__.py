"""Attention-head analysis: which heads are previous-token, duplicate-token, induction,
prefix-matching, sink or copying heads (:mod:`~interp.heads.patterns`), how heads compose
(:mod:`~interp.heads.composition`), how much a model learns in context
(:mod:`~interp.heads.icl`), and where attention sinks form (:mod:`~interp.heads.sinks`).
"""

from interp.heads.composition import COMPOSITION_KINDS, composition_scores, copying_scores
from interp.heads.icl import icl_score, in_context_gain, induction_ablation, loss_by_position
from interp.heads.importance import head_importance, pruning_curve, pruning_order, random_order
from interp.heads.patterns import (
    KINDS,
    PATTERN_KINDS,
    SINK_THRESHOLD,
    TL_KINDS,
    PatternFn,
    bos_id,
    default_tokens,
    scores,
    top_heads,
)
from interp.heads.sinks import sink_removal, sink_share

__all__ = [
    "head_importance",
    "pruning_curve",
    "pruning_order",
    "random_order",
    "in_context_gain",
    "induction_ablation",
    "sink_removal",
    "sink_share",
    "COMPOSITION_KINDS",
    "composition_scores",
    "copying_scores",
    "icl_score",
    "loss_by_position",
    "KINDS",
    "PATTERN_KINDS",
    "SINK_THRESHOLD",
    "TL_KINDS",
    "PatternFn",
    "bos_id",
    "default_tokens",
    "scores",
    "top_heads",
]
