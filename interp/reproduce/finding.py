"""What a reproducible finding is: the paper's claim, its published number(s) and where they
are, the protocol and the verdict rule (:class:`Finding`); what running it gives
(:class:`Outcome` from the experiment, :class:`Result` for the user).

Verdicts: ``reproduced`` (every part of the rule holds, intervals included),
``partial`` (some parts hold), ``not reproduced`` (none holds, or the direction is
reversed), ``not applicable`` (the model cannot run the protocol: the reason says why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from interp.reproduce.stats import Estimate

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from interp.model import Model

REPRODUCED, PARTIAL, NOT_REPRODUCED, NOT_APPLICABLE = "reproduced", "partial", "not reproduced", "not applicable"
VERDICTS = (REPRODUCED, PARTIAL, NOT_REPRODUCED, NOT_APPLICABLE)
#: how a published number was checked: read in a copy of the paper's text, read in the authors'
#: official code or its released results, quoted verbatim with its page / section by other
#: documents (the paper itself was not at hand), or not checked (never a guess)
SOURCES = ("paper", "official code", "quoted", "unverified")


@dataclass(frozen=True)
class Published:
    """A published number: ``value`` (None: the finding is qualitative, e.g. read off a figure),
    the ``model`` it was measured on, ``where`` in the paper (table / figure / section, or the
    file of the official code), ``source`` (one of :data:`SOURCES`), ``unit`` and ``detail``
    (what the number is, and the other numbers reported with it)."""

    value: float | None
    model: str
    where: str
    source: str
    unit: str = ""
    detail: str = ""

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    @property
    def verified(self) -> bool:
        return self.source != "unverified"

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "model": self.model,
            "where": self.where,
            "source": self.source,
            "verified": self.verified,
            "unit": self.unit,
            "detail": self.detail,
        }


@dataclass
class Outcome:
    """What an experiment returns: a tidy ``frame``, a plotly ``figure``, ``ours`` (the headline
    measurement with its interval), the ``verdict`` and its ``reason`` (the rule applied to the
    numbers), ``counts`` (prompts, heads, seeds, tokens used) and ``details`` (other numbers)."""

    frame: pd.DataFrame
    figure: go.Figure
    ours: Estimate | None
    verdict: str
    reason: str
    counts: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    #: the models the experiment measured, when not the one it was given (a finding about models trained
    #: for it, e.g. the recall gap's zoo models: the summary's ``model`` names them)
    models: tuple[str, ...] = ()

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


#: experiment signature: (model, quick, progress) -> Outcome
Experiment = Callable[["Model", bool, bool], Outcome]


@dataclass(frozen=True)
class Finding:
    """One published finding as a runnable experiment.

    id: short name (``olsson2022``).  paper: "Olsson et al. 2022".  citation: the full
    reference.  claim: the finding in one sentence.  published: the headline number
    (:class:`Published`) and ``also``: further published numbers.  metric: what ``ours``
    measures, with its unit.  protocol: prompts, metric, controls and counts.  rule: what
    counts as reproduced, with its tolerance.  requires: what a model needs (names from
    :data:`interp.reproduce.requirements.REQUIREMENTS`); a model lacking one gets ``not
    applicable`` with the reason, up front.  experiment: ``fn(model, quick, progress) ->
    Outcome``.  text: where its text comes from (shipped data, the model's own generations).
    """

    id: str
    paper: str
    citation: str
    claim: str
    published: Published
    metric: str
    protocol: str
    rule: str
    requires: Sequence[str]
    experiment: Experiment
    text: str = ""
    also: Sequence[Published] = ()
    module: str = ""
    #: the finding evaluates models of its own (shipped zoo weights) whatever model it is given, and
    #: ``run(..., retrain=True)`` retrains them first (the experiment takes ``retrain=``)
    retrainable: bool = False

    def describe(self) -> dict:
        """The finding's registry entry as plain data (no experiment)."""
        return {
            "id": self.id,
            "paper": self.paper,
            "citation": self.citation,
            "claim": self.claim,
            "published": self.published.to_dict(),
            "also": [p.to_dict() for p in self.also],
            "metric": self.metric,
            "protocol": self.protocol,
            "rule": self.rule,
            "requires": list(self.requires),
            "text": self.text,
            "module": self.module,
        }


@dataclass
class Result:
    """What :func:`interp.reproduce.run` returns: the tidy ``frame``, the plotly ``figure`` and
    the ``summary`` (``id, paper, claim, model, published, published_model, published_where,
    published_source, ours, ci_low, ci_high, n, unit, verdict, reason, seconds, counts,
    quick, ...``; what ``--json`` writes)."""

    frame: pd.DataFrame
    figure: Any
    summary: dict

    @property
    def verdict(self) -> str:
        return self.summary["verdict"]

    def to_json(self) -> dict:
        """The summary as JSON-ready data (numbers as floats, NaN as None)."""
        import math

        def clean(v):
            if isinstance(v, float):
                return None if math.isnan(v) else (str(v) if math.isinf(v) else v)
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if hasattr(v, "item"):
                return clean(v.item())
            return v

        return clean(dict(self.summary))


def decide(checks: Sequence[tuple[str, bool]]) -> tuple[str, str]:
    """A verdict from the parts of a rule: ``checks`` are (what was tested, whether it held);
    all hold -> reproduced, some -> partial, none -> not reproduced.  The reason lists each."""
    if not checks:
        raise ValueError("a verdict needs at least one check")
    held = [ok for _, ok in checks]
    verdict = REPRODUCED if all(held) else PARTIAL if any(held) else NOT_REPRODUCED
    return verdict, "; ".join(f"{'holds' if ok else 'fails'}: {what}" for what, ok in checks)
