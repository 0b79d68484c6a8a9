"""The mechanisms of the LSTM-cell analyses and of training dynamics against known ground truth:
a hand-wired LSTM cell that counts brackets is the one the detector finds; a hand-built forget
gate is saturated exactly as often as its input says; over_checkpoints on two checkpoints equals
the analysis run on each; a curve's change step is where it was made to change; the Python
features of a known line; `interp train --checkpoints` writes the log-spaced series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import interp
from interp import dynamics
from interp.checkpoint import save_checkpoint
from interp.errors import InputError, Unsupported
from interp.loading import from_module
from interp.recurrent import HookedRecurrent, RecurrentConfig
from interp.recurrent import cells as C
from interp.tasks import loss_by_position
from interp.training import log_schedule

NAMES = ["<bos>", "(", ")", "a"]


def _lstm(d: int = 8, seed: int = 0, cell: str = "lstm") -> HookedRecurrent:
    return HookedRecurrent(
        RecurrentConfig(cell=cell, d_vocab=len(NAMES), d_model=d, n_layers=1, n_ctx=256, seed=seed)
    ).eval()


def _model(module: HookedRecurrent, name: str = "hand-lstm"):
    card = {
        "name": name,
        "arch": "recurrent",
        "config": module.cfg.to_dict(),
        "vocab": {"names": NAMES, "bos": 0, "kind": "chars"},
    }
    return from_module(module, card)


def bracket_counter(d: int = 8) -> HookedRecurrent:
    """An LSTM whose cell 0 adds 0.2 at '(' and subtracts 0.2 at ')': input and forget gates held
    at 1 (bias 20), candidate tanh(+-atanh(0.2)) from embedding dims 0 / 1, no recurrent input;
    every other cell keeps its random weights."""
    m = _lstm(d)
    b = m.blocks[0]
    with torch.no_grad():
        emb = m.embed.weight
        emb[:, :2] = 0
        emb[1, 0] = 1.0  # '('
        emb[2, 1] = 1.0  # ')'
        for row in (0, d, 2 * d):  # cell 0's input gate, forget gate, candidate
            b.W_ih[row] = 0
            b.W_hh[row] = 0
            b.b_ih[row] = 0
            b.b_hh[row] = 0
        b.b_ih[0] = 20.0
        b.b_ih[d] = 20.0
        b.W_ih[2 * d, 0] = math.atanh(0.2)
        b.W_ih[2 * d, 1] = -math.atanh(0.2)
    return m


def _brackets(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Random balanced-ish bracket text (depth 0..4) and its depth after each character."""
    g = np.random.default_rng(seed)
    tokens = np.zeros((n, length), dtype=np.int64)
    depth = np.full((n, length), np.nan)
    for r in range(n):
        d = 0
        for t in range(1, length):
            choice = g.choice(3) if 0 < d < 4 else (g.choice([0, 2]) if d == 0 else g.choice([1, 2]))
            tok = (1, 2, 3)[choice]
            d += 1 if tok == 1 else -1 if tok == 2 else 0
            tokens[r, t] = tok
            depth[r, t] = d
    return torch.from_numpy(tokens), depth


def test_the_detector_finds_the_hand_wired_bracket_cell():
    model = _model(bracket_counter())
    tokens, depth = _brackets(6, 120)
    frame = C.feature_cells(model, tokens, {"bracket_depth": depth}, skip=1)
    assert list(frame.columns) == ["feature", "layer", "cell", "correlation"] and len(frame) == 8
    best = C.best_cells(frame).iloc[0]
    assert (best["layer"], best["cell"]) == (0, 0)
    assert best["correlation"] > 0.99  # tanh(0.2 * depth) is monotone in depth
    others = frame[frame["cell"] != 0]["correlation"].abs()
    assert others.max() < best["correlation"] - 0.05
    # the trace the coloured text shows is tanh(c): 0.2 per open bracket
    trace = C.cell_trace(model, tokens, 0, 0)
    assert np.allclose(trace[:, 1:], np.tanh(0.2 * depth[:, 1:]), atol=1e-5)


def test_gate_saturation_equals_the_known_fraction():
    """Forget gate of unit 0: pre-activation +10 at '(' (f > 0.9), -10 at ')' (f < 0.1), 0 at 'a'
    (f = 0.5): its saturated fractions are the shares of '(' and ')' in the text."""
    m = _lstm(2, seed=1)
    b = m.blocks[0]
    with torch.no_grad():
        m.embed.weight.zero_()
        m.embed.weight[1, 0] = 1.0
        m.embed.weight[2, 1] = 1.0
        b.W_ih[2].zero_()  # forget-gate row of unit 0 (rows d..2d-1 with d = 2)
        b.W_hh[2].zero_()
        b.b_ih[2] = 0
        b.b_hh[2] = 0
        b.W_ih[2, 0], b.W_ih[2, 1] = 10.0, -10.0
    model = _model(m)
    tokens = torch.tensor([[0, 1, 1, 3, 2, 3, 1, 2, 3, 3, 1], [0, 2, 2, 2, 3, 1, 3, 3, 3, 3, 3]])
    sat = C.gate_saturation(model, tokens, skip=1)
    row = sat[(sat["gate"] == "forget_gate") & (sat["unit"] == 0)].iloc[0]
    kept = tokens[:, 1:]
    assert row["right"] == pytest.approx(float((kept == 1).float().mean()))
    assert row["left"] == pytest.approx(float((kept == 2).float().mean()))
    summary = C.saturation_summary(sat)
    assert set(summary["gate"]) == set(C.GATES) and summary["left"].between(0, 1).all()


