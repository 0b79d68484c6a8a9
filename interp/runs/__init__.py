"""Results that last: every analysis run as a :class:`Result` (its tidy frame, the context it
recorded, its provenance and how to draw it), saved in a store the CLI, the app and notebooks
share.

    import interp.runs as runs
    result = runs.run(circuits.patch, model, clean, corrupt)   # frame, meta, provenance, figure
    run_id = runs.save(result)                                  # Parquet + JSON + a catalog row
    again = runs.load(run_id)                                   # equal frame, same provenance
    runs.list(analysis="patching")                              # the catalog, newest first
    runs.diff(run_id, other_id)                                 # what differs, cell by cell
    runs.sql("SELECT analysis, count(*) FROM runs GROUP BY 1")  # the catalog in SQL (DuckDB)

Analyses mark themselves with :func:`analysis` and record their scalar context with
:func:`record`; a plain call still returns the DataFrame.  The store lives under
``$INTERP_RUNS`` (default ``$INTERP_CACHE/runs``); see :mod:`interp.runs.store`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path as _Path

import pandas as _pd

from interp.runs.capture import analysis, record, run, spec_of
from interp.runs.diff import Diff, key_columns
from interp.runs.diff import diff as _diff
from interp.runs.provenance import Provenance
from interp.runs.result import FigureSpec, Result, parts
from interp.runs.store import VERSION, RunStoreWarning, Store, root

_Params = list | None  # `list` below is interp.runs.list

__all__ = [
    "Diff",
    "FigureSpec",
    "Provenance",
    "Result",
    "RunStoreWarning",
    "Store",
    "VERSION",
    "analysis",
    "diff",
    "export",
    "key_columns",
    "list",
    "load",
    "parts",
    "record",
    "rm",
    "root",
    "run",
    "save",
    "spec_of",
    "sql",
]


def save(result: Result, *, saved_from: str = "python", label: str | None = None) -> str:
    """Saves ``result`` (a :class:`Result` from :func:`run`) in the store; returns the run's id.
    saved_from: which face saved it (``python``, ``cli``, ``app``, ``notebook``, ``reproduce``);
    label: a note shown in the listing."""
    return Store().save(result, saved_from=saved_from, label=label)


def load(run_id: str) -> Result:
    """The saved run ``run_id`` (its id or a unique prefix): frame, meta, provenance, figure."""
    return Store().load(run_id)


def list(
    *,
    model: str | None = None,
    analysis: str | None = None,
    since: str | _dt.date | None = None,
    until: str | _dt.date | None = None,
    status: str | None = "ok",
    saved_from: str | None = None,
    limit: int | None = None,
) -> _pd.DataFrame:
    """The catalog, newest first: ``id, status, saved (UTC), analysis, model, family, n_rows,
    wall_seconds, saved_from, label, git_commit, interp_version, error``.  Filters: exact
    ``model`` / ``analysis`` / ``saved_from``; ``since`` / ``until`` dates (``until`` a day
    includes it); ``status`` ``ok`` (default), ``failed``, ``saving`` or ``all``."""
    return Store().list_runs(
        model=model, analysis=analysis, since=since, until=until, status=status, saved_from=saved_from, limit=limit
    )


def diff(a: Result | str, b: Result | str, *, on=None) -> Diff:
    """Compares two runs (results or run ids): provenance, meta and frame (see :class:`Diff`)."""
    store = Store()
    ra = store.load(a) if isinstance(a, str) else a
    rb = store.load(b) if isinstance(b, str) else b
    return _diff(ra, rb, on=on)


def export(run_id: str, path: str | _Path) -> _Path:
    """Writes a run to ``path``: ``.parquet`` (the frame; the run's JSON in the file's metadata
    under ``interp.run``), ``.json`` (everything) or ``.csv`` (the frame only)."""
    return Store().export(run_id, path)


def rm(run_id: str) -> str:
    """Removes a run (files and catalog row) or a failed save's row; returns its id."""
    return Store().rm(run_id)


def sql(query: str, params: _Params = None) -> _pd.DataFrame:
    """A read-only SQL query over the catalog: table ``runs`` (one row per run; ``meta`` and
    ``arguments`` are JSON), table macros ``run_frame('<id>')`` (one run's frame) and
    ``frames()`` (every frame, columns united by name, with ``run_id``)."""
    return Store().sql(query, params)
