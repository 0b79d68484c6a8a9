"""Cached analysis results (``st.cache_data`` through :func:`apps.state.models.cached`, keyed by
the model source, the session's device and dtype, and hashable specs of the inputs); each calls
one library function through :func:`interp.runs.run` (so the page has the frame, the analysis's
context and its provenance, ready to save) and adds nothing mathematical."""

from __future__ import annotations

import streamlit as st
import torch

from apps.state.inputs import Key, Prompts, corruption, resolve_metric, task_batch, text_model
from apps.state.models import cached, load_model
from interp.runs import Result, run


@cached(show_spinner=False, max_entries=64)
def attention_patterns(source: str, tokens: tuple[int, ...]) -> Result:
    """interp.attention.attention_patterns of one prompt: the tidy frame, and the
    ``[layer, head, dest, src]`` tensor as ``value``."""
    from interp.attention import attention_patterns as patterns

    return run(patterns, load_model(source), torch.tensor([tokens]))


@cached(show_spinner="Running every analysis on a small probe ...", max_entries=8)
def support(source: str) -> Result:
    """interp.support: which analyses run on the model and which decline (with the reason)."""
    from interp.capabilities import support as check

    return run(check, load_model(source))


@cached(show_spinner="Scoring heads ...", max_entries=32)
def head_scores(source: str, n: int, length: int, seed: int) -> Result:
    """interp.heads.scores on ``n`` [BOS] r r probes of ``length`` tokens."""
    from interp import heads

    model = load_model(source)
    return run(heads.scores, model, heads.default_tokens(model, n=n, length=length, seed=seed))


@cached(show_spinner="Ablating ...", max_entries=64)
def ablation(
    source: str, heads: tuple[tuple[int, int], ...], how: str, metric: str, n: int, seed: int, n_random: int
) -> Result:
    """interp.ablation.ablation_effect of ``heads`` on ``n`` sequences of the model's task."""
    from interp.ablation import ablation_effect

    model = load_model(source)
    return run(
        ablation_effect,
        model,
        task_batch(model, n, seed),
        list(heads),
        how,
        metric=metric,
        n_random=n_random,
        seed=seed,
    )


@cached(show_spinner="Building the steering vector ...", max_entries=64)
def steering_vector(source: str, positive: Prompts, negative: Prompts, layer: int, method: str):
    """interp.steering.SteeringVector.from_pairs at the residual stream after ``layer``; pairs of
    any lengths, each prompt read at its last token."""
    from interp.steering import SteeringVector

    return SteeringVector.from_pairs(load_model(source), list(positive), list(negative), layer=layer, method=method)


