"""Causal analysis: corruption, metrics, activation / path / attribution patching, circuit graphs.

    from circuits import patch, attribute, edge_attribution, path_patch, metrics, corrupt
    df = patch(model, clean, corrupt_tokens, site="z", by="layer,pos,head", metric=metrics.logit_diff(a, b))
    circuit = edge_attribution(model, clean, corrupt_tokens, metric=..., method="eap-ig").prune(top_k=20)
    circuit.faithfulness(model, clean, corrupt_tokens, metric=...)

Modules: :mod:`circuits.corrupt` (corruptions), :mod:`circuits.metrics` (metrics),
:mod:`circuits.patching` (exact activation patching; engines: :mod:`interp.recompute`, downstream-only,
and :mod:`circuits.engine_hooks`), :mod:`circuits.path_patching`, :mod:`circuits.attribution`
(attribution patching, EAP, EAP-IG), :mod:`circuits.graph` (``Circuit``, JSON format),
:mod:`circuits.plots` (plotly figures).
"""

from circuits import corrupt, metrics
from circuits.attribution import attribute, edge_attribution
from circuits.faithfulness import faithfulness_curve
from circuits.graph import Circuit
from circuits.patching import patch
from circuits.path_patching import path_patch

__all__ = [
    "patch",
    "attribute",
    "edge_attribution",
    "path_patch",
    "Circuit",
    "faithfulness_curve",
    "corrupt",
    "metrics",
]
