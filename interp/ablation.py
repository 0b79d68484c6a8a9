"""Head ablation as a context manager, with the with/without evaluation and a random-head control.

``with ablate(model, [(1, 2), (1, 3)], how="zero"):`` every run of ``model`` inside the
block has those heads knocked out; ablations compose with any other ``model.hooks``
(steering, patching, more ablations).  Ways to knock a head out:

- ``zero``: its output ``z`` (``blocks.{l}.attn.hook_z``, before W_O) is set to 0;
- ``mean``: ``z`` is replaced by its mean over the reference tokens' batch and positions;
- ``resample``: ``z`` of row b is replaced by ``z`` of reference row ``b mod n_ref`` (same
  positions), i.e. the head computes as on another input;
- ``query``: Wu et al. 2024 query masking: the head's query (``hook_q``) is zeroed, so its
  scores are all equal and it attends uniformly over the causal prefix.  Meant for
  decoding positions only (``positions``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
import torch

from interp import interventions as I
from interp import metrics
from interp.errors import InputError
from interp.interventions import Positions
from interp.metrics import Metric
from interp.model import Model, Tokens
from interp.runs import analysis
from interp.tasks import IGNORE, TaskBatch

HOWS = ("zero", "mean", "resample", "query")
Heads = Sequence[tuple[int, int]]


def check_heads(model: Model, heads: Heads) -> list[tuple[int, int]]:
    """Validated, de-duplicated ``[(layer, head), ...]``."""
    model.require_attention("head ablation")
    out = []
    for item in heads:
        try:
            layer, head = item
        except (TypeError, ValueError):
            raise InputError(f"heads must be (layer, head) pairs, got {item!r}") from None
        out.append(model.check_head(layer, head))
    return list(dict.fromkeys(out))


def _site(model: Model, layer: int, how: str) -> str:
    return model.site("q" if how == "query" else "z", layer)


def interventions(
    model: Model, heads: Heads, how: str = "zero", *, reference: Tokens | None = None, positions: Positions = None
) -> list[I.Intervention]:
    """The :class:`interp.interventions.Intervention` edits that ablate ``heads`` (one per layer).

    reference: tokens ``[n_ref, pos]`` for ``mean`` and ``resample`` (their ``z`` is read
    once, with the hooks active now).  positions: where to ablate (see
    :mod:`interp.interventions`): None (all), an int p (positions >= p; -1 = each row's last
    token), a LongTensor [batch] or a bool mask ``[batch, pos]`` / ``[pos]``.
    """
    if how not in HOWS:
        raise InputError(f"unknown ablation {how!r}; choose one of {list(HOWS)}")
    heads = check_heads(model, heads)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    if how in ("mean", "resample"):
        if reference is None:
            raise InputError(f"how={how!r} needs reference tokens [n_ref, pos] to take head outputs from")
        with torch.no_grad():
            _, cache = model.run_with_cache(reference, names=[_site(model, l, how) for l in by_layer])
    out = []
    for layer, hs in by_layer.items():
        site = _site(model, layer, how)
        if how in ("zero", "query"):
            out.append(I.zero(site, positions=positions, heads=hs))
        elif how == "mean":
            out.append(I.set_to(site, cache[site].float().mean((0, 1)), positions=positions, heads=hs))  # [H, d_head]
        else:
            out.append(I.patch(site, cache[site], positions=positions, heads=hs))  # row b <- ref b % n
    return out


@contextlib.contextmanager
def ablate(
    model: Model, heads: Heads, how: str = "zero", *, reference: Tokens | None = None, positions: Positions = None
) -> Iterator[Model]:
    """Knocks ``heads`` out for every run inside the ``with`` block (see the module docstring
    and :func:`interventions` for the arguments)."""
    with I.apply(model, interventions(model, heads, how, reference=reference, positions=positions)):
        yield model


def random_heads(
    model: Model, k: int, *, exclude: Heads = (), seed: int = 0, layers: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """``k`` heads drawn uniformly without replacement from the heads not in ``exclude``
    (optionally only from ``layers``): the control for an ablation of ``k`` chosen heads."""
    model.require_attention("random heads")
    excluded = set(check_heads(model, exclude))
    attn = model.cfg.attn_layers or ()
    layers = attn if layers is None else [model.check_layer(l) for l in layers if int(l) in attn]
    pool = [(l, h) for l in layers for h in range(model.cfg.n_heads) if (l, h) not in excluded]
    if not 0 < k <= len(pool):
        raise InputError(
            f"cannot draw {k} random heads from the {len(pool)} heads left after excluding {len(excluded)}"
        )
    return sorted(random.Random(seed).sample(pool, k))


# --- evaluation -----------------------------------------------------------------------------

TaskMetric = str | Metric | Callable[[Model, TaskBatch], float]


def task_metric(metric: TaskMetric, task: TaskBatch) -> tuple[Callable[[Model], float], str]:
    """``(fn(model) -> float, name)`` measuring ``metric`` on ``task`` (active hooks apply).

    metric: a :class:`interp.metrics.Metric` (evaluated on the task's logits); "loss" / "accuracy"
    / "logprob" (a :func:`interp.metrics.from_labels` metric on the task labels: nats,
    fraction, nats); "answer_accuracy" (greedy decoding of the needle, see
    :func:`interp.retrieval.answer_accuracy`); or ``fn(model, task) -> float``.
    """
    if isinstance(metric, Metric):
        return (lambda m: float(metric(m(task.tokens)))), metric.label
    if isinstance(metric, str):
        if metric in ("loss", "accuracy", "logprob"):
            chosen = metrics.from_labels(task.labels, kind=metric)
            return (lambda m: float(chosen(m(task.tokens)))), metric
        if metric == "answer_accuracy":
            from interp.retrieval import answer_accuracy

            return (lambda m: answer_accuracy(m, task)), metric
    elif callable(metric):
        return (lambda m: float(metric(m, task))), getattr(metric, "__name__", "metric")
    raise InputError(
        f"unknown metric {metric!r}; choose 'loss' (nats on the task labels), 'accuracy' "
        "(arg-max on the labels), 'logprob', 'answer_accuracy' (greedy-decoded needle), a "
        "metrics.Metric or fn(model, task)"
    )


def _default_positions(how: str, metric, task: TaskBatch) -> Positions:
    """ "Decoding only" for query masking: the labelled positions (teacher-forced metrics) or
    from the prompt's last position on (greedy answer decoding)."""
    if how != "query":
        return None
    if metric == "answer_accuracy":
        return I.From(task.batch().last)  # each row's last prompt token, then every decoded one
    mask = task.labels != IGNORE
    if not mask.any():
        raise InputError("the task has no labelled positions to restrict query masking to; pass positions=")
    return mask


@torch.no_grad()
@analysis("ablation", figure="interp.plots.heads.ablation_bar")
def ablation_effect(
    model: Model,
    task: TaskBatch,
    heads: Heads,
    how: str = "zero",
    *,
    metric: TaskMetric = "loss",
    n_random: int = 5,
    seed: int = 0,
    reference: torch.Tensor | None = None,
    positions: Positions | str = "default",
    random_exclude: Heads = (),
) -> pd.DataFrame:
    """The task metric without ablation, with ``heads`` ablated, and with ``n_random``
    random sets of as many other heads ablated (the control).

    Returns ``DataFrame[condition, seed, heads, metric, value, delta]``: condition
    "clean" / "target" / "random"; delta = value - clean value.  metric: see
    :func:`task_metric`.  reference (mean / resample): defaults to the task's own
    tokens (for resample, shifted by one row so each row takes another row's output).
    positions: "default" = everywhere, except query masking = decoding positions only.
    random_exclude: heads the random control must not draw besides ``heads``.
    """
    heads = check_heads(model, heads)
    if not heads:
        raise InputError("no heads to ablate")
    fn, name = task_metric(metric, task)
    if positions == "default":
        positions = _default_positions(how, metric, task)
    elif isinstance(positions, str):
        raise InputError(
            f"positions must be 'default', None, an int, a slice, From(...) or a tensor, got {positions!r}"
        )
    if how in ("mean", "resample") and reference is None:
        if how == "resample" and len(task) < 2:
            raise InputError(
                "resample ablation takes head outputs from other rows of the task: give it >= 2 rows "
                "or reference= tokens"
            )
        reference = task.tokens if how == "mean" else task.tokens.roll(1, dims=0)
    clean = fn(model)
    rows = [{"condition": "clean", "seed": None, "heads": "", "value": clean}]
    sets = [("target", None, heads)] + [
        ("random", seed + i, random_heads(model, len(heads), exclude=list(heads) + list(random_exclude), seed=seed + i))
        for i in range(n_random)
    ]
    for condition, s, hs in sets:
        with ablate(model, hs, how, reference=reference, positions=positions):
            rows.append(
                {"condition": condition, "seed": s, "heads": " ".join(f"L{l}H{h}" for l, h in hs), "value": fn(model)}
            )
    df = pd.DataFrame(rows)
    df.insert(3, "metric", name)
    df["delta"] = df["value"] - clean
    return df
