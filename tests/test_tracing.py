"""Causal tracing (circuits.tracing; Meng et al. 2022, Sharma et al. 2024) against independent
oracles: restoring every state at once gives the clean run back, restoring none the corrupted
one (plain hooks, not the patching engine), and one traced cell equals a hand-written
:mod:`interp.interventions` run of the same restoration."""

from __future__ import annotations

import math

import pytest
import torch

from circuits import corrupt as C
from circuits import tracing as T
from interp import interventions as I
from interp import zoo
from interp.errors import InputError, Unsupported
from interp.reproduce import trained
from interp.training import meets_card
from interp.zoo.recipes import get_recipe

FACT_MODELS = ("facts-2l", "facts-mamba")


@pytest.fixture(scope="module")
def fact_models():
    return trained.models(FACT_MODELS)


@pytest.fixture(scope="module")
def facts(fact_models):
    from circuits.tracing import world_facts

    return {name: world_facts(m, 3) for name, m in fact_models.items()}


def hand_written(model, fact, kind: str, layers, pos: int, *, samples: int, seed: int) -> float:
    """The restored-minus-corrupted probability of one cell, written out with plain hooks."""
    tokens = fact.tokens[0]
    a, b = fact.subject[0]
    noise = C.gaussian_noise(model, tokens[None], list(range(a, b)), scale=3.0, n_samples=samples, seed=seed)
    names = [model.site(kind, l) for l in layers]
    mask = torch.zeros(len(tokens), dtype=torch.bool)
    mask[pos] = True
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names=names)
        corrupted = model.run_with_hooks(noise.tokens, noise.hooks)
        with I.apply(model, [I.patch(n, cache[n], positions=mask) for n in names]):
            restored = model.run_with_hooks(noise.tokens, noise.hooks)

    def prob(logits):
        return float(logits[:, -1].softmax(-1)[:, fact.answer[0]].mean())

    return prob(restored) - prob(corrupted)


@pytest.mark.parametrize("name", FACT_MODELS)
def test_fact_models_meet_their_cards(name, fact_models):
    card = zoo.card(name)
    with torch.no_grad():
        metrics = get_recipe(name).evaluate(fact_models[name])
    assert meets_card(card, metrics), (name, metrics)
    assert zoo.shipped(name).with_suffix(".safetensors").stat().st_size < 500_000


@pytest.mark.parametrize("name, together", [("facts-2l", ("mlp", "attn")), ("facts-mamba", ("mixer",))])
def test_restoring_everything_or_nothing(name, together, fact_models, facts):
    """Every residual state restored: the clean probability; nothing: the corrupted one; every
    component writing to the residual, at every position, at once: clean again (the last token,
    whose residual they sum into with its own clean embedding, is not noised)."""
    m, fs = fact_models[name], facts[name]
    everything = T.restore(m, fs, "resid", samples=4)
    nothing = T.restore(m, fs, "resid", layers=[], samples=4)
    assert (everything["clean"] - everything["corrupted"]).abs().min() > 0.05  # the noise does something
    assert everything["restored"].to_numpy() == pytest.approx(everything["clean"].to_numpy(), abs=1e-5)
    assert nothing["restored"].to_numpy() == pytest.approx(nothing["corrupted"].to_numpy(), abs=1e-6)
    parts = T.restore(m, fs, together, samples=4)
    assert parts["restored"].to_numpy() == pytest.approx(parts["clean"].to_numpy(), abs=1e-5)
    one = T.restore(m, fs, together[0], layers=[0], samples=4)  # one layer alone is not everything
    assert (one["restored"] - one["clean"]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "name, kinds, prompt, positions",
    [
        # the noise falls on W1 IGN W0, so it moves the bit that READ answers
        (
            "flipflop-lstm",
            {"state": "cell", "hidden": "hidden", "gates": "output_gate"},
            [0, 2, 3, 1, 3, 3, 3, 4],
            (3, 7),
        ),
        ("recall-gru", {"state": "hidden", "gates": "update_gate"}, None, (3, 7)),
        # its causal convolution also reads the 3 tokens before each step: the state after the last
        # noised token is not all that later steps read of it, the one at the last token is
        ("recall-ssm", {"state": "state", "mixer": "mixer_out", "gates": "gate"}, None, (7,)),
    ],
)
def test_the_zoo_cells_trace_their_state(name, kinds, prompt, positions):
    """The zoo's LSTM, GRU and selective SSM trace their per-step state and gates.  Oracle: a recurrent state
    carries what later steps read of the past, so its clean value in every layer after the last noised
    token (the LSTM: c_t and h_t) gives the clean probability back; after the first noised token (two
    more follow it) it does not."""
    from interp.capabilities import probe_tokens
    from interp.tasks.text.facts import FactSet

    m = zoo.load(name)
    assert kinds.items() <= T.components(m).items()
    state = [c for c in kinds if c in ("state", "hidden")]
    tokens = torch.tensor(prompt) if prompt else probe_tokens(m, n=1, length=8)[0][0]

    def facts(answer: int) -> FactSet:
        return FactSet([tokens], [(1, 4)], [answer], ["probe"], ["probe"], ["probe"], {})

    # the answer whose probability the noise moves most, by its log (these models are sure of their answer)
    moved = [T.restore(m, facts(a), state, layers=[], samples=3) for a in range(m.cfg.d_vocab)]
    fs = facts(
        max(
            range(m.cfg.d_vocab),
            key=lambda a: abs(math.log(moved[a]["clean"][0]) - math.log(moved[a]["corrupted"][0])),
        )
    )
    for pos in positions:
        r = T.restore(m, fs, state, positions=[pos], samples=3)
        assert float(r["corrupted"][0]) != pytest.approx(float(r["clean"][0]), rel=0.1)  # the noise does something
        assert float(r["restored"][0]) == pytest.approx(float(r["clean"][0]), rel=1e-4), pos
    first = T.restore(m, fs, state, positions=[1], samples=3)
    assert float(first["restored"][0]) != pytest.approx(float(first["clean"][0]), rel=1e-2)
    trace = T.causal_tracing(m, fs, components=list(kinds), samples=3, progress=False)
    assert set(trace["component"]) == set(kinds) and trace["effect"].abs().max() > 1e-3
    # the patching engine's cells equal the plain hooks of restore
    for component in ("state", "gates"):
        row = trace[trace["component"] == component].sort_values("effect").iloc[-1]
        hooks = T.restore(m, fs, component, layers=[int(row["layer"])], positions=[int(row["pos"])], samples=3)
        assert float(row["prob"]) == pytest.approx(float(hooks["restored"][0]), abs=1e-6), component
    # the LSTM's h_t is o_t tanh(c_t): the clean output gate and cell at the last noised token give
    # it back, the cell alone does not (so the step reads the restored gate)
    if "hidden" in kinds:
        both = T.restore(m, fs, ("state", "gates"), positions=[3], samples=3)
        assert float(both["restored"][0]) == pytest.approx(float(both["clean"][0]), rel=1e-4)
        cell = T.restore(m, fs, "state", positions=[3], samples=3)
        assert float(cell["restored"][0]) != pytest.approx(float(cell["clean"][0]), rel=1e-2)


