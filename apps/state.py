"""Shared state of the app pages: the chosen model (cached once per process), the prompt
widget every page uses, cached analysis results, and the one way errors are shown.

Pages call library functions only; this module adds caching and widgets, no maths.
Models are cached with ``st.cache_resource`` (one instance shared by all sessions, never
copied); results with ``st.cache_data`` keyed by the model source and the token ids.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import streamlit as st
import torch

import interp
from interp import tasks

DEFAULT_MODEL = os.environ.get("INTERP_DEFAULT_MODEL", "induction-2l")
SOURCE_KEY = "model_source"
# Errors that mean "bad input": shown as a message.  Anything else is a bug and surfaces.
INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, RuntimeError, OSError, KeyError)


@contextlib.contextmanager
def friendly(what: str = "") -> Iterator[None]:
    """Shows a bad-input error as ``st.error`` and stops the page (no traceback)."""
    try:
        yield
    except INPUT_ERRORS as e:
        msg = str(e).strip().strip("'\"") or type(e).__name__
        st.error(f"{what}: {msg}" if what else msg)
        st.stop()


# --- the model ------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the model ...", max_entries=4)
def _load(source: str) -> interp.Model:
    return interp.load(source)


def load_model(source: str) -> interp.Model:
    """The model for ``source`` (zoo name, local HF directory, hub id), loaded once per process."""
    source = (source or "").strip()
    if not source:
        raise ValueError("no model given: choose a zoo model, a local folder or a hub id")
    return _load(source)


def current_source() -> str:
    return st.session_state.get(SOURCE_KEY, DEFAULT_MODEL)


def check_source(source: str) -> str:
    """A model source typed into the app or read from the URL, stripped and checked for what
    no model name holds (control characters, absurd length); :func:`interp.load` validates the
    rest (zoo names with suggestions, folders, hub ids)."""
    text = (source or "").strip()
    if not text:
        raise ValueError("no model given: choose a zoo model, a local folder or a hub id")
    if len(text) > 500 or any(ord(ch) < 32 for ch in text):
        raise ValueError("a model is a zoo name, a local folder or a hub id (owner/name)")
    return text


def init_source() -> None:
    """On a session's first run, takes the model from the URL (``?model=...``), so a reload or a
    shared link opens the same model; afterwards keeps the URL in step with the session."""
    if SOURCE_KEY not in st.session_state:
        wanted = st.query_params.get("model")
        source = DEFAULT_MODEL
        if wanted:
            try:
                source = check_source(wanted)
            except ValueError as e:
                st.session_state["source_error"] = str(e)
        st.session_state[SOURCE_KEY] = source
    if st.query_params.get("model") != st.session_state[SOURCE_KEY]:
        st.query_params["model"] = st.session_state[SOURCE_KEY]


def set_source(source: str) -> interp.Model:
    """Loads ``source`` and makes it the model of every page (raises on bad input)."""
    source = check_source(source)
    model = load_model(source)
    st.session_state[SOURCE_KEY] = source
    st.query_params["model"] = source
    return model


def current_model() -> interp.Model:
    """The session's model; on a load error shows it and stops the page."""
    with friendly(f"could not load {current_source()!r}"):
        return load_model(current_source())


def sidebar_model(model: interp.Model) -> None:
    c = model.cfg
    st.sidebar.markdown(
        f"**Model:** `{current_source()}`  \n{c.family}, {c.n_layers} layers"
        + (f", {c.n_heads} heads" if c.n_heads else "")
        + f", d_model {c.d_model}, "
        f"vocab {c.d_vocab}, context {c.n_ctx}"
    )


def zoo_recipe(model: interp.Model):
    """The zoo recipe a model was trained with, or None for other models."""
    from interp.zoo.recipes import RECIPES

    name = (model.card.get("recipe") or {}).get("name") or model.card.get("name")
    return RECIPES.get(name)


