"""Attribution patching and edge attribution (EAP, EAP-IG): gradient estimates of patching effects.

Attribution patching (Nanda 2023; Syed et al. 2023) estimates the effect of patching an
activation ``a`` from the source run into the base run by the first-order term
``(a_source - a_base) . dMetric/da`` at the base run, for every cell of every site from one
forward with gradients (plus one forward of the source run): at most 4 forward-equivalents
whatever the number of cells.  Denoising (default) takes the gradient at the corrupt run,
noising at the clean run; the frame has the columns of :func:`circuits.patching.patch`, with
``value`` the estimated metric.

Edge attribution (EAP, Syed et al. 2023; EAP-IG, Hanna et al. 2024) scores every edge
``u -> r`` of the graph of :mod:`circuits.edges` by ``(out_u(corrupt) - out_u(clean)) . g_r``,
with ``g_r`` the gradient of the metric at receiver ``r``'s own input: at the clean run (EAP),
or averaged over ``steps`` runs whose input embeddings go from corrupt to clean
(``corrupt + k/steps (clean - corrupt)``, k = 1..steps; EAP-IG).  The score estimates the
change of the metric when the edge is patched to the corrupt run (negative = the edge
carries the clean behaviour); circuits keep the edges of largest ``|score|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from circuits import edges as E
from circuits import sites
from circuits.corrupt import Corruption
from circuits.graph import Circuit
from circuits.metrics import Metric
from circuits.patching import frame, meta
from circuits.runs import check_direction, finish, inputs, sides
from interp import memory
from interp.errors import InputError, MemoryBudgetError
from interp.gradients import delta_hook, grad
from interp.runs import analysis, record
from interp.tokens import TokenBatch

METHODS = ("eap", "eap-ig")


def _grad_names(model, site: sites.Site, layer: int) -> list[str]:
    names = [site.hook(layer)]
    if site.via_mlp_in:  # the whole residual: the MLP's copy and the skip connection
        names.append(model.site("resid_post", layer))
    return names


def _reduce(prod: torch.Tensor, layout: str, axes: tuple[str, ...]) -> torch.Tensor:
    """Sum a per-element product over the batch and every axis not swept.

    Result dims: vector -> [pos?]; head -> [pos?, head?]; pattern -> [head?, pos?, src_pos?].
    """
    prod = prod.sum(0)
    if layout == "vector":
        prod = prod.flatten(1).sum(1)
        return prod if "pos" in axes else prod.sum(0)
    if layout == "head":
        prod = prod.sum(-1)  # [pos, head]
        if "head" not in axes:
            prod = prod.sum(1)
        if "pos" not in axes:
            prod = prod.sum(0)
        return prod
    if "src_pos" not in axes:  # [head, dest, src]
        prod = prod.sum(-1)
    if "pos" not in axes:
        prod = prod.sum(-1)
    if "head" not in axes:
        prod = prod.sum(0)
    return prod


@analysis("attribution", figure="circuits.plots.patching_heatmap")
def attribute(
    model,
    clean,
    corrupt,
    *,
    site: str | Sequence[str] | None = None,
    by: str | Sequence[str] | None = None,
    metric: Metric | str = "logit_diff",
    direction: str = "denoise",
) -> pd.DataFrame:
    """Attribution-patching estimate of :func:`circuits.patching.patch` for one or several sites at once.

    With several sites the frames are stacked with a ``site`` column (``by`` is cut to the
    axes each site has).  Cost: one forward of the source run and one forward + backward of
    the base run, for all sites and cells together.  Defaults (site, by) as in
    :func:`circuits.patching.patch`.  Meta: as :func:`circuits.patching.patch`'s (``engine`` is
    ``"attribution"``; ``site`` / ``by``: the first site's).
    """
    check_direction(direction)
    site, by = sites.defaults(model, site, by)  # z, or the model's per-layer equivalent (a mixer's output)
    names_in = [site] if isinstance(site, str) else list(site)
    resolved = [sites.resolve(model, s) for s in names_in]
    if isinstance(by, str):
        by = [p.strip() for p in by.replace("+", ",").split(",") if p.strip()]
    axes_per = []
    for s in resolved:
        wanted = [a for a in by if a == "layer" or a in sites.AXES[s.layout]] if len(resolved) > 1 else by
        axes_per.append(sites.parse_by(wanted, s))
    c = inputs(model, clean, corrupt)
    base_tokens, base_hooks, src_tokens, src_hooks = sides(c, direction)
    L = model.cfg.n_layers
    layers_of = {s.name: [l for l in range(L) if model.has_site(s.hook(l))] for s in resolved}  # a hybrid's: some
    act_names = sorted({s.hook(l) for s in resolved for l in layers_of[s.name]})
    grad_names = sorted({n for s in resolved for l in layers_of[s.name] for n in _grad_names(model, s, l)})
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_tokens, names=act_names, fwd_hooks=src_hooks)
    chunks = micro_batches(model, c, "attribution patching")
    runs = None
    if len(chunks) > 1:  # the metric's clean / corrupt values from whole-batch runs without gradients
        with torch.no_grad():
            full = model.run_with_hooks(base_tokens, list(base_hooks))
        pair = (src_logits, full) if direction == "denoise" else (full, src_logits)
        runs = finish(model, c, metric, *pair)
    # the estimate is a sum over prompts, so micro-batches of prompts add up to it (each weighted by
    # its share of the batch mean the metric takes)
    tables: dict[tuple[str, int], torch.Tensor] = {}
    for idx in chunks:
        base_act: dict[str, torch.Tensor] = {}
        deltas: dict[str, torch.Tensor] = {}
        with torch.enable_grad():
            base_logits = model.run_with_hooks(
                _rows(base_tokens, idx, len(chunks)),
                list(base_hooks) + [(n, delta_hook(deltas, n, base_act)) for n in grad_names],
            )
            if runs is None:  # one micro-batch: the runs of the gradient forward itself
                clean_logits, corrupt_logits = (
                    (src_logits, base_logits) if direction == "denoise" else (base_logits, src_logits)
                )
                runs = finish(model, c, metric, clean_logits, corrupt_logits.detach())
                value = runs.metric(base_logits)
            else:
                value = runs.metric.rows(idx)(base_logits) * (len(idx) / c.clean.shape[0])
            grads = dict(zip(grad_names, grad(value, [deltas[n] for n in grad_names], allow_unused=True)))
        for s, axes in zip(resolved, axes_per):
            for l in layers_of[s.name]:
                g = sum(
                    grads[n] if grads[n] is not None else torch.zeros_like(deltas[n]) for n in _grad_names(model, s, l)
                )
                diff = _rows(src_cache[s.hook(l)], idx, len(chunks)) - base_act[s.hook(l)]
                part = _reduce((diff * g).detach().float(), s.layout, axes)
                tables[(s.name, l)] = part if (s.name, l) not in tables else tables[(s.name, l)] + part
    assert runs is not None  # there is at least one micro-batch
    frames = []
    for s, axes in zip(resolved, axes_per):
        cells = sites.cells(model, s, axes, c.clean.shape[1])
        est = torch.tensor([float(tables[(s.name, cell.start)][_key(cell, s.layout, axes)]) for cell in cells])
        df = frame(cells, axes, est + runs.baseline(direction), runs, direction, False)
        if len(resolved) > 1:
            df.insert(0, "site", s.name)
        frames.append(df)
    record(**meta(runs, direction, site=resolved[0].name, engine="attribution", by=("layer",) + axes_per[0]))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def micro_batches(model, c: Corruption, what: str, bytes_per_row: float | None = None) -> list[torch.Tensor]:
    """The prompts of ``c`` in micro-batches whose forward and backward pass fit the memory budget
    (:mod:`interp.memory`; ``bytes_per_row`` defaults to a forward with gradients of one prompt):
    one batch when all fit.  A corruption acting through hooks on the whole batch (Gaussian noise)
    cannot be split, and is refused when it does not fit."""
    B, P = c.clean.shape
    per_row = bytes_per_row if bytes_per_row is not None else memory.forward_bytes_per_token(model, P, grad=True) * P
    rows = memory.rows_per_chunk(per_row, what, device=model.device)
    if rows >= B:
        return [torch.arange(B)]
    if c.hooks:
        raise MemoryBudgetError(
            f"{what} of {B} prompts needs about {B * per_row / 2**20:.0f} MB at once, over the memory budget "
            f"({memory.budget_bytes(model.device) / 2**20:.0f} MB, INTERP_MEMORY_MB), and its corruption "
            f"({c.description}) acts on the whole batch, so it cannot be split: use fewer prompts or a larger budget"
        )
    return [torch.arange(i, min(B, i + rows)) for i in range(0, B, rows)]


def _rows(x, idx: torch.Tensor, n_chunks: int):
    """Rows ``idx`` of tokens (a tensor or a TokenBatch) or of an activation (the whole of it when
    there is one micro-batch)."""
    if n_chunks == 1:
        return x
    if isinstance(x, TokenBatch):
        return x.select(idx)
    return x[idx.to(x.device)]


def _key(cell: sites.Cell, layout: str, axes: tuple[str, ...]) -> tuple:
    order: tuple[str, ...]
    if layout == "pattern":
        order = ("head", "pos", "src_pos")
    else:
        order = ("pos", "head")
    return tuple(getattr(cell, a) for a in order if a in axes)


@analysis("edge_attribution", to_frame=lambda circuit, meta: circuit.edges_frame())
def edge_attribution(
    model,
    clean,
    corrupt,
    *,
    metric: Metric | str = "logit_diff",
    method: str = "eap-ig",
    steps: int = 5,
    progress: bool = True,
) -> Circuit:
    """Scores of every edge of the model's graph (EAP or EAP-IG) as an unpruned :class:`Circuit`.

    steps: interpolation points of EAP-IG (default 5).  Cost: 2 forwards + ``steps`` (EAP: 1)
    forward-backward passes.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive int, got {steps!r}")
    graph = E.Graph.of(model)
    weights = model.weights()
    E.check_rebuild(model, weights)
    c = inputs(model, clean, corrupt)
    # per prompt: the upstream nodes' outputs (clean, corrupt, their difference, the interpolated
    # input) and the receivers' gradients (summed over steps), d_model floats per position each,
    # beside a forward with gradients
    B, P = c.clean.shape
    per_row = P * (
        4 * model.cfg.d_model * (4 * graph.n_upstream() + 3 * len(graph.receivers()))
        + memory.forward_bytes_per_token(model, P, grad=True)
    )
    chunks = micro_batches(model, c, f"edge attribution ({method})", per_row)
    if len(chunks) > 1:
        return _edge_attribution_in_parts(model, graph, c, chunks, metric, method, steps, progress)
    names = E.cache_names(model, graph)
    with torch.no_grad():
        corrupt_b, clean_b = c.batches()
        clean_logits, clean_cache = model.run_with_cache(clean_b, names=names)
        corrupt_logits, corrupt_cache = model.run_with_cache(corrupt_b, names=names, fwd_hooks=c.hooks)
    runs = finish(model, c, metric, clean_logits, corrupt_logits)
    out_clean = E.outputs_from_cache(model, clean_cache, graph, weights)
    out_corrupt = E.outputs_from_cache(model, corrupt_cache, graph, weights)
    alphas = [1.0] if method == "eap" else [k / steps for k in range(1, steps + 1)]
    grad_sum = None
    for a in tqdm(alphas, desc=method, disable=not progress or len(alphas) == 1, leave=False):
        x0 = out_corrupt.input + a * (out_clean.input - out_corrupt.input)
        eps: dict = {}
        with torch.enable_grad():
            logits = E.run(model, weights, graph, clean_b, input_value=x0, eps=eps)
            value = runs.metric(logits)
            keys = list(eps)
            grads = dict(zip(keys, grad(value, [eps[k] for k in keys])))
        g = E.receiver_grads(eps, grads, graph).detach()
        grad_sum = g if grad_sum is None else grad_sum + g
    assert grad_sum is not None  # alphas is not empty (steps >= 1)
    g = grad_sum / len(alphas)  # [R, batch, pos, d]
    delta = (out_corrupt.stacked(graph) - out_clean.stacked(graph)).detach()  # [U, batch, pos, d]
    scores = delta.flatten(1).double() @ g.flatten(1).double().T  # [U, R]
    scores = scores.masked_fill(~graph.valid(), float("nan"))
    meta = dict(
        model=model.cfg.name,
        method=method,
        steps=len(alphas),
        metric=runs.metric.label,
        clean_value=runs.clean_value,
        corrupt_value=runs.corrupt_value,
        corruption=runs.description,
        n_layers=model.cfg.n_layers,
        n_heads=model.cfg.n_heads,
        n_kv_heads=model.cfg.n_kv_heads,
    )
    record(**meta)  # a Result's frame is the circuit's edges_frame()
    return Circuit.from_scores(graph, scores.float(), meta=meta)