@pytest.mark.parametrize(
    "name, component", [("facts-2l", "mlp"), ("facts-2l", "attn"), ("facts-mamba", "mixer"), ("facts-mamba", "state")]
)
def test_a_traced_cell_equals_a_hand_written_run(name, component, fact_models, facts):
    m, fs = fact_models[name], facts[name]
    one = fs.take([1])
    trace = T.causal_tracing(m, one, components=component, window=2, samples=3, seed=7, progress=False)
    assert set(trace["window"]) == {1, 2}  # single layers beside the window
    # the cell with the largest effect (not a trivial one)
    row = trace.loc[trace["effect"].abs().idxmax()]
    assert abs(row["effect"]) > 1e-3
    kind = T.components(m)[component]
    layers = range(int(row["layer"]), int(row["layer"]) + int(row["window"]))
    want = hand_written(m, one, kind, layers, int(row["pos"]), samples=3, seed=7)
    assert row["effect"] == pytest.approx(want, abs=1e-5)


def test_trace_frame_roles_and_heatmap(fact_models, facts):
    from circuits.plots_tracing import compare_figure, tracing_heatmap

    m, fs = fact_models["facts-mamba"], facts["facts-mamba"]
    trace = T.causal_tracing(m, fs, window=1, samples=2, progress=False)
    assert set(trace["component"]) == {"resid", "mixer", "state", "gates"}
    assert {"fact", "component", "window", "layer", "pos", "token", "role", "prob", "effect"} <= set(trace.columns)
    assert trace["pos"].min() == 1  # positions before the subject are not traced: the noise does not reach them
    row = trace[trace["pos"] == 2].iloc[0]
    assert row["role"] == "last subject token" and row["token"].startswith("b")
    # a state restored at the last token is read by no later step: no effect at all
    assert trace[(trace["component"] == "state") & (trace["role"] == "last token")]["effect"].abs().max() == 0
    assert (trace["effect"] == trace["prob"] - trace["corrupted"]).all()
    fig = tracing_heatmap(trace, fact=0)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 4 and heat[0].y[0].startswith("'a")  # rows are the fact's tokens
    both = compare_figure({"a": trace, "b": trace})
    assert len([t for t in both.data if t.type == "heatmap"]) == 8


