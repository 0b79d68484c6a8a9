"""Steering vectors: CAA / PCA / ActAdd, apply / ablate / arithmetic, save-load, the sweep,
an RNN through its hidden state, the pairs file and the CLI.

Ground truth: steer-2l's mode token picks the vocabulary half (interp.tasks.mode_sequences),
flipflop-lstm's answer at READ is the stored bit (interp.tasks.flip_flop).
"""

from __future__ import annotations

import json

import pytest
import torch

import interp
from interp import metrics, runs, steering, tasks
from interp.steering import SteeringVector

N_CTX = 16
_, HALF_B = tasks.mode_halves(64)
COEFS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.fixture(scope="module")
def pairs() -> tasks.ContrastPairs:
    return tasks.mode_contrast_pairs(16, d_vocab=64, n_ctx=N_CTX, seed=0)


@pytest.fixture(scope="module")
def mode_a() -> torch.Tensor:
    return tasks.mode_sequences(16, d_vocab=64, n_ctx=N_CTX, mode=0, seed=5).tokens


@pytest.fixture(scope="module")
def vec0(steer_model, pairs) -> SteeringVector:
    return SteeringVector.from_pairs(steer_model, pairs, layer=0)


@pytest.fixture(scope="module")
def steer_run(steer_model, pairs, mode_a) -> runs.Result:
    neutral = tasks.mode_sequences(16, d_vocab=64, n_ctx=N_CTX, mode=1, seed=6).tokens
    return runs.run(
        steering.sweep,
        steer_model,
        pairs,
        [0, 1],
        COEFS,
        mode_a,
        half_b_everywhere(),
        neutral_prompts=neutral,
        progress=False,
    )


@pytest.fixture(scope="module")
def steer_sweep(steer_run):
    return steer_run.frame


def half_b_everywhere() -> metrics.Metric:
    """Probability mass on vocabulary half B at every position of a mode-A prompt."""
    return metrics.set_prob(HALF_B, pos=[list(range(N_CTX))])


@pytest.fixture(scope="module")
def flipflop_model() -> interp.Model:
    return interp.load("flipflop-lstm")


# --- the done-when on steer-2l ---------------------------------------------------------------


def test_caa_steers_the_mode_monotonically(steer_run):
    df = steer_run.frame
    assert steer_run.meta["baseline_behaviour"] < 0.01
    steer = df[df.vector == "steer"]
    for layer, part in steer.groupby("layer"):
        b = part.sort_values("coef")["behaviour"].to_numpy()
        assert b[0] < 0.01, layer  # coef 0 = unsteered
        assert (b[1:] >= b[:-1] - 1e-3).all(), (layer, b)  # monotone in the coefficient
    best = steer.groupby("layer")["behaviour"].max()
    assert best.max() > 0.9


def test_random_control_of_equal_norm_does_not_move_it(steer_sweep):
    df = steer_sweep
    steer, rand = df[df.vector == "steer"], df[df.vector == "random"]
    assert (rand.groupby("layer")["norm"].first() == steer.groupby("layer")["norm"].first()).all()
    for layer in (0, 1):
        s = steer[steer.layer == layer].set_index("coef")["behaviour"]
        r = rand[rand.layer == layer].set_index("coef")["behaviour"]
        reach = s[s > 0.9].index.min()  # where the vector has flipped the mode
        assert r.loc[:reach].max() < 0.1, (layer, r.to_dict())
        assert s.loc[reach] - r.loc[reach] > 0.8


def test_damage_rises_with_strength(steer_run):
    df = steer_run.frame
    assert steer_run.meta["damage_on"] == "neutral"
    for (layer, kind), part in df.groupby(["layer", "vector"]):
        d = part.sort_values("coef")["damage"].to_numpy()
        assert d[0] == pytest.approx(0.0, abs=1e-6)
        assert (d[1:] >= d[:-1] - 1e-5).all(), (layer, kind, d)
        assert d[-1] > d[0]
    loss = df[df.vector == "steer"].sort_values("coef").groupby("layer")["neutral_loss"].agg(["first", "last"])
    assert (loss["last"] >= loss["first"]).all()


# --- building -------------------------------------------------------------------------------


def test_caa_is_the_mean_activation_difference(steer_model, pairs, vec0):
    _, pc = steer_model.run_with_cache(pairs.positive, names=["blocks.0.hook_resid_post"])
    _, nc = steer_model.run_with_cache(pairs.negative, names=["blocks.0.hook_resid_post"])
    want = (pc["blocks.0.hook_resid_post"][:, -1] - nc["blocks.0.hook_resid_post"][:, -1]).mean(0)
    torch.testing.assert_close(vec0.vector, want)
    assert (vec0.site, vec0.layer, vec0.method, vec0.model_name, vec0.d_model) == (
        "blocks.0.hook_resid_post",
        0,
        "caa",
        "steer-2l",
        64,
    )
    assert vec0.pairs["positive"] == pairs.positive.tolist()
    assert df_rows_are_tidy(steer_model, pairs)


