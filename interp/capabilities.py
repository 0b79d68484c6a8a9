"""What every analysis of the workbench does on a given model: runs, or declines naming the
architectural reason.  ``interp.support(model)`` (CLI: ``interp support MODEL``) answers by
running each analysis once on a small probe, so the table says what actually happens, not
what a list of families claims.

Each analysis is registered with a function ``probe(model, clean, corrupt) -> note`` that runs
it minimally; the analyses of :mod:`circuits` register themselves through the
``interp.analyses`` entry point (so ``interp`` never imports ``circuits``).  A probe that raises
:class:`~interp.errors.Unsupported` or :class:`~interp.errors.InputError` is a decline (its
message is the reason); any other exception is a failure, reported as one (a bug).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model

Probe = Callable[[Model, torch.Tensor, torch.Tensor], str]


@dataclass(frozen=True)
class Analysis:
    """One analysis: its ``name`` in the table, where it lives, and the probe that runs it."""

    name: str
    where: str
    probe: Probe


_REGISTRY: dict[str, Analysis] = {}
_LOADED = False


def register(name: str, where: str) -> Callable[[Probe], Probe]:
    """Decorator: registers ``probe`` as the analysis ``name`` (defined in module ``where``)."""

    def add(fn: Probe) -> Probe:
        _REGISTRY[name] = Analysis(name, where, fn)
        return fn

    return add


def analyses() -> list[Analysis]:
    """Every registered analysis, in registration order (the interp ones, then the plugins')."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for ep in entry_points(group="interp.analyses"):
            ep.load()  # importing the module registers its analyses
    return list(_REGISTRY.values())


def probe_tokens(model: Model, n: int = 2, length: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Small clean / corrupt token batches ``[n, length]`` (the corrupt one differs at one
    middle position): the input of every probe."""
    g = torch.Generator().manual_seed(seed)
    length = min(length, model.cfg.n_ctx)
    low = 1 if model.cfg.d_vocab > 2 else 0
    clean = torch.randint(low, model.cfg.d_vocab, (n, length), generator=g)
    corrupt = clean.clone()
    mid = length // 2
    corrupt[:, mid] = (clean[:, mid] + 1 - low) % (model.cfg.d_vocab - low) + low
    return clean.to(model.device), corrupt.to(model.device)


def support(model: Model, *, progress: bool = False) -> pd.DataFrame:
    """One row per analysis: ``analysis``, ``status`` (``ok`` | ``declines`` | ``fails``),
    ``reason`` (why it declines, or the error of a failure), ``note`` (what the probe measured)
    and ``seconds``."""
    from tqdm.auto import tqdm

    clean, corrupt = probe_tokens(model)
    rows = []
    for a in tqdm(analyses(), desc="support", disable=not progress, leave=False):
        start = time.perf_counter()
        try:
            with model.without_hooks():
                note = a.probe(model, clean, corrupt)
            status, reason = "ok", ""
        except InputError as e:  # Unsupported or an input the analysis refuses for this model
            status, reason, note = "declines", " ".join(str(e).split()), ""
        except Exception as e:
            status, reason, note = "fails", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", ""
        rows.append(
            {
                "analysis": a.name,
                "status": status,
                "reason": reason,
                "note": note,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    return pd.DataFrame(rows)


# --- the core's analyses --------------------------------------------------------------------


@register("logits", "interp.model")
def _logits(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    with torch.no_grad():
        logits = model(clean)
    if not torch.isfinite(logits).all():
        raise RuntimeError("the logits are not finite")
    return f"{tuple(logits.shape)}"


@register("activation cache", "interp.model")
def _cache(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    return f"{len(cache)} sites"


@register("head scores", "interp.heads")
def _head_scores(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp import heads

    frame = heads.scores(model, heads.default_tokens(model, n=2, length=min(16, model.cfg.n_ctx)))
    return f"{len(frame)} scores"


@register("head ablation", "interp.ablation")
def _head_ablation(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.ablation import ablate

    model.require_attention("head ablation")
    with torch.no_grad(), ablate(model, model.heads()[:1], "zero"):
        model(clean)
    return "zero-ablated one head"


@register("steering", "interp.steering")
def _steering(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.steering import SteeringVector

    vector = SteeringVector.from_pairs(model, clean, corrupt, layer=model.cfg.n_layers // 2)
    with torch.no_grad(), vector.apply(model, coef=1.0):
        model(clean)
    return f"site {vector.site}"


@register("function-vector head effects", "interp.function_vectors")
def _fv(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp import function_vectors as fv

    frame = fv.head_indirect_effects(model, clean, corrupt, clean[:, -1], progress=False)
    return f"{len(frame)} heads"


@register("logit lens", "interp.lens")
def _logit_lens(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.lens import logit_lens

    frame = logit_lens(model, clean[:1], k=1)
    return f"{frame['layer'].nunique()} readings"


@register("tuned lens", "interp.lens")
def _tuned_lens(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.lens import train_tuned_lens

    lens = train_tuned_lens(model, clean, steps=1, progress=False)
    return f"{lens.A.shape[0]} translators"


@register("direct logit attribution", "interp.lens")
def _dla(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.lens import dla
    from interp.runs import run

    r = run(dla, model, clean[:1], int(clean[0, -1]), int(corrupt[0, -1]) if model.cfg.d_vocab > 1 else None)
    return f"{len(r.frame)} pieces; {r.meta.get('linearisation', '')}"


@register("token saliency", "interp.saliency")
def _saliency(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.saliency import token_saliency

    sal = token_saliency(model, clean[0])
    return f"{tuple(sal.shape)} [dest, src]"


@register("retrieval decoding", "interp.retrieval")
def _retrieval(model: Model, clean: torch.Tensor, corrupt: torch.Tensor) -> str:
    from interp.retrieval import decode_attention

    generated, _ = decode_attention(model, clean[:, : max(2, clean.shape[1] - 2)], 2, progress=False)
    return f"{'cached' if model.supports_cache else 'recomputing'} decoding"
