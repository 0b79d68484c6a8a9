"""The Training and Cells pages driven with ``streamlit.testing.v1.AppTest``: their numbers are the
library's on the same input, the step slider moves the marked step, bad input is one message."""

from __future__ import annotations

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app import APP, decode, ok


def make_app(page: str, source: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if source is not None:
        at.session_state["model_source"] = source
    at.switch_page(f"views/{page}.py")
    return at.run()


def figures(at: AppTest) -> list:
    return [pio.from_json(el.proto.spec) for el in at.get("plotly_chart")]


def test_training_page_marks_the_chosen_step_and_shows_the_detected_heads():
    from apps.state.training import ROWS
    from interp import dynamics

    at = make_app("training")
    ok(at)
    stems = dynamics.series("induction-phase")
    curves, heads = dynamics.phase_curves(stems, n=ROWS, group=4)
    changes = dynamics.change_steps(curves)
    shown = {m.label: m.value for m in at.metric}
    assert shown["checkpoints"] == str(len(stems))
    assert shown["loss drop at step"] == f"{changes['repeat_loss']:.0f}"
    assert shown["prefix-matching jump at step"] == f"{changes['prefix_matching']:.0f}"
    slider = at.select_slider(key="training_step")
    assert list(slider.options) == [str(s) for s in dynamics.steps_of(stems)]
    phase, *attention = figures(at)
    assert len(attention) == len(heads)  # one pattern per detected head
    grey = [s for s in phase.layout.shapes if s.line.color == "#444"]
    assert grey and grey[0].x0 == float(slider.value)
    slider.set_value(1033).run()
    ok(at)
    phase, *attention = figures(at)
    assert [s.x0 for s in phase.layout.shapes if s.line.color == "#444"][0] == 1033.0
    assert f"L{heads[0][0]}H{heads[0][1]} at step 1033" in attention[0].layout.title.text
    # the pattern drawn is the checkpoint's own attention on the page's [BOS] r r row
    import interp
    from interp.attention import attention_patterns

    model = interp.load(str(dict(zip(dynamics.steps_of(stems), stems))[1033]))
    l, h = heads[0]
    expected = attention_patterns(model, dynamics.repeated_text(model, 1, 16, seed=1), [l])[0, h].numpy()
    z = np.nan_to_num(decode(attention[0].data[0].z))
    assert np.allclose(z, np.nan_to_num(expected), atol=1e-6)


def test_training_page_bad_folder_is_a_message(tmp_path):
    at = make_app("training")
    at.selectbox(key="training_series").set_value("a folder of my own").run()
    at.text_input(key="training_folder").input(str(tmp_path / "nothing")).run()
    assert not at.exception
    assert len(at.error) == 1 and "neither a shipped checkpoint series" in at.error[0].value


def test_cells_page_finds_the_librarys_cells_and_colours_the_text():
    import interp
    from interp.recurrent import cells as C
    from interp.tasks.text import code

    at = make_app("cells", source="code-lstm")
    ok(at)
    model = interp.load("code-lstm")
    held = code.corpus(code.HELDOUT_FILES)
    tokens, starts = held.windows(8, 384, seed=10_000_019)
    best = C.best_cells(C.feature_cells(model, tokens, held.window_features(starts, 384), skip=64))
    table = at.dataframe[0].value
    assert list(table["feature"]) == list(best["feature"])
    assert list(table["cell"]) == list(best["cell"])
    assert np.allclose(table["correlation"], best["correlation"].round(3))
    html = at.get("html")[0].proto.body
    assert html.count('<span style="background:') == 383 + 3  # a span per character, 3 in the legend
    assert "interp-cell-text" in html


def test_cells_page_on_a_model_without_lstm_gates_offers_code_lstm():
    at = make_app("cells", source="induction-2l")
    assert not at.exception and not at.error
    assert "no LSTM gates" in at.info[0].value
    at.button(key="cells_use").click().run()
    assert not at.exception
    assert at.session_state["model_source"] == "code-lstm"


@pytest.mark.parametrize("page", ["training", "cells"])
def test_new_pages_are_in_the_navigation(page):
    from pathlib import Path

    assert f'"views/{page}.py"' in Path(APP).read_text()


def test_cells_page_on_an_lstm_of_another_vocabulary_says_why():
    at = make_app("cells", source="flipflop-lstm")
    assert not at.exception and not at.error
    assert "another vocabulary" in at.info[0].value
