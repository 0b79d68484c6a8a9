"""Patching metrics: the core's one metric type, :mod:`interp.metrics`, under the name
``circuits.metrics`` that analyses and notebooks use (``circuits.metrics.logit_diff(a, b)``)."""

from interp.metrics import (  # noqa: F401
    IGNORE,
    KINDS,
    Metric,
    accuracy,
    default_metric,
    from_labels,
    kl,
    logit,
    logit_diff,
    logprob,
    loss,
    normalise,
    prob,
    set_logodds,
    set_prob,
)