def _edge_attribution_in_parts(model, graph, c: Corruption, chunks, metric, method, steps, progress) -> Circuit:
    """:func:`edge_attribution` of micro-batches of the prompts, combined: each edge's score is a
    mean over prompts of a per-prompt product, so the parts' scores weighted by their share of the
    prompts add up to the whole batch's (and so do the metric's clean / corrupt values)."""
    B = c.clean.shape[0]
    parts, weights = [], []
    for idx in tqdm(chunks, desc=f"{method} micro-batches", disable=not progress, leave=False):
        lengths = c.lengths[idx] if c.lengths is not None else None
        sub = Corruption(c.tokens[idx], c.clean[idx], [], 1, c.description, lengths)
        clean = TokenBatch(sub.clean, lengths) if lengths is not None else sub.clean
        rows_metric = metric.rows(idx) if isinstance(metric, Metric) else metric
        parts.append(
            edge_attribution(model, clean, sub, metric=rows_metric, method=method, steps=steps, progress=False)
        )
        weights.append(len(idx) / B)
    scores = sum(w * p.scores for w, p in zip(weights, parts))
    meta = {k: v for k, v in parts[0].meta.items() if k not in ("kv_groups", "graph")}
    for key in ("clean_value", "corrupt_value"):
        meta[key] = float(sum(w * p.meta[key] for w, p in zip(weights, parts)))
    meta["micro_batches"] = len(chunks)
    assert isinstance(scores, torch.Tensor)  # a weighted sum of the parts' score matrices
    record(**meta)  # each part recorded its own meta (nested analyses); this is the whole batch's
    return Circuit.from_scores(graph, scores, meta=meta)
