"""Real-text tasks for pretrained language models, built for any tokenizer from small data
files shipped with the package (``interp/tasks/data``; nothing is downloaded).

- :func:`ioi`: indirect-object identification (Wang et al. 2022) with ABC / ABB corruptions.
- :func:`passkey` and :func:`needle_haystack`: a needle inside filler text, a question, the
  answer to be copied from the needle (the retrieval-head experiments of Wu et al. 2024);
  the needle's span is found and checked in token space.
- :func:`function_task` and :func:`sentiment`: Todd et al.'s function tasks (antonym,
  country-capital, present-past, English-French, capitalize) with train / held-out splits,
  and natural sentiment contrast pairs for steering.

Every builder checks that the words it needs are single tokens where the task needs them to
be (and says how the others tokenize), and returns prompts as token batches whose rows may
differ in length.
"""

from interp.tasks.text.concepts import (
    FUNCTION_TASKS,
    FunctionTask,
    SteeringTask,
    function_prompts,
    function_task,
    sentiment,
)
from interp.tasks.text.facts import FactBatch, FactSet, fact_set, facts
from interp.tasks.text.haystack import needle_haystack, passkey
from interp.tasks.text.ioi import CORRUPTIONS, IOIBatch, ioi
from interp.tasks.text.translation import TranslationTask, first_tokens, translation
from interp.tasks.text.words import check_single_tokens, data, generated_text, single_tokens

__all__ = [
    "CORRUPTIONS",
    "FactBatch",
    "FactSet",
    "fact_set",
    "FUNCTION_TASKS",
    "FunctionTask",
    "IOIBatch",
    "SteeringTask",
    "TranslationTask",
    "check_single_tokens",
    "data",
    "facts",
    "first_tokens",
    "function_prompts",
    "function_task",
    "generated_text",
    "ioi",
    "needle_haystack",
    "passkey",
    "sentiment",
    "single_tokens",
    "translation",
]
