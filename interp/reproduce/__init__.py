"""Published interpretability findings as runnable experiments with a verdict.

``interp.reproduce.run("olsson2022", model)`` runs one finding on any model and returns a
:class:`Result`: a tidy frame, a plotly figure and a summary with the published number (the
model it was measured on, where in the paper, how it was checked) beside ours (with a 95%
bootstrap interval over prompts, rows or seeds, and its sample size) and the verdict
(``reproduced`` / ``partial`` / ``not reproduced`` / ``not applicable``).
``run_many(ids, models, executor="ray")`` runs several findings on several models, each
(model, finding) pair one task.  ``list_findings()`` lists the registry.  One small module per paper; findings that need
causal analysis live in ``circuits.reproduce`` and register through the ``interp.findings``
entry point.
"""

from interp.reproduce.finding import (
    NOT_APPLICABLE,
    NOT_REPRODUCED,
    PARTIAL,
    REPRODUCED,
    SOURCES,
    VERDICTS,
    Finding,
    Outcome,
    Published,
    Result,
)
from interp.reproduce.registry import findings, get, list_findings, plugin_errors, register, run, run_many
from interp.reproduce.stats import Estimate, bootstrap

__all__ = [
    "NOT_APPLICABLE",
    "NOT_REPRODUCED",
    "PARTIAL",
    "REPRODUCED",
    "SOURCES",
    "VERDICTS",
    "Estimate",
    "Finding",
    "Outcome",
    "Published",
    "Result",
    "bootstrap",
    "findings",
    "get",
    "list_findings",
    "plugin_errors",
    "register",
    "run",
    "run_many",
]
