"""Exact activation patching (Zhang & Nanda 2023): every standard sweep as one tidy DataFrame.

``patch(model, clean, corrupt, site="z", by=("layer", "pos", "head"), metric=...)`` patches one
activation at a time, denoising (clean activations into the corrupt run) or noising
(corrupt activations into the clean run), and reports the metric of each patched run.

Sites (:mod:`circuits.sites`): ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``,
``mlp_in``, ``mlp_out``, per head ``z`` (the head's output), ``q``, ``k``, ``v``, ``pattern``;
for RNNs and SSMs ``hidden``, ``cell``, ``state`` (a patch at step t changes every later
step), or any per-layer template ``blocks.{l}.hook_...``.  Sweeps go by layer and, as
asked, position, head and (patterns) source position; ``window=w`` patches w consecutive
layers at once and reports single layers beside the windows.

Results equal ``transformer_lens.patching.get_act_patch_*`` for the sites both offer
(TransformerLens 4.x's ``resid_mid`` on a native bridge patches only the MLP's input: that is
our ``mlp_in``; our ``resid_mid`` patches the whole residual stream).
Engines: ``native`` recomputes only what lies downstream of each patch by running the model's
own layers from a cached prefix (every model with a key-value cache whose recomputation it
checks equal to the model's forward; see :mod:`interp.recompute`); ``hooks`` batches cells
through forward hooks (every model); ``auto`` picks native where it applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from circuits import engine_hooks, sites
from circuits.corrupt import Corruption
from circuits.metrics import Metric
from circuits.runs import Runs, check_direction, inputs, prepare
from interp import cells, memory
from interp import executor as executors
from interp import recompute as engine_fast
from interp import sites as S
from interp.errors import InputError
from interp.executor import Executor
from interp.runs import analysis, record
from interp.tokens import TokenBatch

ENGINES = ("auto", "native", "blocks", "layers", "hooks")
_UPSTREAM = ("hook_embed", "hook_pos_embed", "embed.", "pos_embed.")  # hooks before every block


@analysis("patching", figure="circuits.plots.patching_heatmap")
def patch(
    model,
    clean,
    corrupt,
    *,
    site: str | None = None,
    by: str | Sequence[str] | None = None,
    metric: Metric | str = "logit_diff",
    direction: str = "denoise",
    window: int = 1,
    layers: Iterable[int] | None = None,
    positions: Iterable[int] | None = None,
    heads: Iterable[int] | None = None,
    engine: str = "auto",
    batch_tokens: int | None = None,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> pd.DataFrame:
    """Activation patching sweep over ``site`` by ``by``; one row per cell.

    site: default ``z`` (a head's output), or on a model without heads its per-layer equivalent
    (:data:`circuits.sites.DEFAULT_SITES`: a recurrent mixer's output, a toy RNN's hidden state);
    by: default layer, position and (per-head sites) head.

    clean: tokens ``[batch, pos]`` (or text).  corrupt: aligned corrupt tokens / text or a
    :class:`circuits.corrupt.Corruption`.  metric: a :class:`circuits.metrics.Metric` or a
    kind name.  direction: ``denoise`` | ``noise``.  window: layers patched together (rows
    for window 1 are included; then ``window`` and ``layers`` columns say which).
    layers / positions / heads: restrict the sweep.  batch_tokens: tokens per forward (default:
    as many as fit the memory budget, estimated from the model's shapes: :mod:`interp.memory`).
    executor: ``"local"`` (default, this process) or ``"ray"`` (chunks of cells on a Ray cluster,
    :mod:`interp.executor`; the model must be loaded by name or path, the corruption made of
    tokens); an :class:`interp.executor.Executor` for its options (workers, threads, retries).
    The frame is the same either way (cells in the same order, one row each); the meta's
    ``executor`` reports the chunks and any retried failures.

    Columns: ``layer`` (first layer of the window), [``window``, ``layers``], [``pos``],
    [``head``], [``src_pos``], ``value`` (the metric of the patched run, batch mean),
    ``effect`` (value minus the unpatched base run's value) and ``normalised``
    ((value - corrupt) / (clean - corrupt): 1 = the clean run's metric, 0 = the corrupt run's).
    Meta (``interp.runs.run(patch, ...).meta``): ``metric`` (its label), ``direction``,
    ``clean_value`` / ``corrupt_value`` (the unpatched runs' metric), ``baseline``,
    ``corruption``, ``site``, ``engine``, ``by``, ``cells_run`` (cells that needed a forward) and
    ``executor`` (its name, workers, chunks, retried failures).
    """
    check_direction(direction)
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    site, by = sites.defaults(model, site, by)
    assert isinstance(site, str)  # one site here: defaults() keeps a given str
    site_ = sites.resolve(model, site)
    axes = sites.parse_by(by, site_)
    sites.windows(model.cfg.n_layers, window)
    ex = executors.get(executor)
    if isinstance(ex, executors.Local):
        runs = prepare(model, clean, corrupt, metric)
        cell_list = sites.cells(
            model, site_, axes, runs.clean.shape[1], window=window, layers=layers, positions=positions, heads=heads
        )
        batch_tokens = memory.batch_tokens(model, runs.clean.shape, batch_tokens, what="patching")
        values, used, n_run = run_cells(
            model,
            runs,
            site_,
            cell_list,
            direction=direction,
            engine=engine,
            batch_tokens=batch_tokens,
            progress=progress,
        )
    else:
        c = inputs(model, clean, corrupt)  # validated here; every forward runs on the workers
        cell_list = sites.cells(
            model, site_, axes, c.clean.shape[1], window=window, layers=layers, positions=positions, heads=heads
        )
        runs, values, used, n_run = _run_on(
            ex, model, c, metric, site_, cell_list, direction, engine, batch_tokens, progress
        )
    record(
        **meta(
            runs,
            direction,
            site=site_.name,
            engine=used,
            by=("layer",) + axes,
            cells_run=n_run,
            executor=ex.report.to_dict(),
        )
    )
    return frame(cell_list, axes, values, runs, direction, window > 1)


def _run_on(ex, model, c: Corruption, metric, site, cell_list, direction, engine, batch_tokens, progress):
    """The sweep on an executor's workers, in chunks of prompts and of cells: ``(runs, values
    [n_cells], engine, cells run)``.  Prompts are split first (each worker then runs only its own
    prompts' clean and corrupt forwards), cells where there are fewer prompts than chunks.  Each
    chunk is :func:`circuits.runs.prepare` + :func:`run_cells` on its prompts; the metric values
    (batch means) of the prompt groups are averaged, weighted by their prompts, and the cells come
    back in their order, one value each."""
    if c.hooks:
        raise InputError(
            f"executor={ex.name!r} ships token corruptions to its workers; this corruption "
            f"({c.description or 'hooks on the corrupt run'}) acts through hooks of this process's model: "
            "use executor='local'"
        )
    B = c.clean.shape[0]
    n = ex.n_chunks(B * len(cell_list))
    groups = executors.split(range(B), min(B, n))
    parts = executors.split(cell_list, -(-n // len(groups)))
    if isinstance(metric, Metric):  # a metric of the whole batch: resolved, then cut per prompt group
        metric = metric.check(B, c.clean.shape[1], model.cfg.d_vocab).resolve(c.clean.shape[1], c.lengths)
    jobs = []
    for rows in groups:
        idx = torch.tensor(rows)
        lengths = c.lengths[idx].cpu() if c.lengths is not None else None
        clean_rows = c.clean[idx].cpu()
        for cells_part in parts:
            jobs.append(
                dict(
                    clean=clean_rows if lengths is None else TokenBatch(clean_rows, lengths),
                    corrupt=Corruption(c.tokens[idx].cpu(), clean_rows, [], 1, c.description, lengths),
                    metric=metric.rows(idx) if isinstance(metric, Metric) else metric,
                    site=site,
                    cells=cells_part,
                    direction=direction,
                    engine=engine,
                    batch_tokens=batch_tokens,
                )
            )
    done = ex.map(
        _cells_task,
        model,
        jobs,
        desc=f"patching {site.name} ({ex.name})",
        progress=progress,
        size=lambda job: len(job["cells"]) * len(job["corrupt"].tokens),
    )
    # prompt group g, cell part k is done[g * len(parts) + k]
    w = [len(rows) / B for rows in groups]
    values = torch.zeros(len(cell_list), dtype=torch.float64)
    start = 0
    for k, cells_part in enumerate(parts):
        got = [done[g * len(parts) + k]["values"] for g in range(len(groups))]
        if any(len(v) != len(cells_part) for v in got):  # never a silently missing row
            raise RuntimeError(f"a chunk returned {[len(v) for v in got]} values for {len(cells_part)} cells")
        values[start : start + len(cells_part)] = sum(wg * v.double() for wg, v in zip(w, got))
        start += len(cells_part)
    first = [done[g * len(parts)] for g in range(len(groups))]
    clean_value = float(sum(wg * d["clean_value"] for wg, d in zip(w, first)))
    corrupt_value = float(sum(wg * d["corrupt_value"] for wg, d in zip(w, first)))
    runs = Runs(
        c.clean,
        c.tokens,
        [],
        first[0]["metric"],
        torch.empty(0),  # the logits stayed on the workers
        torch.empty(0),
        clean_value,
        corrupt_value,
        c.description,
        c.lengths,
    )
    n_run = sum(max(done[g * len(parts) + k]["cells_run"] for g in range(len(groups))) for k in range(len(parts)))
    return runs, values.float(), done[0]["engine"], n_run


def _cells_task(model, job: dict) -> dict:
    """One chunk of a sweep in a worker (see :func:`_run_on`)."""
    runs = prepare(model, job["clean"], job["corrupt"], job["metric"])
    values, used, n_run = run_cells(
        model,
        runs,
        job["site"],
        job["cells"],
        direction=job["direction"],
        engine=job["engine"],
        batch_tokens=job["batch_tokens"],
        progress=False,
    )
    return dict(
        values=values.cpu(),
        engine=used,
        cells_run=n_run,
        clean_value=runs.clean_value,
        corrupt_value=runs.corrupt_value,
        metric=runs.metric,
    )


def choose_engine(model, site: sites.Site, base_hooks: list, engine: str = "auto"):
    """``(name, engine)``: a downstream-only engine where one reproduces the model (``"native"``:
    the fastest of the hand-written block engine, :mod:`interp.recompute_blocks`, and the generic
    layer engine, :mod:`interp.recompute`; ``"blocks"`` / ``"layers"`` ask for one of them), else
    ``("hooks", None)`` (every model).  Asking for a downstream engine that cannot run raises,
    saying why."""
    from interp import recompute_blocks

    reasons = []
    if site.name in S.STATE_KINDS:
        reasons.append(
            "a per-step state site lives in the model's decoding cache, which only the hooks engine steps through"
        )
    if model.active_hooks:
        reasons.append("hooks are active (Model.hooks()), which its partial forwards would bypass")
    if not all(isinstance(n, str) and n.startswith(_UPSTREAM) for n, _ in base_hooks):
        reasons.append("the corruption hooks act beyond the embeddings")
    eng = None
    if not reasons:
        if engine in ("auto", "native"):
            eng = engine_fast.engine_for(model, site.name)
            if eng is None:
                reasons.append(engine_fast.why_not(model) or "no downstream engine reproduces it")
        elif engine == "blocks":
            if site.name in recompute_blocks.ENTRY and recompute_blocks.supports(model):
                eng = recompute_blocks.BlockEngine(model)
            else:
                reasons.append("the block engine does not implement this model or site")
        elif engine == "layers":
            why = engine_fast.why_not(model)
            eng = None if why else engine_fast.Downstream(model)
            if why:
                reasons.append(why)
    if engine in ("native", "blocks", "layers") and eng is None:
        raise InputError(f"engine={engine!r} cannot run here: {'; '.join(reasons)}; use engine='hooks' or 'auto'")
    return ("hooks", None) if eng is None else ("native", eng)


def run_cells(
    model,
    runs: Runs,
    site: sites.Site,
    cell_list: list[sites.Cell],
    *,
    direction: str = "denoise",
    engine: str = "auto",
    batch_tokens: int | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, str, int]:
    """Metric values ``[len(cell_list)]`` of the patched runs, the engine used and how many cells
    needed a run (the others patch values equal to the base run's)."""
    base_tokens, base_hooks, src_tokens, src_hooks = runs.sides(direction)
    batch_tokens = memory.batch_tokens(model, runs.clean.shape, batch_tokens, what="patching")
    used, eng = choose_engine(model, site, base_hooks, engine)
    names = [site.hook(l) for l in sorted({l for c in cell_list for l in c.layers})]
    with torch.no_grad():
        _, source = model.run_with_cache(src_tokens, names=names, fwd_hooks=src_hooks)
        base_logits, base = model.run_with_cache(
            base_tokens, names=sorted(set(names + (eng.base_names() if eng else []))), fwd_hooks=base_hooks
        )
    # a patch whose source values equal the base run's (positions before the first corrupted
    # token, say) changes nothing: it keeps the base value exactly, without a forward
    todo = [
        i
        for i, c in enumerate(cell_list)
        if any(
            not torch.equal(
                cells.entries(source[site.hook(l)], site.layout, c),
                cells.entries(base[site.hook(l)], site.layout, c),
            )
            for l in c.layers
        )
    ]
    values = torch.full((len(cell_list),), runs.baseline(direction))
    if todo:
        sub = [cell_list[i] for i in todo]
        if eng is not None:
            got = eng.run(
                site,
                sub,
                base_tokens=base_tokens,
                base_hooks=base_hooks,
                base=base,
                base_logits=base_logits,
                source=source,
                metric=runs.metric,
                batch_tokens=batch_tokens,
                progress=progress,
            )
        else:
            got = engine_hooks.run(
                model,
                site,
                sub,
                base_tokens=base_tokens,
                base_hooks=base_hooks,
                source=source,
                metric=runs.metric,
                batch_tokens=batch_tokens,
                progress=progress,
            )
        values[todo] = got
    return values, used, len(todo)


def frame(
    cell_list: list[sites.Cell],
    axes: tuple[str, ...],
    values: torch.Tensor,
    runs: Runs,
    direction: str,
    with_window: bool,
) -> pd.DataFrame:
    """The tidy result of a sweep (see :func:`patch` for the columns)."""
    baseline = runs.baseline(direction)
    vals = values.double().numpy()
    data: dict[str, list | np.ndarray] = {"layer": [c.start for c in cell_list]}
    if with_window:
        data["window"] = [len(c.layers) for c in cell_list]
        data["layers"] = [
            f"{c.layers[0]}" if len(c.layers) == 1 else f"{c.layers[0]}-{c.layers[-1]}" for c in cell_list
        ]
    for axis in ("pos", "head", "src_pos"):
        if axis in axes:
            data[axis] = [getattr(c, axis) for c in cell_list]
    data["value"] = vals
    data["effect"] = vals - baseline
    data["normalised"] = runs.normalise(vals)
    return pd.DataFrame(data)


def meta(runs: Runs, direction: str, **extra) -> dict:
    """The context of a sweep its Result's meta holds (see :func:`patch`)."""
    return dict(
        metric=runs.metric.label,
        direction=direction,
        clean_value=runs.clean_value,
        corrupt_value=runs.corrupt_value,
        baseline=runs.baseline(direction),
        corruption=runs.description,
        **extra,
    )
