"""Findings that need causal analysis (path patching, knockouts, resample ablation, activation
patching, causal tracing), registered with :mod:`interp.reproduce` through the ``interp.findings``
entry point (pyproject.toml) and, for a checkout whose install predates it, by importing this
package: each module registers its finding when imported."""

from circuits.reproduce import mcgrath2023, meng2022, sharma2024, wang2022, zhang2023

FINDINGS = (wang2022.FINDING, mcgrath2023.FINDING, zhang2023.FINDING, meng2022.FINDING, sharma2024.FINDING)

__all__ = ["FINDINGS", "mcgrath2023", "meng2022", "sharma2024", "wang2022", "zhang2023"]
