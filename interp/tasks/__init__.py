"""Tasks with known ground truth: synthetic token tasks for the zoo (:mod:`interp.tasks.synthetic`)
and real-text tasks for pretrained language models (:mod:`interp.tasks.text`)."""

from interp.tasks.contrast import AnswerPos, ContrastPairs, Prompts, check_answer_pos
from interp.tasks.synthetic import (
    BOS,
    FFL_VOCAB,
    FLIPFLOP_VOCAB,
    IGNORE,
    TaskBatch,
    associative_recall,
    flip_flop,
    flip_flop_ffl,
    loss_by_position,
    masked_accuracy,
    masked_loss,
    mode_contrast_pairs,
    mode_halves,
    mode_sequences,
    needle_retrieval,
    repeated_tokens,
)

__all__ = [
    "AnswerPos",
    "Prompts",
    "check_answer_pos",
    "BOS",
    "FFL_VOCAB",
    "FLIPFLOP_VOCAB",
    "IGNORE",
    "ContrastPairs",
    "TaskBatch",
    "associative_recall",
    "flip_flop",
    "flip_flop_ffl",
    "loss_by_position",
    "masked_accuracy",
    "masked_loss",
    "mode_contrast_pairs",
    "mode_halves",
    "mode_sequences",
    "needle_retrieval",
    "repeated_tokens",
]