def test_cell_analyses_decline_models_without_lstm_gates():
    gru = _model(_lstm(4, cell="gru"), "hand-gru")
    with pytest.raises(Unsupported, match="LSTM gates"):
        C.gate_saturation(gru, torch.zeros(1, 5, dtype=torch.long))
    lstm = _model(_lstm(4))
    with pytest.raises(InputError, match="shape"):
        C.feature_cells(lstm, torch.zeros(1, 5, dtype=torch.long), {"x": np.zeros((1, 4))})


def _series(tmp_path, cells=("lstm", "lstm")) -> list:
    stems = []
    for i, (cell, step) in enumerate(zip(cells, (0, 10))):
        m = _lstm(6, seed=i, cell=cell)
        card = {"name": "tiny", "arch": "recurrent", "config": m.cfg.to_dict(), "step": step, "vocab": None}
        save_checkpoint(m, card, tmp_path / f"step-{step:06d}")
        stems.append(tmp_path / f"step-{step:06d}")
    return stems


def test_over_checkpoints_equals_the_analysis_on_each(tmp_path):
    stems = _series(tmp_path)
    tokens = torch.tensor([[0, 1, 3, 2, 1, 3, 3, 2]])

    def loss(model) -> float:
        return float(loss_by_position(model(tokens), tokens).mean())

    def per_cell(model) -> pd.DataFrame:
        return C.feature_cells(model, tokens, {"pos": np.arange(8.0)[None]}, skip=1)

    frame = dynamics.over_checkpoints(stems[::-1], loss)  # any order in, sorted by step out
    assert list(frame["step"]) == [0, 10]
    for stem, value in zip(stems, frame["value"]):
        assert value == loss(interp.load(str(stem)))
    tidy = dynamics.over_checkpoints(stems, per_cell)
    alone = per_cell(interp.load(str(stems[1])))
    pd.testing.assert_frame_equal(
        tidy[tidy["step"] == 10].drop(columns="step").reset_index(drop=True), alone.reset_index(drop=True)
    )


def test_mixed_architectures_are_one_clear_line(tmp_path):
    stems = _series(tmp_path, cells=("lstm", "gru"))
    with pytest.raises(InputError, match="mix 2 architectures") as e:
        dynamics.over_checkpoints(stems, lambda m: 0.0)
    assert "\n" not in str(e.value)


def test_change_step_finds_the_made_change():
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048])
    values = 1 / (1 + np.exp(-4 * (np.log1p(steps) - np.log1p(300))))  # midpoint at step 300
    assert dynamics.change_step(steps, values) == pytest.approx(300, rel=0.08)
    assert dynamics.change_step(steps, 1 - values) == pytest.approx(300, rel=0.08)  # falling alike
    assert math.isnan(dynamics.change_step([0, 1, 2], [1.0, 1.0, 1.0]))


def test_python_features_of_a_known_line():
    from interp.tasks.text import code

    src = 'x = f("a(", [1, 2])\n    y\n'
    f = code.features(src)
    at = {c: i for i, c in reversed(list(enumerate(src)))}  # first index of each character
    assert f["in_string"][src.index('"') : src.index('"', 7) + 1].tolist() == [1, 1, 1, 1]
    assert f["in_string"][at["x"]] == 0
    assert f["bracket_depth"][src.index("a(") + 1] == 1  # the "(" inside the string does not count
    assert f["bracket_depth"][src.index("1")] == 2
    assert f["bracket_depth"][src.index("\n") - 1] == 0  # at the closing ")": depth back to 0
    assert f["indent"][src.index("y")] == 4 and f["line_position"][src.index("y")] == 4


def test_train_cli_saves_a_log_spaced_series(tmp_path):
    from apps.cli import app

    runner = CliRunner()
    out = tmp_path / "ip"
    args = ["train", "induction-phase", "--steps", "20", "--out", str(out), "--checkpoints", "6"]
    result = runner.invoke(app, [*args, "--checkpoint-dtype", "float16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stems = dynamics.series(tmp_path / "ip-checkpoints")
    assert dynamics.steps_of(stems) == [0, 1, 2, 4, 9, 20] == log_schedule(20, 6)
    last = interp.load(str(stems[-1]))
    final = interp.load(str(out))
    toks = torch.randint(1, 64, (2, 12))
    assert torch.allclose(last(toks), final(toks), atol=2e-2)  # float16 copy of the final weights
    bad = runner.invoke(app, [*args[:-1], "1"], catch_exceptions=False)
    assert bad.exit_code == 2 and "Traceback" not in bad.output and ">= 2" in bad.output


def test_head_scores_over_the_shipped_series_equal_heads_scores_on_each():
    from interp import heads

    stems = dynamics.series("induction-phase")[-2:]
    tokens = dynamics.repeated_text(interp.load(str(stems[0])), 4, 16)
    frame = dynamics.over_checkpoints(stems, dynamics.head_scores(tokens, ["prefix_matching", "previous_token"]))
    for step, stem in zip(dynamics.steps_of(stems), stems):
        alone = heads.scores(interp.load(str(stem)), tokens, ["prefix_matching", "previous_token"])
        got = frame[frame["step"] == step].drop(columns="step").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone.reset_index(drop=True))


def test_colored_text_shades_each_character_by_its_value():
    from interp.plots.cells import colored_text

    html = colored_text("a<\n", [-1.0, 1.0, 0.0], title="L0 cell 3")
    spans = html.split('<pre style="')[1]
    assert spans.count("<span") == 3 and "&lt;" in spans  # one span a character, escaped
    assert "rgb(214,39,40)" in spans and "rgb(31,119,180)" in spans and "rgb(255,255,255)" in spans
    assert 'title="-1.00"' in spans and "L0 cell 3" in html
    with pytest.raises(InputError, match="one value per character"):
        colored_text("ab", [0.0])
