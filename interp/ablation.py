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
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch

from interp.model import Model
from interp.tasks import IGNORE, TaskBatch

HOWS = ("zero", "mean", "resample", "query")
Heads = Sequence[tuple[int, int]]
Positions = int | torch.Tensor | None


def check_heads(model: Model, heads: Heads) -> list[tuple[int, int]]:
    """Validated, de-duplicated ``[(layer, head), ...]``."""
    model.require_attention("head ablation")
    out = []
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}") from None
        model.check_layer(layer)
        if not 0 <= head < model.cfg.n_heads:
            raise ValueError(f"head {head} is out of range: layers have heads 0..{model.cfg.n_heads - 1}")
        out.append((layer, head))
    return list(dict.fromkeys(out))


def _position_mask(positions: Positions, batch: int, length: int, device) -> torch.Tensor:
    """[batch, pos] bool: where the ablation applies (None: everywhere; int p: from p on)."""
    if positions is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if isinstance(positions, int):
        return (torch.arange(length, device=device) >= positions).expand(batch, length)
    mask = torch.as_tensor(positions, device=device).bool()
    if mask.ndim == 1:
        mask = mask[None].expand(batch, -1)
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"positions mask has shape {tuple(mask.shape)} but the run is [batch={batch}, pos={length}]")
    return mask


def _site(layer: int, how: str) -> str:
    return f"blocks.{layer}.attn.hook_q" if how == "query" else f"blocks.{layer}.attn.hook_z"


@contextlib.contextmanager
def ablate(model: Model, heads: Heads, how: str = "zero", *, reference: torch.Tensor | None = None,
           positions: Positions = None) -> Iterator[Model]:
    """Knocks ``heads`` out for every run inside the ``with`` block (see the module docstring).

    reference: tokens ``[n_ref, pos]`` for ``mean`` and ``resample`` (their ``z`` is read
    once, on entry, with the hooks active then).  positions: where to ablate: None (all),
    an int p (positions >= p, e.g. the prompt's last position for "decoding only"), or a
    bool mask ``[batch, pos]`` / ``[pos]``.
    """
    if how not in HOWS:
        raise ValueError(f"unknown ablation {how!r}; choose one of {list(HOWS)}")
    heads = check_heads(model, heads)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    if how in ("mean", "resample"):
        if reference is None:
            raise ValueError(f"how={how!r} needs reference tokens [n_ref, pos] to take head outputs from")
        with torch.no_grad():
            _, cache = model.run_with_cache(reference, names=[_site(l, how) for l in by_layer])
        if how == "mean":
            stored = {l: cache[_site(l, how)].mean((0, 1)) for l in by_layer}  # [n_heads, d_head]
        else:
            stored = {l: cache[_site(l, how)] for l in by_layer}                # [n_ref, pos, n_heads, d_head]

    def make_hook(layer: int) -> Callable:
        head_mask = torch.zeros(model.cfg.n_heads, dtype=torch.bool)
        head_mask[by_layer[layer]] = True

        def hook(x: torch.Tensor, hook) -> torch.Tensor:
            # x: [batch, pos, n_heads, d_head] (z, or q for query masking)
            B, P = x.shape[:2]
            where = _position_mask(positions, B, P, x.device)[:, :, None, None] & head_mask.to(x.device)[None, None, :, None]
            if how in ("zero", "query"):
                value = torch.zeros((), dtype=x.dtype, device=x.device)
            elif how == "mean":
                value = stored[layer].to(x.dtype)[None, None]
            else:
                ref = stored[layer]
                if ref.shape[1] < P:
                    raise ValueError(f"resample reference has {ref.shape[1]} positions, the run has {P}")
                value = ref[torch.arange(B) % ref.shape[0], :P].to(x.dtype)
            return torch.where(where, value, x)
        return hook

    with model.hooks([(_site(l, how), make_hook(l)) for l in by_layer]):
        yield model


