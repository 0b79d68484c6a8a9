"""Turning an analysis call into a :class:`~interp.runs.Result`: the one way to do it.

An analysis is a plain function returning a tidy DataFrame.  Decorated with
``@runs.analysis("name", figure="interp.plots....")`` it records its scalar context with
:func:`record` (what it used to put in ``DataFrame.attrs``) and still returns the DataFrame
to a plain call.  :func:`run` calls any analysis and returns the :class:`Result`: the frame,
the recorded meta, the provenance of the call and the default figure.

    frame = circuits.patch(model, clean, corrupt)                 # a DataFrame, as always
    result = runs.run(circuits.patch, model, clean, corrupt)      # frame + meta + provenance
    result.meta["clean_value"], result.draw()

Each decorated call has its own record (a context variable), so an analysis that calls
another keeps its own meta; ``runs.run(inner, ...)`` inside an analysis gives the inner one's.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from interp.errors import InputError
from interp.runs.result import FigureSpec, Result

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class AnalysisSpec:
    """What ``@analysis`` knows about a function: its short ``name``, the dotted name of its
    default plot function, and ``to_frame`` for an analysis whose value is not a DataFrame
    (e.g. a tensor of attention patterns, a circuit): how :func:`run` makes the run's frame."""

    name: str
    figure: str | None = None
    to_frame: Callable[[Any, dict], pd.DataFrame] | None = None


class _Capture:
    """Where :func:`run` asks the analysis it called (``target``) to leave its meta."""

    def __init__(self, target) -> None:
        self.target = target
        self.meta: dict | None = None


_META: contextvars.ContextVar[dict | None] = contextvars.ContextVar("interp_runs_meta", default=None)
_CAPTURE: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar("interp_runs_capture", default=None)


def analysis(
    name: str, *, figure: str | None = None, to_frame: Callable[[Any, dict], pd.DataFrame] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Marks an analysis: ``name`` (short, e.g. ``"patching"``), ``figure`` (dotted name of the
    plot function that draws its Result by default), ``to_frame`` (for an analysis that returns
    something other than a DataFrame: ``to_frame(value, meta)`` gives the run's tidy frame of
    it).  The call itself is unchanged."""
    spec = AnalysisSpec(name, figure, to_frame)
    if figure is not None:
        FigureSpec(function=figure)  # a name outside the plot modules fails at import, not at the first draw

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            capture = _CAPTURE.get()
            mine = capture if capture is not None and capture.target is wrapper else None
            meta: dict = {}
            t_meta, t_capture = _META.set(meta), _CAPTURE.set(None)  # nested analyses record their own
            try:
                out = fn(*args, **kwargs)
            finally:
                _CAPTURE.reset(t_capture)
                _META.reset(t_meta)
            if mine is not None:
                mine.meta = meta
            elif meta and isinstance(out, pd.DataFrame):
                # Deprecated mirror for code written before interp.runs (read meta from
                # runs.run(...).meta instead): nothing in this repository reads it.
                out.attrs.update(meta)
            return out

        wrapper.__interp_analysis__ = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


def record(**meta: Any) -> None:
    """Records scalar context of the analysis being run (the values its Result's ``meta``
    holds).  Only inside a function decorated with :func:`analysis`."""
    current = _META.get()
    if current is None:
        raise RuntimeError("interp.runs.record() was called outside an analysis: decorate the function with @analysis")
    current.update(meta)


def spec_of(fn) -> AnalysisSpec | None:
    return getattr(fn, "__interp_analysis__", None)


def analysis_name(fn) -> str:
    spec = spec_of(fn)
    if spec is not None:
        return spec.name
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


def run(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Result:
    """Calls ``fn(*args, **kwargs)`` and returns its :class:`Result`: the frame, the meta it
    recorded, the provenance of the call (arguments, model and weights, prompts, seeds,
    versions, commit, device, dtype, wall time) and its default figure.

    ``fn``: an analysis (decorated or any function returning a DataFrame or a Result).  A
    frame an undecorated function returns with ``attrs`` has them moved into ``meta``.  An
    analysis whose value is not a frame (``to_frame``) keeps it in ``Result.value``."""
    from interp.runs.provenance import Provenance

    if not callable(fn):
        raise InputError(f"runs.run takes the analysis function first, got {type(fn).__name__}")
    spec = spec_of(fn)
    capture = _Capture(getattr(fn, "__func__", fn))  # a bound method: its function is the analysis
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    token = _CAPTURE.set(capture)
    try:
        out = fn(*args, **kwargs)
    finally:
        _CAPTURE.reset(token)
    wall = time.perf_counter() - t0
    provenance = Provenance.capture(fn, args, kwargs, started=started, wall_seconds=wall)
    value = None
    if isinstance(out, Result):  # an analysis that builds its own Result (e.g. a reproduction)
        meta = {**(capture.meta or {}), **out.meta}
        frame = out.frame
        figure = out.figure
        value = out.value
    else:
        if spec is not None and spec.to_frame is not None:
            frame = spec.to_frame(out, capture.meta or {})
            value = out
        elif isinstance(out, pd.DataFrame):
            frame = out
        else:
            raise InputError(
                f"{analysis_name(fn)} returned a {type(out).__name__}, not a DataFrame: runs.run takes an "
                "analysis that returns a tidy frame (or one decorated with @runs.analysis(..., to_frame=...))"
            )
        meta = {**frame.attrs, **(capture.meta or {})}  # legacy attrs of an undecorated function
        figure = FigureSpec(function=spec.figure) if spec is not None and spec.figure else None
    frame = frame.copy(deep=False)
    frame.attrs = {}
    return Result(frame, meta, provenance, figure, value=value)