def df_rows_are_tidy(model, pairs) -> bool:
    pos, neg = pairs.tokens(model)
    return pos.tokens.shape == neg.tokens.shape == (16, N_CTX) and not pos.padded


def test_pca_and_actadd(steer_model, pairs, vec0):
    pca = SteeringVector.from_pairs(steer_model, pairs, layer=0, method="pca")
    cos = torch.nn.functional.cosine_similarity(pca.vector, vec0.vector, dim=0)
    assert cos > 0.9 and pca.norm == pytest.approx(vec0.norm, rel=0.2)
    one = SteeringVector.from_prompts(steer_model, pairs.positive[0].tolist(), pairs.negative[0].tolist(), layer=0)
    _, pc = steer_model.run_with_cache(pairs.positive[:1], names=["blocks.0.hook_resid_post"])
    _, nc = steer_model.run_with_cache(pairs.negative[:1], names=["blocks.0.hook_resid_post"])
    torch.testing.assert_close(one.vector, (pc["blocks.0.hook_resid_post"] - nc["blocks.0.hook_resid_post"])[0, -1])
    assert one.method == "actadd"
    text = SteeringVector.from_prompts(steer_model, "B b40 b33", "A a5 a9", layer=1)
    assert text.site == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="one prompt pair"):
        SteeringVector.from_pairs(steer_model, pairs, layer=0, method="actadd")


# --- applying ---------------------------------------------------------------------------------


def test_apply_is_causal_composes_and_cleans_up(steer_model, vec0, mode_a):
    m, x = steer_model, mode_a[:4]
    base = m(x)
    with vec0.apply(m, coef=0.3, start_pos=5):
        steered = m(x)
        with vec0.apply(m, coef=0.5, start_pos=5):  # composes with the outer hook
            both = m(x)
    torch.testing.assert_close(steered[:, :5], base[:, :5], rtol=0, atol=0)
    assert (steered[:, 5:] - base[:, 5:]).abs().max() > 1e-3
    with vec0.apply(m, coef=0.8, start_pos=5):
        once = m(x)
    torch.testing.assert_close(both, once, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m(x), base, rtol=0, atol=0)  # hooks gone after the block
    with (0.8 * vec0).apply(m, coef=1.0, start_pos=5):
        torch.testing.assert_close(m(x), once, rtol=1e-4, atol=1e-4)


def test_arithmetic(steer_model, pairs, vec0):
    v1 = SteeringVector.from_pairs(steer_model, pairs, layer=1)
    other = SteeringVector.from_pairs(steer_model, pairs, layer=0, answer_pos=3)
    torch.testing.assert_close((vec0 + other).vector, vec0.vector + other.vector)
    torch.testing.assert_close((vec0 - other).vector, vec0.vector - other.vector)
    torch.testing.assert_close((2 * vec0).vector, 2 * vec0.vector)
    torch.testing.assert_close((-vec0 / 2).vector, -0.5 * vec0.vector)
    assert (vec0 - vec0).norm == 0
    with pytest.raises(ValueError, match="differ"):
        vec0 + v1
    with pytest.raises(ValueError, match="finite"):
        vec0 * float("nan")
    r = vec0.random_like(seed=1)
    assert r.norm == pytest.approx(vec0.norm, rel=1e-5) and r.method == "random"
    assert abs(torch.nn.functional.cosine_similarity(r.vector, vec0.vector, dim=0)) < 0.5


def test_ablate_projects_the_direction_out(steer_model, vec0, pairs):
    m, site = steer_model, vec0.site
    u = vec0.unit()
    _, before = m.run_with_cache(pairs.positive[:4], names=[site])
    with vec0.ablate(m):
        _, after = m.run_with_cache(pairs.positive[:4], names=[site])
    a, b = after[site], before[site]
    assert (a @ u).abs().max() < 1e-4 < (b @ u).abs().max()
    torch.testing.assert_close(a, b - (b @ u)[..., None] * u, rtol=1e-5, atol=1e-4)
    with steering.ablate_direction(m, site, vec0.vector, start_pos=3):
        _, part = m.run_with_cache(pairs.positive[:4], names=[site])
    torch.testing.assert_close(part[site][:, :3], b[:, :3], rtol=0, atol=0)


# --- files -------------------------------------------------------------------------------------