def random_heads(model: Model, k: int, *, exclude: Heads = (), seed: int = 0,
                 layers: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``k`` heads drawn uniformly without replacement from the heads not in ``exclude``
    (optionally only from ``layers``): the control for an ablation of ``k`` chosen heads."""
    model.require_attention("random heads")
    excluded = set(check_heads(model, exclude))
    layers = range(model.cfg.n_layers) if layers is None else [model.check_layer(l) for l in layers]
    pool = [(l, h) for l in layers for h in range(model.cfg.n_heads) if (l, h) not in excluded]
    if not 0 < k <= len(pool):
        raise ValueError(f"cannot draw {k} random heads from the {len(pool)} heads left after excluding {len(excluded)}")
    return sorted(random.Random(seed).sample(pool, k))


# --- evaluation -----------------------------------------------------------------------------

def _metric(metric: str | Callable[[Model, TaskBatch], float]) -> Callable[[Model, TaskBatch], float]:
    if callable(metric):
        return metric
    if metric == "loss":
        return lambda m, t: float(t.loss(m(t.tokens)))
    if metric == "accuracy":
        return lambda m, t: t.accuracy(m(t.tokens))
    if metric == "answer_accuracy":
        from interp.retrieval import answer_accuracy

        return lambda m, t: answer_accuracy(m, t)
    raise ValueError(f"unknown metric {metric!r}; choose 'loss' (nats on the task labels), 'accuracy' "
                     "(arg-max on the labels), 'answer_accuracy' (greedy-decoded needle) or pass fn(model, task)")


def _default_positions(how: str, metric, task: TaskBatch) -> Positions:
    """"Decoding only" for query masking: the labelled positions (teacher-forced metrics) or
    from the prompt's last position on (greedy answer decoding)."""
    if how != "query":
        return None
    if metric == "answer_accuracy":
        return task.tokens.shape[1] - 1
    mask = task.labels != IGNORE
    if not mask.any():
        raise ValueError("the task has no labelled positions to restrict query masking to; pass positions=")
    return mask


@torch.no_grad()
def ablation_effect(model: Model, task: TaskBatch, heads: Heads, how: str = "zero", *,
                    metric: str | Callable[[Model, TaskBatch], float] = "loss", n_random: int = 5, seed: int = 0,
                    reference: torch.Tensor | None = None, positions: Positions | str = "default",
                    random_exclude: Heads = ()) -> pd.DataFrame:
    """The task metric without ablation, with ``heads`` ablated, and with ``n_random``
    random sets of as many other heads ablated (the control).

    Returns ``DataFrame[condition, seed, heads, metric, value, delta]``: condition
    "clean" / "target" / "random"; delta = value - clean value.  metric: "loss" (nats),
    "accuracy", "answer_accuracy" (see :func:`interp.retrieval.answer_accuracy`) or
    ``fn(model, task) -> float``.  reference (mean / resample): defaults to the task's own
    tokens (for resample, shifted by one row so each row takes another row's output).
    positions: "default" = everywhere, except query masking = decoding positions only.
    random_exclude: heads the random control must not draw besides ``heads``.
    """
    heads = check_heads(model, heads)
    if not heads:
        raise ValueError("no heads to ablate")
    fn = _metric(metric)
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    if positions == "default":
        positions = _default_positions(how, metric, task)
    if how in ("mean", "resample") and reference is None:
        if how == "resample" and len(task) < 2:
            raise ValueError("resample ablation takes head outputs from other rows of the task: give it >= 2 rows "
                             "or reference= tokens")
        reference = task.tokens if how == "mean" else task.tokens.roll(1, dims=0)
    clean = fn(model, task)
    rows = [{"condition": "clean", "seed": None, "heads": "", "value": clean}]
    sets = [("target", None, heads)] + [("random", seed + i, random_heads(model, len(heads),
                                         exclude=list(heads) + list(random_exclude), seed=seed + i))
                                        for i in range(n_random)]
    for condition, s, hs in sets:
        with ablate(model, hs, how, reference=reference, positions=positions):
            rows.append({"condition": condition, "seed": s, "heads": " ".join(f"L{l}H{h}" for l, h in hs),
                         "value": fn(model, task)})
    df = pd.DataFrame(rows)
    df.insert(3, "metric", name)
    df["delta"] = df["value"] - clean
    return df
