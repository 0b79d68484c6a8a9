"""The registry of findings: the entries of this package, and those other packages declare
under the ``interp.findings`` entry-point group (``circuits`` declares its causal entries there,
so ``interp`` never imports ``circuits``: the layering apps -> circuits -> interp holds)."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from interp.errors import InputError, Unsupported
from interp.reproduce.finding import NOT_APPLICABLE, Finding, Outcome, Result
from interp.runs import analysis, record

if TYPE_CHECKING:
    from interp import runs as _runs
    from interp.executor import Executor

GROUP = "interp.findings"
#: this package's own entries (one module per paper)
#: (arora2023, liu2023, olsson2022_phase, karpathy2015: about models trained for them, shipped zoo
#: weights; ``retrain=True`` trains them again)
BUILTIN = (
    "olsson2022",
    "wu2024",
    "xiao2023",
    "todd2023",
    "michel2019",
    "sun2024",
    "wendler2024",
    "arora2023",
    "liu2023",
    "olsson2022_phase",
    "karpathy2015",
)

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
def run(finding_id: str, model, quick: bool = False, *, progress: bool = False, retrain: bool = False) -> Result:
    """Runs finding ``finding_id`` on ``model`` (a :class:`interp.Model` or anything
    :func:`interp.load` takes) and returns a :class:`Result`: frame, figure and summary with
    the published number beside ours (95% bootstrap interval, sample size) and the verdict.

    quick: smaller samples (for a first look and the app; the verdict is then less certain).
    ``interp.runs.run(run, finding_id, model)`` gives the run to store (``value``: this Result).
    A model that does not meet the finding's requirements, or whose architecture an analysis
    declines (:class:`interp.errors.Unsupported`), gives ``not applicable`` with the reason.
    retrain: for findings that evaluate models of their own (``Finding.retrainable``: the recall
    gap, flip-flop glitches, ...), train them again from their recipes first instead of loading
    the shipped weights (minutes); refused for the others.
    """
    from interp.model import Model
    from interp.reproduce.requirements import unmet

    finding = get(finding_id)
    if retrain and not finding.retrainable:
        raise InputError(f"{finding.id} evaluates the model it is given, not shipped weights: nothing to retrain")
    if not isinstance(model, Model):
        import interp

        model = interp.load(model)
    start = time.perf_counter()
    reason = unmet(model, finding.requires)
    if reason is not None:
        outcome = not_applicable(f"{finding.id} does not apply to {model.cfg.name or 'this model'}: {reason}")
    else:
        try:
            if finding.retrainable:
                outcome = finding.experiment(model, bool(quick), progress, retrain=bool(retrain))  # type: ignore[call-arg]
            else:
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
        "model": ", ".join(outcome.models) if outcome.models else (model.cfg.name or ""),
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
        "given_model": model.cfg.name or "",
        "text": finding.text,
    }


# --- several findings on several models ---------------------------------------------------------


def _load_spec(model) -> dict | Any:
    """``model`` as what a worker can load (a dict of :func:`interp.load` arguments), or the
    :class:`interp.Model` itself; checked without loading (an unknown name fails here)."""
    from interp.loading import load, locate
    from interp.model import Model

    if isinstance(model, Model):
        return model
    if isinstance(model, (str, Path)):
        spec: dict = {"source": str(model)}
    elif isinstance(model, dict):
        spec = {k: v for k, v in model.items() if v is not None}
        allowed = set(inspect.signature(load).parameters)
        unknown = sorted(set(spec) - allowed)
        if "source" not in spec or unknown:
            raise InputError(
                f"a model given as a dict is interp.load's arguments with 'source'; got keys {sorted(spec)}"
                + (f" ({unknown} are not interp.load arguments)" if unknown else "")
            )
    else:
        raise InputError(
            f"models are interp.Model objects, names or paths interp.load takes, or dicts of its arguments; "
            f"got {type(model).__name__}"
        )
    if not isinstance(spec["source"], (str, Path)):
        raise InputError(f"a model's source is a name or path, got {type(spec['source']).__name__}")
    locate(spec["source"])  # a misspelt name or a missing folder fails before any work starts
    return spec


def _pair(_model, job: tuple) -> _runs.Result:
    """One (model, finding) pair, an executor's task: the stored run of :func:`run` (its
    ``value`` is the :class:`Result`).  ``job`` = (model or load spec, finding id, the module
    that registers it, quick).  In a worker the spec is loaded once and kept
    (:func:`interp.executor.model_for`), and a finding its registry lacks (registered by a
    module rather than an entry point) is registered by importing its module."""
    from interp import runs
    from interp.executor import model_for

    target, finding_id, module, quick = job
    if finding_id not in findings() and module:
        importlib.import_module(module)
    model = model_for(target) if isinstance(target, dict) else target
    return runs.run(run, finding_id, model, quick=quick)


def run_many(
    finding_ids: str | Sequence[str],
    models: Sequence[Any],
    quick: bool = False,
    *,
    executor: str | Executor | None = None,
    progress: bool = False,
    stored: bool = False,
) -> list:
    """Runs each finding on each model: the :class:`Result` of every (model, finding) pair, in
    that order (model by model, each model's findings in the order given).

    finding_ids: ids or ``"all"``.  models: :class:`interp.Model` objects, names or paths
    :func:`interp.load` takes, or dicts of its arguments (``{"source": "smollm2-135m", "dtype":
    "bfloat16"}``).  Every id and every name is checked before any work starts.  executor:
    ``"local"`` (default: this process, one model loaded at a time) or ``"ray"`` (each pair one
    task on a Ray cluster, whose workers load each model once and keep it;
    :mod:`interp.executor`); a model object must then have been loaded by name or path.
    stored: return the stored run of each pair (:func:`interp.runs.run`'s Result, with the
    provenance, ready for :func:`interp.runs.save`; its ``value`` is the finding's Result)."""
    from interp import executor as executors
    from interp import load

    if isinstance(finding_ids, str):
        finding_ids = [finding_ids]
    if not isinstance(finding_ids, Sequence) or not finding_ids:
        raise InputError("give at least one finding id (or 'all')")
    if any(isinstance(f, str) and f.strip().lower() == "all" for f in finding_ids):
        chosen = list(findings().values())
    else:
        chosen = [get(f) for f in finding_ids]
    chosen = list({f.id: f for f in chosen}.values())  # each finding once, first order kept
    if isinstance(models, (str, Path, dict)) or not isinstance(models, Sequence) or not models:
        raise InputError("models is a non-empty list (of interp.Model objects, names, paths or load dicts)")
    targets = [_load_spec(m) for m in models]
    ex = executors.get(executor)
    quick = bool(quick)
    if isinstance(ex, executors.Local):  # one model in memory at a time, loaded when its turn comes
        out: list = []
        for target in targets:
            model = load(**target) if isinstance(target, dict) else target
            jobs = [(model, f.id, f.module, quick) for f in chosen]
            out += ex.map(_pair, None, jobs, desc="reproduce", progress=progress)
    else:
        specs = [t if isinstance(t, dict) else executors.spec_of(t) for t in targets]
        jobs = [(spec, f.id, f.module, quick) for spec in specs for f in chosen]
        gpus = 1 if any(executors.on_cuda(spec) for spec in specs) else 0  # the tasks load the models
        out = ex.map(_pair, None, jobs, desc="reproduce", progress=progress, gpus=gpus)
    return out if stored else [r.value for r in out]
