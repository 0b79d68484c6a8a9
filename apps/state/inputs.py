"""The input widgets the pages share (prompts, clean / corrupt pairs, IOI batches, contrast
pairs) and the hashable specs that key cached results."""

from __future__ import annotations

import streamlit as st
import torch

import interp
from apps.state.models import friendly, zoo_recipe
from interp import tasks
from interp.errors import InputError

#: the example prompt of text models (Wang et al.'s indirect-object identification)
TEXT_EXAMPLE = "When Mary and John went to the store, John gave a drink to"


def text_model(model: interp.Model) -> bool:
    """Whether ``model`` reads natural text (a real or Hugging Face model), not named tokens."""
    return model.tokenizer is not None and not model.word_level


def example_text(model: interp.Model, length: int = 25, period: int = 8) -> str:
    """The example prompt: an English sentence for text models; for zoo models a
    repeated-random-tokens prompt written in the model's own token syntax."""
    if text_model(model):
        return TEXT_EXAMPLE
    length = min(length, model.cfg.n_ctx)
    toks = tasks.repeated_tokens(
        1, d_vocab=model.cfg.d_vocab, n_ctx=length, period=min(period, length - 2), seed=1
    ).tokens[0]
    return model.decode(toks, skip_bos=True) if not model.word_level else model.decode(toks)


PROMPT_MODES = ("type tokens", "repeated random tokens", "the model's zoo task")


def prompt_tokens(model: interp.Model, key: str, *, default_mode: int = 0) -> torch.Tensor:
    """The prompt widget: typed text (the model's token syntax), repeated random tokens, or a
    sequence from the zoo task.  Returns ``[1, pos]`` tokens; bad input stops the page
    with a message."""
    recipe = zoo_recipe(model)
    modes = PROMPT_MODES if recipe is not None else PROMPT_MODES[:2]
    mode = st.radio("Prompt", modes, index=min(default_mode, len(modes) - 1), horizontal=True, key=f"{key}_mode")
    if mode == PROMPT_MODES[0]:
        syntax = (
            "named tokens separated by spaces (e.g. `BOS t5 t9`) or integer ids"
            if model.word_level
            else "text for the model's tokenizer"
        )
        text = st.text_area(f"Tokens: {syntax}", value=example_text(model), key=f"{key}_text", height=80)
        with friendly("bad prompt"):
            return model.to_tokens(text)
    cols = st.columns(3)
    seed = cols[0].number_input("seed", 0, 10_000, 0, key=f"{key}_seed")
    if mode == PROMPT_MODES[1]:
        n_ctx = model.cfg.n_ctx
        length = cols[1].number_input("length (tokens, with BOS)", 4, n_ctx, min(n_ctx, 33), key=f"{key}_len")
        period = cols[2].number_input(
            "period (segment length)", 1, max(1, n_ctx - 2), min(10, n_ctx - 2), key=f"{key}_period"
        )
        with friendly("bad generator settings"):
            batch = tasks.repeated_tokens(
                1, d_vocab=model.cfg.d_vocab, n_ctx=int(length), period=int(period), seed=int(seed)
            )
            return model.validate_tokens(batch.tokens)
    with friendly("zoo task"):
        return model.validate_tokens(recipe.make_batch(1, int(seed)).tokens[:1])