def test_bad_components(fact_models, facts):
    mamba, tf = fact_models["facts-mamba"], fact_models["facts-2l"]
    with pytest.raises(Unsupported, match="attention"):
        T.causal_tracing(mamba, facts["facts-mamba"], components="attn", progress=False)
    with pytest.raises(InputError, match="unknown component"):
        T.causal_tracing(tf, facts["facts-2l"], components="mixer", progress=False)
    with pytest.raises(InputError, match="unknown component"):
        T.causal_tracing(tf, facts["facts-2l"], components="nope", progress=False)
    with pytest.raises(InputError, match="window"):
        T.causal_tracing(tf, facts["facts-2l"], window=0, progress=False)


def test_bad_facts(smollm2):
    from interp.tasks.text import fact_set

    with pytest.raises(InputError, match="tokens"):
        fact_set(smollm2, [("The {} is located in the city of", "Eiffel Tower", "Rio de Janeiro")])
    with pytest.raises(InputError, match="does not occur"):
        fact_set(smollm2, [("The Louvre is located in the city of", "Eiffel Tower", "Paris")])
    # a whole prompt with the subject inside it is taken
    fs = fact_set(smollm2, [("The Eiffel Tower is located in the city of", "Eiffel Tower", "Paris")], known_only=False)
    assert smollm2.to_str_tokens(fs.tokens[0][fs.subject[0][0] : fs.subject[0][1]]) == [" E", "iffel", " Tower"]


def test_smollm2_oracle_and_one_cell(smollm2):
    """On the real model: every residual state restored gives the clean probability, none the
    corrupted one, and a traced MLP window at the last subject token equals the hand-written run."""
    from interp.tasks.text import fact_set

    fs = fact_set(smollm2, [("The {} is located in the city of", "Eiffel Tower", "Paris")])
    everything = T.restore(smollm2, fs, "resid", samples=3)
    nothing = T.restore(smollm2, fs, "resid", layers=[], samples=3)
    assert float(everything["clean"].iloc[0] - everything["corrupted"].iloc[0]) > 0.1
    assert float(everything["restored"].iloc[0]) == pytest.approx(float(everything["clean"].iloc[0]), abs=1e-5)
    assert float(nothing["restored"].iloc[0]) == pytest.approx(float(nothing["corrupted"].iloc[0]), abs=1e-6)
    trace = T.causal_tracing(
        smollm2, fs, components="mlp", window=10, samples=3, singles=False, only="last subject token", progress=False
    )
    row = trace.loc[trace["effect"].idxmax()]
    assert row["effect"] > 0.01 and row["token"] == " Tower"
    want = hand_written(
        smollm2, fs, "mlp_out", range(int(row["layer"]), int(row["layer"]) + 10), int(row["pos"]), samples=3, seed=0
    )
    assert row["effect"] == pytest.approx(want, abs=1e-5)


def test_tracing_page_renders_the_heatmap(fact_models, facts):
    """The app's Tracing page on the zoo Mamba: the first known fact traced at once, its heatmap
    (one panel per component, rows = the fact's tokens) equal to the library's trace."""
    from pathlib import Path

    import plotly.io as pio
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "apps" / "app.py"), default_timeout=120)
    at.session_state["model_source"] = "facts-mamba"
    at.switch_page("views/tracing.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    figs = [pio.from_json(el.proto.spec) for el in at.get("plotly_chart")]
    heat = [t for t in figs[0].data if t.type == "heatmap"]
    assert len(heat) == 4  # resid, mixer, state, gates
    assert [t.startswith(("'a", "'b", "'r", "'is")) for t in heat[0].y] == [True] * len(heat[0].y)
    m = fact_models["facts-mamba"]
    from circuits.tracing import world_facts

    lib = T.causal_tracing(m, world_facts(m).take([0]), window=3, samples=3, seed=0, progress=False)
    assert float(at.metric[2].value) == len(lib)
    shown = at.dataframe[0].value
    assert shown["effect"].iloc[0] == pytest.approx(lib["effect"].max(), abs=1e-6)


def test_a_fact_model_traces_its_own_facts_by_default(fact_models):
    """With no facts given, a zoo model trained on the synthetic facts gets those it knows (all 256)."""
    fs = T.as_facts(fact_models["facts-mamba"], None)
    assert len(fs) == fs.counts["known"] == fs.counts["offered"] == 256
    assert fs.subject[0] == (1, 3) and fs.prompts[0].split()[1].startswith("a")


def test_trace_command(tmp_path):
    from typer.testing import CliRunner

    from apps.cli import app

    out = tmp_path / "t.csv"
    r = CliRunner().invoke(
        app, ["trace", "facts-mamba", "-n", "1", "--window", "1", "--components", "mixer", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "clean probability" in r.output and "subject noised" in r.output
    import pandas as pd

    rows = pd.read_csv(out)
    assert set(rows["component"]) == {"mixer"} and len(rows) == 3 * 4  # layers x positions from the subject on
    bad = CliRunner().invoke(app, ["trace", "facts-mamba", "--components", "attn"])
    assert bad.exit_code != 0 and "needs attention layers" in bad.output and "Traceback" not in bad.output
