"""Causal analysis: corruption, metrics, activation / path / attribution patching, circuit graphs."""
