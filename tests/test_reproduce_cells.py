"""The two findings about models trained for them, run in full on the shipped weights: the
induction phase change over the shipped induction-phase checkpoints (olsson2022_phase) and the
interpretable cells and gate saturation of code-lstm (karpathy2015).  Each verdict is the one
measured when the entry was written; the summary names the models measured.

Marked ``reproduce`` (about 30 s together on 2 busy cores)."""

from __future__ import annotations

import pytest

from interp import reproduce

pytestmark = pytest.mark.reproduce


@pytest.fixture(scope="module")
def given():
    import interp

    return interp.load("induction-2l")  # any model: these findings measure their own


def test_phase_change_on_the_shipped_checkpoints(given):
    result = reproduce.run("olsson2022_phase", given)
    s = result.summary
    assert s["verdict"] == "reproduced", s["reason"]
    assert s["model"] == "induction-phase" and s["given_model"] == "induction-2l"
    steps = s["details"]["change_steps"]
    three = [steps[m] for m in ("repeat_loss", "prefix_matching", "icl_score")]
    assert max(three) / min(three) <= 1.5 and s["ci_high"] <= 1.5
    assert 100 < min(three) < 1500  # the change happens inside training, not at its ends
    # the heads followed are the ones detected (prefix matching > 0.3 on the last checkpoint), all in layer 1
    assert s["details"]["induction_heads"] and all(h.startswith("L1") for h in s["details"]["induction_heads"])
    assert s["counts"]["checkpoints"] == 24
    frame = result.frame
    assert set(frame["measure"]) >= {"repeat_loss", "prefix_matching", "icl_score"}
    assert len(result.figure.data) >= 6


def test_lstm_cells_on_code_lstm(given):
    result = reproduce.run("karpathy2015", given)
    s = result.summary
    assert s["verdict"] == "partial", s["reason"]
    assert s["model"] == "code-lstm"
    best = {r["feature"]: r for r in s["details"]["best_cells"]}
    assert set(best) == {"in_string", "bracket_depth", "indent", "line_position"}
    # a cell tracks the position in the line on held-out text (interval beyond 0.5)
    assert abs(best["line_position"]["correlation"]) > 0.5 and best["line_position"]["low"] > 0.5
    assert s["details"]["heldout_bits_per_char"]["value"] < 2.5
    assert s["ci_low"] <= s["ours"] <= s["ci_high"]


def test_retrain_is_refused_for_findings_about_the_given_model(given):
    from interp.errors import InputError

    with pytest.raises(InputError, match="nothing to retrain"):
        reproduce.run("olsson2022", given, retrain=True)


def test_code_lstm_card_is_what_it_reaches():
    """The shipped code-lstm's card records the held-out bits per character it reaches (recomputed)."""
    import torch

    import interp
    from interp import zoo
    from interp.training import meets_card
    from interp.zoo.recipes import get_recipe

    card = zoo.card("code-lstm")
    with torch.no_grad():
        metrics = get_recipe("code-lstm").evaluate(interp.load("code-lstm"))
    assert meets_card(card, metrics)
    assert metrics["heldout_bpc"] == pytest.approx(card["metrics"]["heldout_bpc"], abs=1e-4)


def test_papers_page_runs_the_phase_change_and_names_its_model():
    from tests.test_app import make_app, ok

    at = make_app("papers")
    at.selectbox(key="papers_finding").set_value("olsson2022_phase").run()
    assert "measures models trained for it" in " ".join(c.value for c in at.caption)
    at.button(key="papers_run").click().run()
    ok(at)
    assert at.success and at.success[0].value.startswith("**reproduced**")
    assert any(m.label == "Ours (induction-phase)" for m in at.metric)