# --- prompts --------------------------------------------------------------------------

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
        raise ValueError(f"{what} must be numbers separated by spaces, got {text!r}") from None
    if not values:
        raise ValueError(f"give at least one value for {what}")
    if kind is float and not all(abs(v) < float("inf") for v in values):
        raise ValueError(f"{what} must be finite numbers, got {text!r}")
    return values


def token_key(tokens: torch.Tensor) -> tuple[int, ...]:
    """Hashable form of one sequence, the cache key of results."""
    return tuple(int(t) for t in tokens.reshape(-1))


# --- cached results -------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=64)
def attention_patterns(source: str, tokens: tuple[int, ...]) -> np.ndarray:
    """``[layer, head, dest, src]`` patterns of one prompt (see interp.attention)."""
    from interp.attention import attention_patterns as patterns

    return patterns(load_model(source), torch.tensor([tokens])).numpy()


# --- tasks and head analysis ----------------------------------------------------------


def task_batch(model: interp.Model, n: int, seed: int) -> tasks.TaskBatch:
    """The model's own zoo task, or repeated random tokens (labels where a token repeats)."""
    recipe = zoo_recipe(model)
    if recipe is not None:
        return recipe.make_batch(n, seed)
    return tasks.repeated_tokens(n, d_vocab=model.cfg.d_vocab, n_ctx=min(model.cfg.n_ctx, 64), seed=seed)


@st.cache_data(show_spinner="Scoring heads ...", max_entries=32)
def head_scores(source: str, n: int, length: int, seed: int) -> pd.DataFrame:
    """interp.heads.scores on ``n`` [BOS] r r probes of ``length`` tokens."""
    from interp import heads

    model = load_model(source)
    return heads.scores(model, heads.default_tokens(model, n=n, length=length, seed=seed))


@st.cache_data(show_spinner="Ablating ...", max_entries=64)
def ablation(
    source: str, heads: tuple[tuple[int, int], ...], how: str, metric: str, n: int, seed: int, n_random: int
) -> pd.DataFrame:
    """interp.ablation.ablation_effect of ``heads`` on ``n`` sequences of the model's task."""
    from interp.ablation import ablation_effect

    model = load_model(source)
    return ablation_effect(
        model, task_batch(model, n, seed), list(heads), how, metric=metric, n_random=n_random, seed=seed
    )


# --- steering -------------------------------------------------------------------------


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


@st.cache_data(show_spinner="Building the steering vector ...", max_entries=64)
def steering_vector(source: str, positive: Prompts, negative: Prompts, layer: int, method: str):
    """interp.steering.SteeringVector.from_pairs at the residual stream after ``layer``; pairs of
    any lengths, each prompt read at its last token."""
    from interp.steering import SteeringVector

    return SteeringVector.from_pairs(load_model(source), list(positive), list(negative), layer=layer, method=method)


@st.cache_data(show_spinner="Sweeping layers and coefficients ...", max_entries=16)
def steering_sweep(
    source: str,
    positive: Prompts,
    negative: Prompts,
    method: str,
    layers: tuple[int, ...],
    coefs: tuple[float, ...],
    behaviour: tuple,
    evals: Prompts,
    neutral: Prompts | None,
    instruction: str | None,
    start_pos: int,
) -> pd.DataFrame:
    """interp.steering.sweep at ``layers`` x ``coefs`` with the random control (and, with an
    ``instruction``, the prompting baseline).  behaviour: ``("logodds", targets, opposites)``
    (log-odds of the target words against their opposites at each eval prompt's last token) or
    ``("prob", targets)`` (their probability at every position of equally long eval prompts)."""
    from interp.metrics import set_logodds, set_prob
    from interp.steering import ContrastPairs, sweep

    model = load_model(source)
    if behaviour[0] == "logodds":
        metric = set_logodds(list(behaviour[1]), list(behaviour[2]), pos=-1)
    else:  # every position of equally long prompts, else each prompt's last token
        batch = model.tokenize(list(evals))
        metric = set_prob(list(behaviour[1]), pos=-1 if batch.padded else [list(range(batch.tokens.shape[1]))])
    return sweep(
        model,
        ContrastPairs(list(positive), list(negative)),
        list(layers),
        list(coefs),
        list(evals),
        metric,
        method=method,
        start_pos=start_pos,
        neutral_prompts=list(neutral) if neutral else None,
        instruction=instruction or None,
        progress=False,
    )


