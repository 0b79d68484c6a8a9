"""The causal analyses' entries in :func:`interp.support`'s table (registered through the
``interp.analyses`` entry point in ``pyproject.toml``, so the core never imports ``circuits``)."""

from __future__ import annotations

import torch

from interp.capabilities import register


def _metric(clean: torch.Tensor):
    from circuits import metrics

    return metrics.logit_diff(answer=int(clean[0, -1]), wrong=int(clean[0, 0]), pos=-1)


@register("exact patching (residual stream)", "circuits.patching")
def _patch_resid(model, clean, corrupt) -> str:
    from circuits.patching import patch
    from interp.runs import run

    r = run(patch, model, clean, corrupt, site="resid_pre", by="layer,pos", metric=_metric(clean), progress=False)
    return f"{len(r.frame)} cells, engine {r.meta['engine']}"


@register("exact patching (heads)", "circuits.patching")
def _patch_heads(model, clean, corrupt) -> str:
    from circuits.patching import patch
    from interp.runs import run

    r = run(patch, model, clean, corrupt, site="z", by="layer,pos,head", metric=_metric(clean), progress=False)
    return f"{len(r.frame)} cells, engine {r.meta['engine']}"


@register("attribution patching", "circuits.attribution")
def _attribute(model, clean, corrupt) -> str:
    from circuits.attribution import attribute
    from interp.runs import run

    r = run(attribute, model, clean, corrupt, metric=_metric(clean))
    return f"{len(r.frame)} cells at {r.meta['site']}"


@register("path patching", "circuits.path_patching")
def _path_patch(model, clean, corrupt) -> str:
    from circuits.path_patching import path_patch

    df = path_patch(model, clean, corrupt, metric=_metric(clean), progress=False)
    return f"{len(df)} paths"


@register("edge attribution (EAP-IG) and faithfulness", "circuits.attribution")
def _eap(model, clean, corrupt) -> str:
    from circuits.attribution import edge_attribution

    circuit = edge_attribution(model, clean, corrupt, metric=_metric(clean), method="eap-ig", steps=2, progress=False)
    f = circuit.faithfulness(model, clean, corrupt, _metric(clean))
    return f"{len(circuit.edges_frame())} edges, faithfulness of the whole graph {f:.2f}"


@register("state patching (recurrent)", "circuits.patching")
def _patch_state(model, clean, corrupt) -> str:
    from circuits import sites
    from circuits.patching import patch
    from interp.errors import Unsupported
    from interp.sites import STATE_KINDS

    kinds = [k for k in STATE_KINDS if k in sites.available(model)]
    if not kinds:
        raise Unsupported(
            f"{model.cfg.name or 'this model'} exposes no recurrent state sites"
            + (" (an attention model keeps its memory in the key-value cache)" if model.has_attention else "")
            + (f": {model.card['recurrent_state']}" if model.card.get("recurrent_state") else "")
        )
    df = patch(model, clean, corrupt, site=kinds[0], by="layer,pos", metric=_metric(clean), progress=False)
    return f"{len(df)} cells of {kinds[0]} (state kinds: {', '.join(kinds)})"