def parse_numbers(text: str, kind: type, what: str) -> list:
    """Numbers typed separated by spaces or commas (``kind``: int or float); raises a
    ValueError naming ``what`` on anything else, or on none."""
    try:
        values = [kind(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"{what} must be numbers separated by spaces, got {text!r}") from None
    if not values:
        raise InputError(f"give at least one value for {what}")
    if kind is float and not all(abs(v) < float("inf") for v in values):
        raise InputError(f"{what} must be finite numbers, got {text!r}")
    return values


def token_key(tokens: torch.Tensor) -> tuple[int, ...]:
    """Hashable form of one sequence, the cache key of results."""
    return tuple(int(t) for t in tokens.reshape(-1))


def task_batch(model: interp.Model, n: int, seed: int) -> tasks.TaskBatch:
    """The model's own zoo task, or repeated random tokens (labels where a token repeats)."""
    recipe = zoo_recipe(model)
    if recipe is not None:
        return recipe.make_batch(n, seed)
    return tasks.repeated_tokens(n, d_vocab=model.cfg.d_vocab, n_ctx=min(model.cfg.n_ctx, 64), seed=seed)


def contrast_pairs(model: interp.Model, n: int, seed: int) -> tasks.ContrastPairs | None:
    """The contrast pairs of the model's zoo task, where it has them (steer-2l: mode B vs mode A)."""
    recipe = zoo_recipe(model)
    if recipe is None or recipe.task != "mode_sequences":
        return None
    return tasks.mode_contrast_pairs(n, d_vocab=model.cfg.d_vocab, n_ctx=min(16, model.cfg.n_ctx), seed=seed)


Prompts = tuple  # texts, or token-id tuples (zoo models): hashable, the cache key


def sentiment_task(model: interp.Model):
    """The shipped sentiment steering task of a text model (pairs, eval prompts, words)."""
    from interp.tasks.text import sentiment

    return sentiment(model)


def tokens_text(model: interp.Model, tokens: torch.Tensor) -> str:
    """One sequence written back in the model's prompt syntax (what the text boxes accept)."""
    return model.decode(tokens.reshape(-1), skip_bos=not model.word_level)


Key = tuple[tuple[int, ...], ...]


def batch_key(tokens: torch.Tensor) -> Key:
    """Hashable form of a batch of sequences, the cache key of results."""
    return tuple(tuple(int(t) for t in row) for row in tokens.reshape(tokens.shape[0], -1))


def corruption(model: interp.Model, clean: Key, spec: tuple):
    """A circuits.corrupt.Corruption of the clean batch from a hashable spec:
    ``("tokens", corrupt key)``, ``("replace", positions, seed)``, ``("noise", positions, n_samples,
    seed)`` or ``("ioi", n, seed, corruption)`` (IOI prompts and their ABC / ABB corruption)."""
    from circuits import corrupt as C

    tokens = torch.tensor(clean)
    if spec[0] == "ioi":
        return C.symmetric(model.validate_tokens(tokens), ioi_batch(model, *spec[1:]).corrupt.tokens)
    if spec[0] == "tokens":
        return C.symmetric(model.validate_tokens(tokens), model.validate_tokens(torch.tensor(spec[1])))
    if spec[0] == "replace":
        return C.replaced(tokens, list(spec[1]), d_vocab=model.cfg.d_vocab, seed=spec[2])
    if spec[0] == "noise":
        return C.gaussian_noise(model, tokens, list(spec[1]), n_samples=spec[2], seed=spec[3])
    raise InputError(f"unknown corruption {spec[0]!r}")


def ioi_batch(model: interp.Model, n: int, seed: int, corruption: str):
    """``n`` IOI prompts of the first template (one length: pairs align position by position)."""
    from interp.tasks.text import ioi

    return ioi(model, n, corruption=corruption, templates=[0], seed=seed)


IOI_METRIC = "ioi_logit_diff"


def metric_options(spec: tuple, kinds) -> list[str]:
    """The metrics a causal page offers: IOI's logit(IO) - logit(S) first for IOI inputs."""
    return ([IOI_METRIC] if spec[0] == "ioi" else []) + list(kinds)


#: metrics that read named answer (and, logit_diff, wrong) tokens: the Patching page lets them be typed
TOKEN_METRICS = ("logit_diff", "logit", "logprob", "prob")


def resolve_metric(model: interp.Model, spec: tuple, metric: str | tuple):
    """A metric name of :func:`metric_options` as what the analyses take (a name, or IOI's Metric);
    or ``(kind, answer, wrong)``: the metric of named token ids at the last position (wrong None
    except for ``logit_diff``), e.g. the answer and wrong tokens typed on the Patching page."""
    from interp import metrics as M

    if isinstance(metric, tuple):
        kind, answer, wrong = metric
        if kind not in TOKEN_METRICS:
            raise InputError(f"named answer tokens apply to the metrics {TOKEN_METRICS}, not {kind!r}")
        if kind == "logit_diff":
            return M.logit_diff([answer], [wrong], pos=-1)
        return getattr(M, kind)([answer], pos=-1)
    if metric == IOI_METRIC:
        if spec[0] != "ioi":
            raise InputError("the IOI metric needs IOI prompts")
        return ioi_batch(model, *spec[1:]).metric()
    return metric


def metric_label(model: interp.Model, metric: str | tuple) -> str:
    """How a page names a metric: its name, or for ``(kind, answer, wrong)`` e.g.
    ``logit_diff(' Mary' - ' John')``."""
    if not isinstance(metric, tuple):
        return metric
    kind, answer, wrong = metric
    return f"{kind}({model.decode([answer])!r}" + (f" - {model.decode([wrong])!r})" if wrong is not None else ")")


def answer_inputs(model: interp.Model, key: str, kind: str, container=st) -> str | tuple:
    """The answer (and, for logit_diff, wrong) token boxes of a prompt pair's metric ``kind``; text
    models start filled with the IOI example's indirect object and subject (the default pair is that
    example).  Returns ``(kind, answer id, wrong id)``, or ``kind`` when the boxes are left empty
    (then the clean and the corrupt runs' predictions).  A token that is not one token stops the page."""
    if kind not in TOKEN_METRICS:
        return kind
    fill = ("", "")
    if text_model(model):
        with friendly("IOI example"):
            pair = ioi_batch(model, 1, 0, "ABC")
        fill = (model.decode([int(pair.answer[0])]), model.decode([int(pair.wrong[0])]))
    left, right = container.columns(2)
    answer = left.text_input(
        "Answer token", fill[0], key=f"{key}_answer", placeholder="the clean run's prediction", help="one token"
    )
    wrong = (
        right.text_input(
            "Wrong token", fill[1], key=f"{key}_wrong", placeholder="the corrupt run's prediction", help="one token"
        )
        if kind == "logit_diff"
        else ""
    )
    if not answer and not wrong:
        return kind
    with friendly("answer tokens"):
        if kind == "logit_diff" and not (answer and wrong):
            raise InputError("give both the answer and the wrong token (or neither: the two runs' predictions)")
        return (kind, model.token_id(answer), model.token_id(wrong) if kind == "logit_diff" else None)


def _positions_input(label: str, default: str, key: str) -> tuple[int, ...]:
    text = st.text_input(label, default, key=key, help="token positions separated by spaces; -1 = the last")
    try:
        pos = tuple(int(p) for p in text.replace(",", " ").split())
    except ValueError:
        st.error(f"bad positions {text!r}: give integers separated by spaces, e.g. -1 or 3 5")
        st.stop()
    if not pos:
        st.error("give at least one position to corrupt")
        st.stop()
    return pos


INPUTS = ("prompt pair", "task batch")


def clean_corrupt_inputs(model: interp.Model, key: str) -> tuple[Key, tuple]:
    """The clean / corrupt widget of the causal pages: a typed prompt pair, or a batch of the
    model's task with tokens replaced or noised at chosen positions.  Returns the clean batch
    key and a corruption spec for :func:`corruption`; bad input stops the page with a message."""
    from circuits.corrupt import replace_tokens

    text = text_model(model)
    labels = {INPUTS[0]: "prompt pair", INPUTS[1]: "IOI prompts" if text else "task batch"}
    mode = st.radio("Clean and corrupt inputs", INPUTS, horizontal=True, key=f"{key}_inputs", format_func=labels.get)
    if mode == INPUTS[0]:
        if text:  # an IOI prompt and its ABC corruption (the second John is Bob)
            with friendly("IOI example"):
                pair = ioi_batch(model, 1, 0, "ABC")
            clean_default, corrupt_default = pair.texts[0], pair.corrupt_texts[0]
        else:
            example = (
                task_batch(model, 1, 0).tokens
                if zoo_recipe(model) is not None
                else model.to_tokens(example_text(model))
            )
            # default corruption: the last token replaced by the first earlier token that differs from it
            # (in recall, another key; in repeated tokens, a token whose successor is known)
            other = next((int(t) for t in example[0, 1:-1] if int(t) != int(example[0, -1])), None)
            corrupted = replace_tokens(example, [-1], d_vocab=model.cfg.d_vocab, low=1, seed=0, replacement=other)
            clean_default, corrupt_default = tokens_text(model, example), tokens_text(model, corrupted)
        left, right = st.columns(2)
        clean_text = left.text_area("Clean prompt", clean_default, key=f"{key}_clean", height=100)
        corrupt_text = right.text_area(
            "Corrupt prompt (same number of tokens)", corrupt_default, key=f"{key}_corrupt", height=100
        )
        with friendly("bad prompts"):
            clean = model.to_tokens(clean_text)
            corrupt = model.to_tokens(corrupt_text)
            if clean.shape != corrupt.shape:
                raise InputError(
                    f"the clean prompt has {clean.shape[1]} tokens and the corrupt one "
                    f"{corrupt.shape[1]}: they must be aligned position by position"
                )
        return batch_key(clean), ("tokens", batch_key(corrupt))
    if text:
        cols = st.columns(3)
        n = cols[0].number_input("IOI prompts", 1, 64, 4, key=f"{key}_ioi_n")
        seed = cols[1].number_input("seed", 0, 10_000, 0, key=f"{key}_ioi_seed")
        how = cols[2].selectbox(
            "corruption",
            ("ABC", "ABB"),
            key=f"{key}_ioi_how",
            help="ABC: the second subject replaced by a third name (the repeated-name signal "
            "is gone); ABB: replaced by the indirect object (the other name is the answer)",
        )
        with friendly("IOI prompts"):
            batch = ioi_batch(model, int(n), int(seed), how)
        st.caption(f"first clean: `{batch.texts[0]}`  \nfirst corrupt: `{batch.corrupt_texts[0]}`")
        return batch_key(batch.clean.tokens), ("ioi", int(n), int(seed), how)
    cols = st.columns(4)
    n = cols[0].number_input("sequences", 1, 256, 16, key=f"{key}_n")
    seed = cols[1].number_input("seed", 0, 10_000, 0, key=f"{key}_seed")
    how = cols[2].selectbox(
        "corruption",
        ("replace tokens", "gaussian noise"),
        key=f"{key}_how",
        help="replace: random other tokens at the positions (symmetric token replacement); "
        "noise: 3x the embedding std added there (ROME), averaged over 5 samples",
    )
    with cols[3]:
        positions = _positions_input("positions", "-1", f"{key}_positions")
    with friendly("task"):
        batch = task_batch(model, int(n), int(seed)).tokens
        clean_key = batch_key(batch)
        spec = ("replace", positions, int(seed)) if how == "replace tokens" else ("noise", positions, 5, int(seed))
        example = corruption(model, clean_key, spec).tokens[:1]
    st.caption(
        f"first clean: `{tokens_text(model, batch[0])}`  \n"
        f"first corrupt: `{tokens_text(model, example[0])}`" + (" (+ noise)" if spec[0] == "noise" else "")
    )
    return clean_key, spec
