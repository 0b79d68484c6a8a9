"""What an analysis run gives: its tidy frame, the scalar context that used to ride in
``DataFrame.attrs`` (``meta``), where it came from (:class:`~interp.runs.provenance.Provenance`)
and how to draw it (:class:`FigureSpec`).

Meta and figure specs are stored as JSON; :func:`encode` / :func:`decode` keep the types an
analysis puts there (tuples, small frames, arrays, NaN) through the round trip.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.errors import InputError

if TYPE_CHECKING:
    from interp.runs.provenance import Provenance

#: modules whose public functions a stored figure spec may name (a run file from elsewhere
#: must not make the workbench import and call arbitrary code)
PLOT_MODULES = ("interp.plots", "circuits.plots", "circuits.plots_tracing")


@dataclass
class FigureSpec:
    """How a run is drawn: a plot function by dotted name (``"circuits.plots.patching_heatmap"``)
    called as ``function(result, **kwargs)``, or a finished plotly figure as ``json``."""

    function: str | None = None
    kwargs: dict = field(default_factory=dict)
    json: str | None = None

    def __post_init__(self):
        if (self.function is None) == (self.json is None):
            raise InputError("a figure spec names a plot function or holds a figure's JSON, exactly one of them")
        if self.function is not None:
            _check_plot_name(self.function)  # refuse a name outside the plot modules up front (imported at draw)

    @classmethod
    def of(cls, figure, **kwargs) -> FigureSpec:
        """A spec from a plot function (its dotted name and ``kwargs``) or from a finished
        ``plotly.graph_objects.Figure`` (kept as JSON)."""
        if callable(figure) and hasattr(figure, "__module__") and hasattr(figure, "__qualname__"):
            return cls(function=f"{figure.__module__}.{figure.__qualname__}", kwargs=dict(kwargs))
        if isinstance(figure, str):
            return cls(function=figure, kwargs=dict(kwargs))
        if hasattr(figure, "to_json"):
            if kwargs:
                raise InputError("a finished figure takes no keyword arguments")
            return cls(json=figure.to_json())
        raise InputError(f"a figure is a plot function or a plotly figure, got {type(figure).__name__}")

    def draw(self, result: Result):
        """The plotly figure of ``result``."""
        if self.json is not None:
            import plotly.io as pio

            return pio.from_json(self.json)
        assert self.function is not None
        return plot_function(self.function)(result, **self.kwargs)

    def to_dict(self) -> dict:
        return {"function": self.function, "kwargs": encode(self.kwargs), "json": self.json}

    @classmethod
    def from_dict(cls, d: dict | None) -> FigureSpec | None:
        if not d:
            return None
        return cls(function=d.get("function"), kwargs=decode(d.get("kwargs") or {}), json=d.get("json"))


def _check_plot_name(name: str) -> tuple[str, str]:
    module, _, attr = str(name).rpartition(".")
    if not module or attr.startswith("_") or not any(module == m or module.startswith(m + ".") for m in PLOT_MODULES):
        raise InputError(f"figure function {name!r} is not a plot function (one of the modules {list(PLOT_MODULES)})")
    return module, attr


def plot_function(name: str):
    """The plot function a spec names; only public functions of :data:`PLOT_MODULES`."""
    module, attr = _check_plot_name(name)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise InputError(f"figure function {name!r} does not exist in this version of interp") from None
    if not callable(fn) or getattr(fn, "__module__", None) != module:
        raise InputError(f"figure function {name!r} is not a plot function defined in {module}")
    return fn


@dataclass(eq=False)  # frames do not compare to a bool: compare runs with interp.runs.diff
class Result:
    """One analysis run: ``frame`` (the tidy DataFrame the analysis returns), ``meta`` (its
    scalar context: clean / corrupt values, the metric's label, the engine, totals ...),
    ``provenance`` (what produced it) and ``figure`` (how to draw it; :meth:`draw`).
    ``id`` is the run's id in the store once saved or loaded.  ``value``: the analysis's own
    return value when that is not the frame (a circuit, a tensor of patterns), in memory only
    (None once saved and loaded)."""

    frame: pd.DataFrame
    meta: dict = field(default_factory=dict)
    provenance: Provenance | None = None
    figure: FigureSpec | None = None
    id: str | None = None
    value: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.frame, pd.DataFrame):
            raise InputError(f"a result's frame is a pandas DataFrame, got {type(self.frame).__name__}")
        if not isinstance(self.meta, dict):
            raise InputError(f"a result's meta is a dict, got {type(self.meta).__name__}")

    @property
    def analysis(self) -> str:
        return self.provenance.analysis if self.provenance is not None else ""

    def draw(self, **kwargs):
        """The run's plotly figure (None when it has no figure spec); ``kwargs`` override the
        spec's keyword arguments."""
        if self.figure is None:
            return None
        if kwargs:
            if self.figure.function is None:
                raise InputError("this run's figure is a finished figure: it takes no keyword arguments")
            return FigureSpec(self.figure.function, {**self.figure.kwargs, **kwargs}).draw(self)
        return self.figure.draw(self)

    def with_figure(self, figure, **kwargs) -> Result:
        """A copy whose figure is ``figure`` (a plot function with ``kwargs``, or a finished
        plotly figure): what a page or notebook drew, so the reloaded run draws the same."""
        return dataclasses.replace(self, figure=FigureSpec.of(figure, **kwargs))

    def __repr__(self) -> str:
        what = self.analysis or "result"
        rid = f" {self.id}" if self.id else ""
        return f"<Result{rid} {what}: {len(self.frame)} rows x {self.frame.shape[1]} columns, meta {sorted(self.meta)}>"


def parts(x) -> tuple[pd.DataFrame, dict]:
    """``(frame, meta)`` of a :class:`Result` or of a plain DataFrame (empty meta): what plot
    functions call so that they take either."""
    if isinstance(x, Result):
        return x.frame, x.meta
    if isinstance(x, pd.DataFrame):
        return x, {}
    raise InputError(f"expected a DataFrame or an interp.runs.Result, got {type(x).__name__}")


# --- JSON codec of meta values ------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data; tuples, frames, arrays, non-finite floats and dicts with
    non-string keys are tagged so :func:`decode` gives them back."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, pd.DataFrame):
        split = value.reset_index(drop=True).to_dict(orient="split")
        dtypes = {str(c): str(t) for c, t in value.dtypes.items()}
        return {
            "__frame__": {"columns": encode(list(split["columns"])), "data": encode(split["data"]), "dtypes": dtypes}
        }
    if isinstance(value, pd.Series):
        return encode(value.to_dict())
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return {"__array__": encode(value.tolist()), "dtype": str(value.dtype)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return {"__repr__": repr(value)[:500]}


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (objects stored by ``repr`` come back as that string)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__items__" in value:
        return {_hashable(decode(k)): decode(v) for k, v in value["__items__"]}
    if "__frame__" in value:
        f = value["__frame__"]
        df = pd.DataFrame(decode(f["data"]), columns=decode(f["columns"]))
        for col, dtype in (f.get("dtypes") or {}).items():
            if col in df.columns and dtype not in ("object", "str", "string"):
                try:
                    df[col] = df[col].astype(dtype)
                except (TypeError, ValueError):
                    pass  # a dtype pandas cannot rebuild from the values: keep what it inferred
        return df
    if "__array__" in value:
        return np.asarray(decode(value["__array__"]), dtype=value.get("dtype"))
    if "__repr__" in value:
        return value["__repr__"]
    return {k: decode(v) for k, v in value.items()}


def _hashable(k):
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k
