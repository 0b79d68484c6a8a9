"""The registry of findings: the entries of this package, and those other packages declare
under the ``interp.findings`` entry-point group (``circuits`` declares its causal entries there,
so ``interp`` never imports ``circuits``: the layering apps -> circuits -> interp holds)."""

from __future__ import annotations

import importlib
import time
from importlib.metadata import entry_points

import pandas as pd

from interp.errors import InputError, Unsupported
from interp.reproduce.finding import NOT_APPLICABLE, Finding, Outcome, Result
from interp.runs import analysis, record

GROUP = "interp.findings"
#: this package's own entries (one module per paper)
BUILTIN = ("olsson2022", "wu2024", "xiao2023", "todd2023", "michel2019", "sun2024", "wendler2024")

_REGISTRY: dict[str, Finding] = {}
_LOADED = {"builtin": False, "plugins": False}
_PLUGIN_ERRORS: dict[str, str] = {}


def register(finding: Finding) -> Finding:
    """Adds ``finding`` to the registry (a plugin module calls this on import, or exposes the
    Finding through the entry point).  Registering the same id twice from different modules raises."""
    if not isinstance(finding, Finding):
        raise InputError(f"register takes an interp.reproduce.Finding, got {type(finding).__name__}")
    known = _REGISTRY.get(finding.id)
    if known is not None and known is not finding and known.module != finding.module:
        raise InputError(f"finding {finding.id!r} is already registered by {known.module}")
    _REGISTRY[finding.id] = finding
    return finding


def _load_builtin() -> None:
    if _LOADED["builtin"]:
        return
    _LOADED["builtin"] = True
    for name in BUILTIN:
        importlib.import_module(f"interp.reproduce.{name}")


def _load_plugins() -> None:
    """Loads the ``interp.findings`` entry points: each names a :class:`Finding` (``module:ATTR``)
    or a module that registers its findings when imported.  A plugin that fails to import is
    skipped and its error kept (:func:`plugin_errors`), so one broken package does not hide the rest."""
    if _LOADED["plugins"]:
        return
    _LOADED["plugins"] = True
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as e:
            _PLUGIN_ERRORS[ep.name] = f"{type(e).__name__}: {e}"
            continue
        if isinstance(obj, Finding):
            register(obj)


def plugin_errors() -> dict[str, str]:
    """Entry points of the ``interp.findings`` group that could not be loaded, with the error."""
    _load_plugins()
    return dict(_PLUGIN_ERRORS)


def findings() -> dict[str, Finding]:
    """Every registered finding by id (this package's, then the entry points')."""
    _load_builtin()
    _load_plugins()
    return dict(sorted(_REGISTRY.items()))


def get(finding_id: str) -> Finding:
    """The finding ``finding_id``; an unknown id raises listing the known ones."""
    known = findings()
    if not isinstance(finding_id, str) or finding_id.strip().lower() not in known:
        raise InputError(f"unknown finding {finding_id!r}; known: {', '.join(known)}")
    return known[finding_id.strip().lower()]


def list_findings() -> pd.DataFrame:
    """``DataFrame[id, paper, claim, published, unit, published_model, where, source, requires, module]``."""
    rows = []
    for f in findings().values():
        p = f.published
        rows.append(
            {
                "id": f.id,
                "paper": f.paper,
                "claim": f.claim,
                "published": p.value,
                "unit": p.unit,
                "published_model": p.model,
                "where": p.where,
                "source": p.source,
                "requires": ", ".join(f.requires),
                "module": f.module,
            }
        )
    return pd.DataFrame(rows)


def not_applicable(reason: str) -> Outcome:
    """The outcome of a finding the model cannot run: no measurement, the reason."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=f"not applicable: {reason}", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, height=200)
    return Outcome(pd.DataFrame(), fig, None, NOT_APPLICABLE, reason)


@analysis("reproduce", to_frame=lambda result, meta: result.frame)
def run(finding_id: str, model, quick: bool = False, *, progress: bool = False) -> Result:
    """Runs finding ``finding_id`` on ``model`` (a :class:`interp.Model` or anything
    :func:`interp.load` takes) and returns a :class:`Result`: frame, figure and summary with
    the published number beside ours (95% bootstrap interval, sample size) and the verdict.

    quick: smaller samples (for a first look and the app; the verdict is then less certain).
    ``interp.runs.run(run, finding_id, model)`` gives the run to store (``value``: this Result).
    A model that does not meet the finding's requirements, or whose architecture an analysis
    declines (:class:`interp.errors.Unsupported`), gives ``not applicable`` with the reason.
    """
    from interp.model import Model
    from interp.reproduce.requirements import unmet

    finding = get(finding_id)
    if not isinstance(model, Model):
        import interp

        model = interp.load(model)
    start = time.perf_counter()
    reason = unmet(model, finding.requires)
    if reason is not None:
        outcome = not_applicable(f"{finding.id} does not apply to {model.cfg.name or 'this model'}: {reason}")
    else:
        try:
            outcome = finding.experiment(model, bool(quick), progress)
        except Unsupported as e:
            outcome = not_applicable(f"{finding.id} does not apply to {model.cfg.name or 'this model'}: {e}")
    seconds = time.perf_counter() - start
    result = Result(outcome.frame, outcome.figure, summarize(finding, model, outcome, seconds, quick))
    record(**result.to_json())  # a stored run's meta is the summary: the history of a finding is one query
    return result


def summarize(finding: Finding, model, outcome: Outcome, seconds: float, quick: bool) -> dict:
    """The summary of a run (what ``--json`` writes)."""
    p = finding.published
    ours = outcome.ours
    return {
        "id": finding.id,
        "paper": finding.paper,
        "citation": finding.citation,
        "claim": finding.claim,
        "model": model.cfg.name or "",
        "metric": finding.metric,
        "published": p.value,
        "published_unit": p.unit,
        "published_model": p.model,
        "published_where": p.where,
        "published_source": p.source,
        "published_detail": p.detail,
        "also_published": [a.to_dict() for a in finding.also],
        "ours": None if ours is None else ours.value,
        "ci_low": None if ours is None else ours.low,
        "ci_high": None if ours is None else ours.high,
        "n": None if ours is None else ours.n,
        "unit": None if ours is None else ours.unit,
        "verdict": outcome.verdict,
        "reason": outcome.reason,
        "rule": finding.rule,
        "counts": dict(outcome.counts),
        "details": dict(outcome.details),
        "seconds": round(seconds, 2),
        "quick": bool(quick),
        "text": finding.text,
    }
