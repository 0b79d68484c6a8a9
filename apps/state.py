"""Shared state of the app pages: the chosen model (cached once per process), the prompt
widget every page uses, cached analysis results, and the one way errors are shown.

Pages call library functions only; this module adds caching and widgets, no maths.
Models are cached with ``st.cache_resource`` (one instance shared by all sessions, never
copied); results with ``st.cache_data`` keyed by the model source and the token ids.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

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
    st.sidebar.markdown(f"**Model:** `{current_source()}`  \n{c.family}, {c.n_layers} layers"
                        + (f", {c.n_heads} heads" if c.n_heads else "") + f", d_model {c.d_model}, "
                        f"vocab {c.d_vocab}, context {c.n_ctx}")


def zoo_recipe(model: interp.Model):
    """The zoo recipe a model was trained with, or None for other models."""
    from interp.zoo.recipes import RECIPES

    name = (model.card.get("recipe") or {}).get("name") or model.card.get("name")
    return RECIPES.get(name)


# --- prompts --------------------------------------------------------------------------

def example_text(model: interp.Model, length: int = 25, period: int = 8) -> str:
    """A repeated-random-tokens prompt written in the model's own token syntax."""
    length = min(length, model.cfg.n_ctx)
    toks = tasks.repeated_tokens(1, d_vocab=model.cfg.d_vocab, n_ctx=length, period=min(period, length - 2),
                                 seed=1).tokens[0]
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
        syntax = ("named tokens separated by spaces (e.g. `BOS t5 t9`) or integer ids"
                  if model.word_level else "text for the model's tokenizer")
        text = st.text_area(f"Tokens: {syntax}", value=example_text(model), key=f"{key}_text", height=80)
        with friendly("bad prompt"):
            return model.to_tokens(text)
    cols = st.columns(3)
    seed = cols[0].number_input("seed", 0, 10_000, 0, key=f"{key}_seed")
    if mode == PROMPT_MODES[1]:
        n_ctx = model.cfg.n_ctx
        length = cols[1].number_input("length (tokens, with BOS)", 4, n_ctx, min(n_ctx, 33), key=f"{key}_len")
        period = cols[2].number_input("period (segment length)", 1, max(1, n_ctx - 2), min(10, n_ctx - 2),
                                      key=f"{key}_period")
        with friendly("bad generator settings"):
            batch = tasks.repeated_tokens(1, d_vocab=model.cfg.d_vocab, n_ctx=int(length), period=int(period),
                                          seed=int(seed))
            return model.validate_tokens(batch.tokens)
    with friendly("zoo task"):
        return model.validate_tokens(recipe.make_batch(1, int(seed)).tokens[:1])


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
def ablation(source: str, heads: tuple[tuple[int, int], ...], how: str, metric: str, n: int, seed: int,
             n_random: int) -> pd.DataFrame:
    """interp.ablation.ablation_effect of ``heads`` on ``n`` sequences of the model's task."""
    from interp.ablation import ablation_effect

    model = load_model(source)
    return ablation_effect(model, task_batch(model, n, seed), list(heads), how, metric=metric,
                           n_random=n_random, seed=seed)


# --- steering -------------------------------------------------------------------------

def contrast_pairs(model: interp.Model, n: int, seed: int) -> tasks.ContrastPairs | None:
    """The contrast pairs of the model's zoo task, where it has them (steer-2l: mode B vs mode A)."""
    recipe = zoo_recipe(model)
    if recipe is None or recipe.task != "mode_sequences":
        return None
    return tasks.mode_contrast_pairs(n, d_vocab=model.cfg.d_vocab, n_ctx=min(16, model.cfg.n_ctx), seed=seed)


@st.cache_data(show_spinner="Building the steering vector ...", max_entries=64)
def steering_vector(source: str, positive: tuple[tuple[int, ...], ...], negative: tuple[tuple[int, ...], ...],
                    layer: int, method: str):
    """interp.steering.SteeringVector.from_pairs at the residual stream after ``layer``."""
    from interp.steering import SteeringVector

    return SteeringVector.from_pairs(load_model(source), torch.tensor(positive), torch.tensor(negative),
                                     layer=layer, method=method)