# --- retrieval, sinks, lenses ---------------------------------------------------------

RETRIEVAL_TASKS = ("passkey", "needle_haystack")


@st.cache_data(show_spinner="Decoding the answers and reading every head's attention ...", max_entries=16)
def retrieval(
    source: str, task: str, n: int, context_length: int, depth: float | None, k: int, n_random: int, seed: int
) -> dict:
    """interp.retrieval.retrieval_experiment on ``n`` prompts of a text task: scores, sparsity,
    the masking experiment with its random control."""
    from interp.retrieval import retrieval_experiment
    from interp.tasks import text

    model = load_model(source)
    build = {"passkey": text.passkey, "needle_haystack": text.needle_haystack}[task]
    batch = build(model, n, context_length=context_length, depth=depth, seed=seed)
    e = retrieval_experiment(model, batch, k=k, n_random=n_random, seed=seed, progress=False)
    return {
        "scores": e.scores,
        "masking": e.masking,
        "sparsity": e.sparsity,
        "threshold": e.threshold,
        "heads": e.heads,
        "accuracy": e.accuracy,
        "example": model.decode(batch.batch().rows()[0], skip_bos=True),
    }


@st.cache_data(show_spinner="Needle-in-a-haystack grid ...", max_entries=8)
def niah(
    source: str, lengths: tuple[int, ...], depths: tuple[float, ...], n: int, heads: tuple[tuple[int, int], ...]
) -> pd.DataFrame:
    """interp.retrieval.niah_grid, with ``heads`` query-masked as a second condition."""
    from interp.retrieval import niah_grid

    return niah_grid(
        load_model(source), list(lengths), list(depths), n=n, heads=[tuple(h) for h in heads] or None, progress=False
    )