def test_save_load_gives_identical_steered_logits(steer_model, vec0, mode_a, tmp_path, recall_model):
    path = vec0.save(tmp_path / "mode")
    assert path.name == "mode.safetensors"
    meta = json.loads((tmp_path / "mode.json").read_text())
    assert {k: meta[k] for k in ("model", "site", "layer", "method", "d_model")} == {
        "model": "steer-2l",
        "site": "blocks.0.hook_resid_post",
        "layer": 0,
        "method": "caa",
        "d_model": 64,
    }
    assert meta["pairs"]["negative"] == vec0.pairs["negative"]
    back = SteeringVector.load(tmp_path / "mode", steer_model)
    assert torch.equal(back.vector, vec0.vector)
    with vec0.apply(steer_model, coef=0.7):
        want = steer_model(mode_a[:4])
    with back.apply(steer_model, coef=0.7):
        got = steer_model(mode_a[:4])
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="built on model 'steer-2l'"):
        SteeringVector.load(tmp_path / "mode", recall_model)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        SteeringVector.load(tmp_path / "missing")


def test_vector_from_another_width_is_refused(vec0, flipflop_model):
    with pytest.raises(ValueError, match="d_model=64"):
        with vec0.apply(flipflop_model, coef=1.0):
            pass
    hidden = SteeringVector.from_pairs(flipflop_model, *_flip_pairs(4), site="blocks.{layer}.hook_hidden", layer=0)
    narrow = SteeringVector(hidden.vector[:16], hidden.site, hidden.model_name, hidden.d_model, "caa")
    with pytest.raises(ValueError, match="does not fit site"):
        with narrow.apply(flipflop_model, coef=1.0):
            flipflop_model(torch.tensor([[0, 1, 3, 4]]))


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input(steer_model, pairs, vec0, mode_a):
    m = steer_model
    with pytest.raises(ValueError, match="one negative per positive"):
        SteeringVector.from_pairs(m, pairs.positive, pairs.negative[:-1], layer=0)
    with pytest.raises(ValueError, match="empty"):
        SteeringVector.from_pairs(m, ["B b40", " "], ["A a5", "A a7"], layer=0)
    with pytest.raises(ValueError, match="answer_pos 5 is outside"):
        SteeringVector.from_pairs(m, ["B b40 b33", "B b40"], ["A a5 a9", "A a5 a7"], layer=0, answer_pos=5)
    with pytest.raises(ValueError, match="start_pos must be"):
        with vec0.apply(m, coef=1.0, start_pos=-3):
            pass
    with pytest.raises(ValueError, match="out of range"):
        SteeringVector.from_pairs(m, pairs, layer=2)
    with pytest.raises(ValueError, match="method must be one of"):
        SteeringVector.from_pairs(m, pairs, layer=0, method="mean")
    with pytest.raises(ValueError, match="shape"):
        SteeringVector.from_pairs(m, pairs, site="blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="finite"):
        with vec0.apply(m, coef=float("nan")):
            pass
    with pytest.raises(ValueError, match="finite"):
        steering.sweep(m, [vec0], [0], [0.0, float("inf")], mode_a, half_b_everywhere(), progress=False)
    with pytest.raises(ValueError, match="out of range"):
        steering.sweep(m, pairs, [3], [1.0], mode_a, half_b_everywhere(), progress=False)
    with pytest.raises(ValueError, match="no vector for layers"):
        steering.sweep(m, [vec0], [1], [1.0], mode_a, half_b_everywhere(), progress=False)
    with pytest.raises(ValueError, match="finite"):
        SteeringVector(torch.tensor([1.0, float("nan")]), "blocks.0.hook_resid_post", "steer-2l", 64, "caa")


# --- recurrent models: the same API through the hidden state -------------------------------------


def _flip_pairs(n: int, length: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random flip-flop prefix, then W1 (positive) or W0 (negative), two IGNs and a READ."""
    prefix = tasks.flip_flop(n, length=length - 4, seed=seed).tokens
    tail = lambda write: torch.tensor([write, 3, 3, 4]).expand(n, 4)
    return torch.cat([prefix, tail(2)], 1), torch.cat([prefix, tail(1)], 1)


def test_steering_flips_the_lstm_read_answer(flipflop_model):
    m = flipflop_model
    pos, neg = _flip_pairs(32)
    batch = tasks.flip_flop(32, length=32, seed=7)
    reads0 = (batch.tokens == 4) & (batch.info["bit"] == 0)  # READ positions whose answer is "0"
    rows = reads0.any(1)
    p_one = metrics.from_labels(torch.where(reads0, 6, tasks.IGNORE)[rows], kind="prob")  # P("1") there
    df = steering.sweep(
        m,
        (pos, neg),
        [0],
        [0.0, 0.25, 0.5, 1.0],
        batch.tokens[rows],
        p_one,
        site="blocks.{layer}.hook_hidden",
        progress=False,
    )
    steer = df[df.vector == "steer"].set_index("coef")["behaviour"]
    rand = df[df.vector == "random"].set_index("coef")["behaviour"]
    assert steer.loc[0.0] < 0.01 and steer.loc[1.0] > 0.9
    b = steer.to_numpy()
    assert (b[1:] >= b[:-1] - 0.01).all()  # monotone up to saturation
    assert rand.max() < 0.1
    # a per-step site: an edit from step t on leaves earlier logits untouched
    vec = SteeringVector.from_pairs(m, pos, neg, layer=0, site="blocks.{layer}.hook_hidden")
    base = m(batch.tokens)
    with vec.apply(m, coef=1.0, start_pos=10):
        out = m(batch.tokens)
    torch.testing.assert_close(out[:, :10], base[:, :10], rtol=0, atol=0)
    assert (out[:, 10:] - base[:, 10:]).abs().max() > 1.0


# --- pairs file, CLI, plots -------------------------------------------------------------------


def _write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_read_pairs_validates(steer_model, tmp_path):
    good = _write(tmp_path / "good.json", {"positive": ["B b40 b33", "B b41 b50"], "negative": ["A a5 a9", "A a7 a2"]})
    p = steering.read_pairs(good, steer_model)
    assert p.tokens(steer_model)[0].tokens.tolist() == [[1, 40, 33], [1, 41, 50]] and p.answer_pos == -1
    mixed = _write(tmp_path / "mixed.json", {"positive": ["B b40 b33 b50", "B b41"], "negative": ["A a5", "A a7 a2"]})
    assert steering.read_pairs(mixed, steer_model).tokens(steer_model)[1].lengths.tolist() == [2, 3]
    ids = _write(tmp_path / "ids.json", {"positive": [[1, 40]], "negative": [[0, 5]], "answer_pos": 0})
    assert steering.read_pairs(ids, steer_model).answer_pos == 0
    bad = {
        "notjson.json": "{positive: ",
        "list.json": [1, 2],
        "extra.json": {"positive": ["B"], "negative": ["A"], "x": 1},
        "empty.json": {"positive": [], "negative": ["A"]},
        "blank.json": {"positive": ["B b40 b33"], "negative": [" "]},
        "count.json": {"positive": ["B b40"], "negative": ["A a5", "A a6"]},
        "token.json": {"positive": ["B zz"], "negative": ["A a5"]},
        "pos.json": {"positive": ["B b40"], "negative": ["A a5"], "answer_pos": 7},
    }
    for name, data in bad.items():
        with pytest.raises(ValueError):
            steering.read_pairs(_write(tmp_path / name, data), steer_model)
    with pytest.raises(FileNotFoundError):
        steering.read_pairs(tmp_path / "nope.json", steer_model)


def test_cli_steer(tmp_path):
    from typer.testing import CliRunner

    from apps.cli import app

    pairs = _write(
        tmp_path / "p.json", {"positive": ["B b40 b33 b50", "B b41 b50 b38"], "negative": ["A a5 a9 a3", "A a7 a2 a11"]}
    )
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "steer",
            "steer-2l",
            "--pairs",
            pairs,
            "--layer",
            "0",
            "--coef",
            "1.0",
            "--new-tokens",
            "3",
            "--save-vector",
            str(tmp_path / "v"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "steered" in res.output and "kl_next" in res.output and (tmp_path / "v.json").is_file()
    steered = [line.split()[-4:-1] for line in res.output.splitlines() if line.strip().startswith("A a")]
    assert steered and all(t.startswith("b") for row in steered for t in row)  # continues in half B
    for args, msg in ((["--layer", "7", "--coef", "1"], "out of range"), (["--layer", "0", "--coef", "nan"], "finite")):
        res = runner.invoke(app, ["steer", "steer-2l", "--pairs", pairs, *args])
        assert res.exit_code == 2 and msg in res.output


def test_plots(steer_sweep):
    from interp.plots.steering import sweep_curves, sweep_heatmap

    fig = sweep_heatmap(steer_sweep)
    z = fig.data[0].z
    assert z.shape == (2, len(COEFS)) and z[0, 0] < 0.01 and z.max() > 0.9
    fig = sweep_curves(steer_sweep)
    assert len(fig.data) == 2 * 2 * 2  # 2 layers x (steer, random) x (behaviour, damage)
    assert {t.line.dash for t in fig.data} == {"solid", "dash"}
    with pytest.raises(ValueError, match="missing"):
        sweep_heatmap(steer_sweep.drop(columns="behaviour"))
    with pytest.raises(ValueError, match="vector must be one of"):
        sweep_heatmap(steer_sweep, vector="other")
