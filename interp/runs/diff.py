"""Two runs compared: what differs in how they were made (provenance), in their context (meta)
and in their frames, cell by cell (rows matched on the frames' coordinate columns)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from interp.errors import InputError
from interp.runs.result import FigureSpec, Result

#: provenance fields that differ between any two runs (not a difference in what was computed)
VOLATILE = ("started", "wall_seconds", "seeds.torch_initial_seed")


@dataclass
class Diff:
    """``a`` and ``b`` compared.

    provenance / meta: ``DataFrame[field, a, b]``, the differing leaves (nested keys joined by
    dots; run-to-run noise such as the start time listed too, last).  frame: ``on`` (the key
    columns rows are matched on, or ``row``: by position) then, per compared column, ``<col>_a``,
    ``<col>_b`` and, for numbers, ``<col>_diff`` (b - a); ``_in``: ``both``, ``a`` or ``b``.
    summary: rows of each, rows matched, the largest |b - a| per numeric column, ``equal``.
    """

    a: Result
    b: Result
    on: list[str]
    values: list[str]
    provenance: pd.DataFrame
    meta: pd.DataFrame
    frame: pd.DataFrame
    summary: dict = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return bool(self.summary.get("equal"))

    def figure(self):
        """``a``'s figure drawn on the differences b - a (matched rows; numeric columns), or None
        when ``a`` has no plot function or the rows could not be matched on keys."""
        spec = self.a.figure
        if spec is None or spec.function is None or self.on == ["row"] or not self.values:
            return None
        both = self.frame[self.frame["_in"] == "both"]
        numeric = [c for c in self.values if f"{c}_diff" in both.columns]
        if not numeric:
            return None
        data = {k: both[k].to_numpy() for k in self.on}
        for c in self.a.frame.columns:
            if c in numeric:
                data[c] = both[f"{c}_diff"].to_numpy()
            elif c not in data and f"{c}_a" in both.columns:
                data[c] = both[f"{c}_a"].to_numpy()
        frame = pd.DataFrame(data)[[c for c in self.a.frame.columns if c in data]]
        delta = dataclasses.replace(self.a, frame=frame.reset_index(drop=True), id=None)
        kwargs = dict(spec.kwargs)
        return FigureSpec(spec.function, kwargs).draw(delta)


def _flatten(d, prefix: str = "") -> dict:
    out: dict = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(x, Mapping) for x in d):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = d
    return out


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
        return True
    try:
        eq = x == y
        return bool(eq.all()) if hasattr(eq, "all") else bool(eq)
    except (TypeError, ValueError):
        return repr(x) == repr(y)


def _compare(a: Mapping, b: Mapping) -> pd.DataFrame:
    fa, fb = _flatten(a), _flatten(b)
    rows = [
        {"field": k, "a": _show(fa.get(k)), "b": _show(fb.get(k))}
        for k in list(dict.fromkeys([*fa, *fb]))
        if not _same(fa.get(k), fb.get(k))
    ]
    df = pd.DataFrame(rows, columns=["field", "a", "b"])
    noisy = df["field"].isin(VOLATILE)
    return pd.concat([df[~noisy], df[noisy]], ignore_index=True)


def _show(v):
    if isinstance(v, (list, tuple, dict, np.ndarray, pd.DataFrame)):
        text = repr(v)
        return text if len(text) <= 300 else text[:297] + "..."
    return v


def key_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """The shortest run of the frames' shared non-float columns (in ``a``'s order) that
    identifies every row of both; ``["row"]`` (match by position) if there is none."""
    shared = [c for c in a.columns if c in b.columns and a[c].dtype.kind != "f" and b[c].dtype.kind != "f"]
    for n in range(1, len(shared) + 1):
        keys = shared[:n]
        try:
            if not a.duplicated(keys).any() and not b.duplicated(keys).any():
                return keys
        except TypeError:  # unhashable values (lists): cannot be keys
            return ["row"]
    return ["row"]


def diff(a: Result, b: Result, *, on: Sequence[str] | None = None) -> Diff:
    """Compares two results (see :class:`Diff`).  on: the key columns (default
    :func:`key_columns`)."""
    for name, r in (("a", a), ("b", b)):
        if not isinstance(r, Result):
            raise InputError(f"diff takes two interp.runs.Result (or run ids); {name} is a {type(r).__name__}")
    fa, fb = a.frame, b.frame
    keys = list(on) if on is not None else key_columns(fa, fb)
    if keys != ["row"]:
        missing = [k for k in keys if k not in fa.columns or k not in fb.columns]
        if missing:
            raise InputError(f"key columns {missing} are not in both frames")
        for name, f in (("a", fa), ("b", fb)):
            if f.duplicated(keys).any():
                raise InputError(f"the key columns {keys} repeat in frame {name}: they do not identify its rows")
    else:
        fa, fb = fa.assign(row=np.arange(len(fa))), fb.assign(row=np.arange(len(fb)))
    values = [c for c in a.frame.columns if c in b.frame.columns and c not in keys]
    merged = fa[keys + values].merge(
        fb[keys + values], on=keys, how="outer", suffixes=("_a", "_b"), indicator="_in", sort=False
    )
    merged["_in"] = merged["_in"].map({"both": "both", "left_only": "a", "right_only": "b"}).astype(str)
    out = merged[keys].copy()
    largest: dict = {}
    for c in values:
        ca, cb = merged[f"{c}_a"], merged[f"{c}_b"]
        out[f"{c}_a"], out[f"{c}_b"] = ca, cb
        if ca.dtype.kind in "fiub" and cb.dtype.kind in "fiub" and ca.dtype.kind != "b":
            d = cb.astype(float) - ca.astype(float)
            out[f"{c}_diff"] = d
            largest[c] = float(np.nanmax(np.abs(d.to_numpy()))) if d.notna().any() else 0.0
        else:
            out[f"{c}_changed"] = [not _same(x, y) for x, y in zip(ca, cb)]
    out["_in"] = merged["_in"]
    both = int((out["_in"] == "both").sum())
    changed = {c: int(out[f"{c}_changed"].sum()) for c in values if f"{c}_changed" in out.columns}
    summary = {
        "rows_a": len(a.frame),
        "rows_b": len(b.frame),
        "matched": both,
        "only_a": int((out["_in"] == "a").sum()),
        "only_b": int((out["_in"] == "b").sum()),
        "on": keys,
        "max_abs_diff": largest,
        "changed": changed,
        "columns_only_a": [c for c in a.frame.columns if c not in b.frame.columns],
        "columns_only_b": [c for c in b.frame.columns if c not in a.frame.columns],
    }
    summary["equal"] = (
        both == len(a.frame) == len(b.frame)
        and not summary["columns_only_a"]
        and not summary["columns_only_b"]
        and all(v == 0 for v in largest.values())
        and all(v == 0 for v in changed.values())
    )
    pa = a.provenance.to_dict() if a.provenance is not None else {}
    pb = b.provenance.to_dict() if b.provenance is not None else {}
    return Diff(a, b, keys, values, _compare(pa, pb), _compare(a.meta, b.meta), out, summary)