@cached(show_spinner="Sweeping layers and coefficients ...", max_entries=16)
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
) -> Result:
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
    return run(
        sweep,
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


RETRIEVAL_TASKS = ("passkey", "needle_haystack")


@cached(show_spinner="Decoding the answers and reading every head's attention ...", max_entries=16)
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
    r = run(retrieval_experiment, model, batch, k=k, n_random=n_random, seed=seed, progress=False)
    e = r.value
    return {
        "run": r,  # frame: the scores; meta: the masking experiment
        "scores": e.scores,
        "masking": e.masking,
        "sparsity": e.sparsity,
        "threshold": e.threshold,
        "heads": e.heads,
        "accuracy": e.accuracy,
        "example": model.decode(batch.batch().rows()[0], skip_bos=True),
    }


@cached(show_spinner="Needle-in-a-haystack grid ...", max_entries=8)
def niah(
    source: str, lengths: tuple[int, ...], depths: tuple[float, ...], n: int, heads: tuple[tuple[int, int], ...]
) -> Result:
    """interp.retrieval.niah_grid, with ``heads`` query-masked as a second condition and as many
    random heads masked as the control."""
    from interp.retrieval import niah_grid

    chosen = [(int(l), int(h)) for l, h in heads]
    return run(
        niah_grid,
        load_model(source),
        list(lengths),
        list(depths),
        n=n,
        heads=chosen or None,
        n_random=int(bool(chosen)),
        progress=False,
    )


@cached(show_spinner="Attention sinks ...", max_entries=16)
def sinks(source: str, n: int, length: int, seed: int) -> tuple[Result, Result]:
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
    return run(sink_share, model, tokens), run(sink_removal, model, tokens)


@st.cache_resource(show_spinner="Training a tuned lens on text the model writes itself ...", max_entries=4)
def tuned_lens(source: str, train: bool):
    """The tuned lens saved for the model (None if none and not ``train``; else trained and saved)."""
    from interp.lens import tuned_lens_for

    return tuned_lens_for(load_model(source), train=train, progress=False)


@cached(show_spinner="Reading every layer ...", max_entries=64)
def lens(source: str, tokens: tuple[int, ...], target: int, stage: str, norm: str, tuned: bool) -> Result:
    """interp.lens.logit_lens of one prompt (through the saved tuned lens if ``tuned``)."""
    from interp.lens import logit_lens

    model = load_model(source)
    chosen = tuned_lens(source, False) if tuned else None
    return run(logit_lens, model, torch.tensor([tokens]), target=target, stage=stage, norm=norm, k=3, lens=chosen)


@cached(show_spinner="Direct logit attribution ...", max_entries=64)
def dla(source: str, tokens: tuple[int, ...], target: int, contrast: int | None) -> Result:
    """interp.lens.dla at the last position of one prompt."""
    from interp.lens import dla as attribute

    return run(attribute, load_model(source), torch.tensor([tokens]), target, contrast)


@cached(show_spinner="Patching ...", max_entries=32)
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
) -> Result:
    """circuits.patching.patch (mode "exact") or circuits.attribution.attribute ("attribution")."""
    from circuits.attribution import attribute
    from circuits.patching import patch

    model = load_model(source)
    corrupt = corruption(model, clean, spec)
    tokens = torch.tensor(clean)
    metric = resolve_metric(model, spec, metric)
    if mode == "exact":
        return run(
            patch,
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
    return run(attribute, model, tokens, corrupt, site=site, by=("layer",) + by, metric=metric, direction=direction)


@cached(show_spinner="Scoring every edge ...", max_entries=16)
def edge_scores(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int) -> Result:
    """circuits.attribution.edge_attribution: every edge scored (the frame), the unpruned circuit
    as ``value``."""
    from circuits.attribution import edge_attribution

    model = load_model(source)
    return run(
        edge_attribution,
        model,
        torch.tensor(clean),
        corruption(model, clean, spec),
        metric=resolve_metric(model, spec, metric),
        method=method,
        steps=steps,
        progress=False,
    )


@cached(show_spinner="Running the circuit ...", max_entries=128)
def faithfulness(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int, top_k: int) -> float:
    """Faithfulness of the top-k circuit of :func:`edge_scores` on the same inputs (keyed by
    its settings, not by the circuit: a 270-head model's full circuit is megabytes of JSON)."""
    model = load_model(source)
    circuit = edge_scores(source, clean, spec, metric, method, steps).value.prune(top_k=top_k)
    return circuit.faithfulness(
        model, torch.tensor(clean), corruption(model, clean, spec), resolve_metric(model, spec, metric)
    )


@cached(show_spinner="Finding the smallest faithful circuit ...", max_entries=32)
def smallest_faithful(
    source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int, sizes: tuple[int, ...], target: float
) -> tuple[int, float]:
    """circuits.faithfulness.smallest_faithful of :func:`edge_scores`: the fewest top-k edges of
    ``sizes`` whose circuit reaches faithfulness ``target``, and its faithfulness."""
    from circuits.faithfulness import smallest_faithful as bisect

    model = load_model(source)
    full = edge_scores(source, clean, spec, metric, method, steps).value
    return bisect(
        full,
        model,
        torch.tensor(clean),
        corruption(model, clean, spec),
        resolve_metric(model, spec, metric),
        target=target,
        sizes=list(sizes),
    )


@cached(show_spinner="Faithfulness at MIB's edge budgets ...", max_entries=16)
def mib(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int) -> Result:
    """circuits.faithfulness.mib of :func:`edge_scores`: faithfulness per edge budget, CPR / CMD
    with intervals."""
    from circuits.faithfulness import mib as at_budgets

    model = load_model(source)
    full = edge_scores(source, clean, spec, metric, method, steps).value
    return run(
        at_budgets,
        full,
        model,
        torch.tensor(clean),
        corruption(model, clean, spec),
        resolve_metric(model, spec, metric),
        n_boot=200,
    )


@cached(show_spinner=False, max_entries=64)
def answers(source: str, clean: Key, spec: tuple) -> tuple[int, int | None]:
    """The answer and wrong token of the first clean prompt, as the causal pages' logit
    difference reads them (circuits.runs.prepare: IOI's indirect object and subject, else the clean
    and the corrupt run's predictions at the last position); wrong is None under noise corruption
    (no corrupt prompt to take it from)."""
    from circuits.runs import prepare

    model = load_model(source)
    c = corruption(model, clean, spec)
    metric = resolve_metric(model, spec, "ioi_logit_diff" if spec[0] == "ioi" else "logit_diff")
    prepared = prepare(model, torch.tensor(clean), c, metric if spec[0] != "noise" else "logit")
    m = prepared.metric
    wrong = None if m.wrong is None else int(m.wrong.reshape(len(clean), -1)[0, 0])
    return int(m.answer.reshape(len(clean), -1)[0, 0]), wrong


@cached(show_spinner="Saliency of every token ...", max_entries=32)
def saliency(source: str, tokens: tuple[int, ...]) -> torch.Tensor:
    """interp.saliency.token_saliency of one prompt: ``[dest, src]``, rows summing to 1."""
    from interp.saliency import token_saliency

    return token_saliency(load_model(source), torch.tensor([tokens]))


@cached(show_spinner="The SSM's hidden attention ...", max_entries=32)
def ssm_read(source: str, tokens: tuple[int, ...], layer: int) -> torch.Tensor:
    """interp.saliency.ssm_read of one prompt at one SSM layer: ``[dest, src]``, rows summing to 1."""
    from interp.saliency import ssm_read as read

    return read(load_model(source), torch.tensor([tokens]), layer)