@st.cache_data(show_spinner="Attention sinks ...", max_entries=16)
def sinks(source: str, n: int, length: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sink share by layer and the loss with / without the first token, on text the model
    writes itself (text models) or on repeated random tokens (zoo models)."""
    from interp import heads
    from interp.heads.sinks import sink_removal, sink_share
    from interp.tasks.text import generated_text

    model = load_model(source)
    tokens = (
        generated_text(model, n, length, seed=seed)
        if text_model(model)
        else heads.default_tokens(model, n=n, length=length, seed=seed)
    )
    return sink_share(model, tokens), sink_removal(model, tokens)


@st.cache_resource(show_spinner="Training a tuned lens on text the model writes itself ...", max_entries=4)
def tuned_lens(source: str, train: bool):
    """The tuned lens saved for the model (None if none and not ``train``; else trained and saved)."""
    from interp.lens import tuned_lens_for

    return tuned_lens_for(load_model(source), train=train, progress=False)


@st.cache_data(show_spinner="Reading every layer ...", max_entries=64)
def lens(source: str, tokens: tuple[int, ...], target: int, stage: str, norm: str, tuned: bool) -> pd.DataFrame:
    """interp.lens.logit_lens of one prompt (through the saved tuned lens if ``tuned``)."""
    from interp.lens import logit_lens

    model = load_model(source)
    chosen = tuned_lens(source, False) if tuned else None
    return logit_lens(model, torch.tensor([tokens]), target=target, stage=stage, norm=norm, k=3, lens=chosen)


@st.cache_data(show_spinner="Direct logit attribution ...", max_entries=64)
def dla(source: str, tokens: tuple[int, ...], target: int, contrast: int | None) -> pd.DataFrame:
    """interp.lens.dla at the last position of one prompt."""
    from interp.lens import dla as attribute

    return attribute(load_model(source), torch.tensor([tokens]), target, contrast)


# --- patching and circuits ------------------------------------------------------------


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
    raise ValueError(f"unknown corruption {spec[0]!r}")


def ioi_batch(model: interp.Model, n: int, seed: int, corruption: str):
    """``n`` IOI prompts of the first template (one length: pairs align position by position)."""
    from interp.tasks.text import ioi

    return ioi(model, n, corruption=corruption, templates=[0], seed=seed)


IOI_METRIC = "ioi_logit_diff"


def metric_options(spec: tuple, kinds) -> list[str]:
    """The metrics a causal page offers: IOI's logit(IO) - logit(S) first for IOI inputs."""
    return ([IOI_METRIC] if spec[0] == "ioi" else []) + list(kinds)


def resolve_metric(model: interp.Model, spec: tuple, metric: str):
    """A metric name of :func:`metric_options` as what the analyses take (a name, or IOI's Metric)."""
    if metric == IOI_METRIC:
        if spec[0] != "ioi":
            raise ValueError("the IOI metric needs IOI prompts")
        return ioi_batch(model, *spec[1:]).metric()
    return metric


@st.cache_data(show_spinner="Patching ...", max_entries=32)
def patching(
    source: str,
    clean: Key,
    spec: tuple,
    site: str,
    by: tuple[str, ...],
    metric: str,
    direction: str,
    mode: str,
    window: int,
) -> pd.DataFrame:
    """circuits.patching.patch (mode "exact") or circuits.attribution.attribute ("attribution")."""
    from circuits.attribution import attribute
    from circuits.patching import patch

    model = load_model(source)
    corrupt = corruption(model, clean, spec)
    tokens = torch.tensor(clean)
    metric = resolve_metric(model, spec, metric)
    if mode == "exact":
        return patch(
            model,
            tokens,
            corrupt,
            site=site,
            by=("layer",) + by,
            metric=metric,
            direction=direction,
            window=window,
            progress=False,
        )
    return attribute(model, tokens, corrupt, site=site, by=("layer",) + by, metric=metric, direction=direction)


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
                raise ValueError(
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


@st.cache_data(show_spinner="Scoring every edge ...", max_entries=16)
def edge_scores(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int):
    """circuits.attribution.edge_attribution: the unpruned circuit with every edge scored."""
    from circuits.attribution import edge_attribution

    model = load_model(source)
    return edge_attribution(
        model,
        torch.tensor(clean),
        corruption(model, clean, spec),
        metric=resolve_metric(model, spec, metric),
        method=method,
        steps=steps,
        progress=False,
    )


@st.cache_data(show_spinner="Running the circuit ...", max_entries=128)
def faithfulness(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int, top_k: int) -> float:
    """Faithfulness of the top-k circuit of :func:`edge_scores` on the same inputs (keyed by
    its settings, not by the circuit: a 270-head model's full circuit is megabytes of JSON)."""
    model = load_model(source)
    circuit = edge_scores(source, clean, spec, metric, method, steps).prune(top_k=top_k)
    return circuit.faithfulness(
        model, torch.tensor(clean), corruption(model, clean, spec), resolve_metric(model, spec, metric)
    )


@st.cache_data(show_spinner="Faithfulness at MIB's edge budgets ...", max_entries=16)
def mib(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int) -> pd.DataFrame:
    """Circuit.mib of :func:`edge_scores`: faithfulness per edge budget, CPR / CMD with intervals."""
    model = load_model(source)
    full = edge_scores(source, clean, spec, metric, method, steps)
    return full.mib(
        model, torch.tensor(clean), corruption(model, clean, spec), resolve_metric(model, spec, metric), n_boot=200
    )
