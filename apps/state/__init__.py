"""Shared state of the app pages: the chosen model (cached once per process), the prompt
widget every page uses, cached analysis results, and the one way errors are shown.

Pages call library functions only; this module adds caching and widgets, no maths.  Cached
results are :class:`interp.runs.Result` (frame, meta, provenance); ``save_button`` keeps the
one a page shows in the run store.
Models are cached with ``st.cache_resource`` (one instance shared by all sessions, never
copied); results with ``st.cache_data`` keyed by the model source and the token ids.
"""

from apps.state.inputs import (
    INPUTS,
    IOI_METRIC,
    PROMPT_MODES,
    TEXT_EXAMPLE,
    TOKEN_METRICS,
    Key,
    Prompts,
    answer_inputs,
    batch_key,
    clean_corrupt_inputs,
    contrast_pairs,
    corruption,
    example_text,
    ioi_batch,
    metric_label,
    metric_options,
    parse_numbers,
    prompt_tokens,
    resolve_metric,
    sentiment_task,
    task_batch,
    text_model,
    token_key,
    tokens_text,
)
from apps.state.models import (
    DEFAULT_MODEL,
    SOURCE_KEY,
    cached,
    check_source,
    current_model,
    current_placement,
    current_source,
    friendly,
    init_source,
    load_model,
    set_source,
    sidebar_model,
    sidebar_placement,
    zoo_recipe,
)
from apps.state.results import (
    RETRIEVAL_TASKS,
    ablation,
    attention_patterns,
    dla,
    edge_scores,
    faithfulness,
    head_scores,
    lens,
    mib,
    niah,
    patching,
    retrieval,
    saliency,
    sinks,
    smallest_faithful,
    ssm_read,
    steering_sweep,
    steering_vector,
    support,
    tuned_lens,
)
from apps.state.saving import save_button
