"""The Papers page (apps/views/papers.py) driven with AppTest: a finding's card with its published
number, a run's verdict and figure beside it, and a model the finding does not apply to."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "apps" / "app.py")


def papers(source: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model_source"] = source
    at.switch_page("views/papers.py")
    return at.run()


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_papers_page_says_when_a_finding_does_not_apply():
    at = papers("flipflop-lstm")
    ok(at)
    assert at.title[0].value == "Papers"
    at.selectbox(key="papers_finding").select("wu2024").run()
    assert any("Not applicable" in w.value and "without attention" in w.value for w in at.warning)
    assert any(m.label.startswith("Published (Llama-2-7B-80K)") for m in at.metric)
    at.button(key="papers_run").click().run()
    ok(at)
    assert any("not applicable" in i.value for i in at.info), [i.value for i in at.info]


@pytest.mark.reproduce  # the Papers browser test (same stage) runs mcgrath2023 on smollm2 too
def test_papers_page_runs_a_finding_on_the_real_model(smollm2):
    from apps.state import papers as cached
    from interp import runs

    at = papers("smollm2-135m")
    at.selectbox(key="papers_finding").select("mcgrath2023").run()
    at.button(key="papers_run").click().run()
    ok(at)
    assert len(at.get("plotly_chart")) == 1
    boxes = [b.value for b in list(at.success) + list(at.warning) + list(at.info)]
    # the page shows the library's own run (the app's cache, shared with this process)
    stored = cached.run("smollm2-135m", "mcgrath2023", True)
    summary = stored.value.to_json()
    assert any(v.startswith(f"**{summary['verdict']}**") for v in boxes), boxes
    assert any(m.value == f"{summary['ours']:.4g}" for m in at.metric)
    assert any(m.label.startswith("Ours (smollm2-135m)") for m in at.metric)
    # the reproduction is a run like any other: saved from the page, reloaded with its verdict
    at.button(key="save_papers").click().run()
    ok(at)
    rid = next(s.value for s in at.success if s.value.startswith("Saved as run"))[len("Saved as run `") :].split("`")[0]
    again = runs.load(rid)
    assert again.provenance.analysis == "reproduce" and again.meta["verdict"] == summary["verdict"]
    assert again.meta["id"] == "mcgrath2023" and again.draw().data