@st.cache_data(show_spinner="Sweeping layers and coefficients ...", max_entries=16)
def steering_sweep(source: str, positive: tuple[tuple[int, ...], ...], negative: tuple[tuple[int, ...], ...],
                   method: str, coefs: tuple[float, ...], targets: tuple[int, ...], start_pos: int) -> pd.DataFrame:
    """interp.steering.sweep over every layer: behaviour = probability of ``targets`` on the
    negative prompts, with the random control."""
    from interp.metrics import set_prob
    from interp.steering import sweep

    model = load_model(source)
    neg = torch.tensor(negative)
    everywhere = set_prob(list(targets), pos=[list(range(neg.shape[1]))])
    return sweep(model, (torch.tensor(positive), neg), None, list(coefs), neg, everywhere,
                 method=method, start_pos=start_pos, progress=False)


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
    ``("tokens", corrupt key)``, ``("replace", positions, seed)`` or ``("noise", positions, n_samples, seed)``."""
    from circuits import corrupt as C

    tokens = torch.tensor(clean)
    if spec[0] == "tokens":
        return C.symmetric(model.validate_tokens(tokens), model.validate_tokens(torch.tensor(spec[1])))
    if spec[0] == "replace":
        return C.replaced(tokens, list(spec[1]), d_vocab=model.cfg.d_vocab, seed=spec[2])
    if spec[0] == "noise":
        return C.gaussian_noise(model, tokens, list(spec[1]), n_samples=spec[2], seed=spec[3])
    raise ValueError(f"unknown corruption {spec[0]!r}")


@st.cache_data(show_spinner="Patching ...", max_entries=32)
def patching(source: str, clean: Key, spec: tuple, site: str, by: tuple[str, ...], metric: str, direction: str,
             mode: str, window: int) -> pd.DataFrame:
    """circuits.patching.patch (mode "exact") or circuits.attribution.attribute ("attribution")."""
    from circuits.attribution import attribute
    from circuits.patching import patch

    model = load_model(source)
    corrupt = corruption(model, clean, spec)
    tokens = torch.tensor(clean)
    if mode == "exact":
        return patch(model, tokens, corrupt, site=site, by=("layer",) + by, metric=metric, direction=direction,
                     window=window, progress=False)
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

    mode = st.radio("Clean and corrupt inputs", INPUTS, horizontal=True, key=f"{key}_inputs")
    if mode == INPUTS[0]:
        example = (task_batch(model, 1, 0).tokens if zoo_recipe(model) is not None
                   else model.to_tokens(example_text(model)))
        # default corruption: the last token replaced by the first earlier token that differs from it
        # (in recall, another key; in repeated tokens, a token whose successor is known)
        other = next((int(t) for t in example[0, 1:-1] if int(t) != int(example[0, -1])), None)
        corrupted = replace_tokens(example, [-1], d_vocab=model.cfg.d_vocab, low=1, seed=0, replacement=other)
        left, right = st.columns(2)
        clean_text = left.text_area("Clean prompt", tokens_text(model, example), key=f"{key}_clean", height=100)
        corrupt_text = right.text_area("Corrupt prompt (same number of tokens)", tokens_text(model, corrupted),
                                       key=f"{key}_corrupt", height=100)
        with friendly("bad prompts"):
            clean = model.to_tokens(clean_text)
            corrupt = model.to_tokens(corrupt_text)
            if clean.shape != corrupt.shape:
                raise ValueError(f"the clean prompt has {clean.shape[1]} tokens and the corrupt one "
                                 f"{corrupt.shape[1]}: they must be aligned position by position")
        return batch_key(clean), ("tokens", batch_key(corrupt))
    cols = st.columns(4)
    n = cols[0].number_input("sequences", 1, 256, 16, key=f"{key}_n")
    seed = cols[1].number_input("seed", 0, 10_000, 0, key=f"{key}_seed")
    how = cols[2].selectbox("corruption", ("replace tokens", "gaussian noise"), key=f"{key}_how",
                            help="replace: random other tokens at the positions (symmetric token replacement); "
                                 "noise: 3x the embedding std added there (ROME), averaged over 5 samples")
    with cols[3]:
        positions = _positions_input("positions", "-1", f"{key}_positions")
    with friendly("task"):
        batch = task_batch(model, int(n), int(seed)).tokens
        clean_key = batch_key(batch)
        spec = ("replace", positions, int(seed)) if how == "replace tokens" else ("noise", positions, 5, int(seed))
        example = corruption(model, clean_key, spec).tokens[:1]
    st.caption(f"first clean: `{tokens_text(model, batch[0])}`  \n"
               f"first corrupt: `{tokens_text(model, example[0])}`" + (" (+ noise)" if spec[0] == "noise" else ""))
    return clean_key, spec


@st.cache_data(show_spinner="Scoring every edge ...", max_entries=16)
def edge_scores(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int):
    """circuits.attribution.edge_attribution: the unpruned circuit with every edge scored."""
    from circuits.attribution import edge_attribution

    model = load_model(source)
    return edge_attribution(model, torch.tensor(clean), corruption(model, clean, spec), metric=metric,
                            method=method, steps=steps, progress=False)


@st.cache_data(show_spinner="Running the circuit ...", max_entries=128)
def faithfulness(source: str, clean: Key, spec: tuple, metric: str, circuit_json: str) -> float:
    """Faithfulness of a pruned circuit (given as its JSON, the cache key) on the same inputs."""
    from circuits.graph import Circuit

    model = load_model(source)
    return Circuit.from_json(circuit_json).faithfulness(model, torch.tensor(clean), corruption(model, clean, spec),
                                                        metric)
