"""Causal tracing's published findings run in full: Meng et al. 2022 (ROME) on smollm2-135m and
Sharma et al. 2024 on the zoo's facts-2l / facts-mamba (shipped weights, not retrained).  Each
verdict is the one measured when the entry was written.

Marked ``reproduce`` (``make test`` leaves it out; ``.ci/run`` runs it after): about 2 minutes on
2 shared CPU cores."""

from __future__ import annotations

import pytest

from interp import reproduce

pytestmark = [pytest.mark.reproduce]

EXPECTED = {"meng2022": "reproduced", "sharma2024": "reproduced"}


def test_meng2022_on_smollm2(smollm2):
    r = reproduce.run("meng2022", smollm2)
    s = r.summary
    assert s["verdict"] == EXPECTED["meng2022"], s["reason"]
    assert s["model"] == "smollm2-135m" and s["n"] == s["counts"]["facts"] >= 6
    # the facts traced are ones the model knows: their clean probability is the arg-max's
    assert s["counts"]["known_to_the_model"] < s["counts"]["single_token_object"] <= s["counts"]["facts_offered"]
    assert (r.frame.groupby("fact")["clean"].first() > r.frame.groupby("fact")["corrupted"].first()).all()
    assert s["ci_low"] <= s["ours"] <= s["ci_high"]


def test_sharma2024_on_the_shipped_models():
    s = reproduce.run("sharma2024", "facts-2l").summary  # the given model does not matter: it loads both
    assert s["verdict"] == EXPECTED["sharma2024"], s["reason"]
    assert s["model"] == "facts-2l, facts-mamba" and not s["details"]["retrained"]
    assert s["counts"]["facts_facts-mamba"] == s["n"] == 48
    assert s["ci_low"] > 0
    # both models store every fact (the cards' accuracy 1.0), so every fact offered is known
    assert s["counts"]["known_facts-2l"] == s["counts"]["known_facts-mamba"] == s["counts"]["facts_offered"] == 256
