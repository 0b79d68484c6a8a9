"""Every page of the Streamlit app driven with ``streamlit.testing.v1.AppTest``: inputs set,
outputs asserted against the library's own results, bad input shown as ``st.error``."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from interp import runs, zoo
from interp.attention import attention_patterns

APP = str(Path(__file__).resolve().parent.parent / "apps" / "app.py")
RNN = next((n for n in zoo.names() if zoo.card(n)["arch"] == "recurrent"), None)  # an attention-free zoo model


def make_app(page: str | None = None, source: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if source is not None:
        at.session_state["model_source"] = source
    if page is not None:
        at.switch_page(f"views/{page}.py")
    return at.run()


def figures(at: AppTest) -> list:
    return [pio.from_json(el.proto.spec) for el in at.get("plotly_chart")]


def decode(values) -> np.ndarray:
    """A figure's data array as floats; plotly's JSON stores numpy arrays as base64 typed arrays."""
    if isinstance(values, dict):
        shape = tuple(int(x) for x in str(values.get("shape", "-1")).split(","))
        values = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).reshape(shape)
    return np.asarray(values, dtype=float)


def zarr(trace) -> np.ndarray:
    """A heatmap's z as a float array (NaN, the masked cells, -> 0)."""
    return np.nan_to_num(decode(trace.z))


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def sidebar_text(at: AppTest) -> str:
    return " ".join(m.value for m in at.sidebar.markdown)


# --- Model page -------------------------------------------------------------------------


def test_model_page_shows_geometry_sites_and_card(induction_model):
    at = make_app()
    ok(at)
    assert at.title[0].value == "Model"
    assert "induction-2l" in sidebar_text(at)
    geometry = at.dataframe[0].value
    assert geometry.loc["n_heads", "value"] == "4" and geometry.loc["n_layers", "value"] == "2"
    assert any("blocks.1.attn.hook_pattern" in set(df.value.get("name", [])) for df in at.dataframe)
    assert at.metric[0].value == f"{induction_model.card['metrics']['repeat_loss']:.4f}"
    # filtering the hook sites
    at.text_input(key="model_site_filter").input("hook_pattern").run()
    sites = next(df.value for df in at.dataframe if "name" in df.value)
    assert list(sites["name"]) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]


def test_model_page_switches_zoo_model():
    at = make_app()
    at.selectbox(key="model_zoo").select("recall-2l").run()
    ok(at)
    assert at.session_state["model_source"] == "recall-2l"
    assert "recall-2l" in sidebar_text(at)
    assert at.dataframe[0].value.loc["d_vocab", "value"] == "128"


def test_model_page_loads_a_local_hf_folder(hf_dirs):
    at = make_app()
    at.radio(key="model_kind").set_value("local Hugging Face folder").run()
    at.text_input(key="model_path").input(str(hf_dirs["gpt2"]))
    at.button[0].click().run()
    ok(at)
    assert at.session_state["model_source"] == str(hf_dirs["gpt2"])
    assert at.dataframe[0].value.loc["d_vocab", "value"] == "102"


@pytest.mark.parametrize(
    "kind, source, message",
    [
        ("local Hugging Face folder", "/no/such/folder", "no model at"),
        ("local Hugging Face folder", "", "no model given"),
        ("hub id", "induction-2", "did you mean"),
    ],
)
def test_model_page_bad_source_is_a_message(kind, source, message):
    at = make_app()
    at.radio(key="model_kind").set_value(kind).run()
    at.text_input(key="model_path").input(source)
    at.button[0].click().run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert at.session_state["model_source"] == "induction-2l"  # unchanged


# --- Attention page ---------------------------------------------------------------------


def test_attention_page_figures_match_the_model(induction_model):
    at = make_app("attention")
    ok(at)
    text = at.text_area(key="attn_text").value
    tokens = induction_model.to_tokens(text)
    n = tokens.shape[1]
    expected = attention_patterns(induction_model, tokens).numpy()  # [layer, head, dest, src]
    _, grid, big = figures(at)  # the overview of every head (tests/test_app_links.py), the layer grid, one head
    # the grid: one heatmap per head of the last layer (the default), [dest, src] each
    assert len(grid.data) == 4 and all(zarr(t).shape == (n, n) for t in grid.data)
    z = zarr(grid.data[2])
    np.testing.assert_allclose(z, expected[1, 2], atol=1e-6)
    # the large pattern, with token labels on both axes and hover values
    assert big.layout.title.text == "L1H0"
    np.testing.assert_allclose(zarr(big.data[0]), expected[1, 0], atol=1e-6)
    assert list(big.layout.xaxis.ticktext)[:2] == [f"{s} ·{i}" for i, s in enumerate(text.split()[:2])]
    assert "attention %{z" in big.data[0].hovertemplate
    # choose another layer and head, and a destination for the token view
    at.selectbox(key="attn_layer").select(0).run()
    at.selectbox(key="attn_head").select(3).run()
    at.slider(key="attn_dest").set_value(5).run()
    ok(at)
    _, grid, big = figures(at)
    assert [t.name for t in grid.data] == ["L0H0", "L0H1", "L0H2", "L0H3"]
    np.testing.assert_allclose(zarr(big.data[0]), expected[0, 3], atol=1e-6)
    html = at.get("html")[0].proto.body
    weights = expected[0, 3, 5]
    top = int(weights.argmax())
    assert f'title="pos {top} {text.split()[top]}: {weights[top]:.3f}"' in html
    assert "outline:2px solid" in html and html.count("<span") == n
    # the head chosen here is the shared selection, and its button opens its panel on the Heads page
    assert at.query_params["head"] in ("0.3", ["0.3"])
    at.button(key="attn_open_panel").click().run()
    ok(at)
    assert [s.value for s in at.subheader] == ["Head L0H3"]
    assert metrics_of(at)["direct logit attribution"]


def token_view_html(at: AppTest) -> str:
    """The token view's page (drawn by the two-way component of apps.state.token_view)."""
    import json

    return json.loads(at.get("bidi_component")[0].proto.json)["html"]


def token_view_rows(at: AppTest) -> np.ndarray:
    """The attention matrix the token view's JavaScript colours the prompt with."""
    import json
    import re

    return np.array(json.loads(re.search(r"const A = (\[.*?\]\]);", token_view_html(at)).group(1)))


def test_attention_page_token_view_and_grid_labels(induction_model):
    at = make_app("attention")
    ok(at)
    tokens = induction_model.to_tokens(at.text_area(key="attn_text").value)
    labels = induction_model.to_str_tokens(tokens)
    expected = attention_patterns(induction_model, tokens).numpy()
    # the grid: every panel labelled with the tokens on both axes
    grid = figures(at)[1]
    for axis in ("xaxis", "yaxis", "xaxis4", "yaxis4"):
        ticks = grid.layout[axis]
        assert list(ticks.ticktext) == [f"{labels[int(v)]} ·{int(v)}" for v in ticks.tickvals], axis
    assert len(grid.layout.xaxis.ticktext) >= 12  # a 25-token prompt: most positions labelled
    # the token view: by default the mean of the last layer's heads (a distribution over sources)
    rows = token_view_rows(at)
    np.testing.assert_allclose(rows, np.tril(expected[1].mean(0)), atol=1e-4)
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=1e-3)
    srcdoc = token_view_html(at)
    assert srcdoc.count('class="tok"') == len(labels) and "mouseover" in srcdoc and "http" not in srcdoc
    at.selectbox(key="attn_view_head").select(2).run()
    ok(at)
    np.testing.assert_allclose(token_view_rows(at), np.tril(expected[1, 2]), atol=1e-4)


def test_attention_page_generators():
    at = make_app("attention")
    at.radio(key="attn_mode").set_value("repeated random tokens").run()
    at.number_input(key="attn_len").set_value(41).run()
    at.number_input(key="attn_period").set_value(7).run()
    ok(at)
    _, grid, big = figures(at)
    assert zarr(big.data[0]).shape == (41, 41)
    at.radio(key="attn_mode").set_value("the model's zoo task").run()
    ok(at)
    _, grid, big = figures(at)
    assert zarr(big.data[0]).shape == (64, 64)  # induction-2l's task fills the context


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("   ", "empty prompt"),
        ("BOS t5 zebra", "unknown token 'zebra'"),
        ("BOS t5 99", "outside the vocabulary"),
        (" ".join(["t1"] * 80), "longer than the model's context"),
    ],
)
def test_attention_page_bad_prompt_is_a_message(prompt, message):
    at = make_app("attention")
    at.text_area(key="attn_text").input(prompt).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]
    assert not at.get("plotly_chart")


@pytest.mark.parametrize("page", ["heads", "circuit"])  # the Attention page shows saliency (test_app_links)
def test_attention_pages_on_a_model_without_attention(page):
    if RNN is None:
        pytest.skip("no recurrent model in the zoo")
    at = make_app(page, source=RNN)
    assert not at.exception
    assert len(at.error) == 1 and "needs attention heads" in at.error[0].value


# --- Heads page -------------------------------------------------------------------------


def scores_table(at: AppTest):
    """The Heads page's table of (head, kind) scores (the head panel, open by default, has its own)."""
    return next(df.value for df in at.dataframe if {"layer", "head", "kind", "score"} <= set(df.value.columns))


def test_heads_page_scores_table_and_ablation(induction_model):
    from interp import heads
    from interp.ablation import ablation_effect
    from interp.zoo.recipes import RECIPES

    at = make_app("heads")
    ok(at)
    expected = heads.scores(induction_model, heads.default_tokens(induction_model, n=16, length=64, seed=0))
    heatmap = figures(at)[0]
    cells = [t for t in heatmap.data if t.type == "heatmap"]  # the rest: invisible click targets
    shown = {t.name or "": zarr(t) for t in cells}
    assert len(cells) == 4  # the four default kinds, each a [layer, head] grid
    assert all(z.shape == (2, 4) for z in shown.values())
    table = scores_table(at)
    assert (table["score"] >= 0.3).all() and table["score"].is_monotonic_decreasing
    # the previous-token heads of layer 0 and the induction heads of layer 1 are listed
    prev = table[table.kind == "previous_token"]
    assert set(zip(prev.layer, prev["head"])) == {(0, h) for h in range(4)}
    assert set(table[table.kind == "prefix_matching"].layer) == {1}
    merged = table.merge(expected, on=["layer", "head", "kind"], suffixes=("", "_lib"))
    np.testing.assert_allclose(merged["score"], merged["score_lib"], atol=1e-9)
    # raising the threshold shortens the table
    at.slider(key="heads_threshold").set_value(0.9).run()
    assert (scores_table(at)["score"] >= 0.9).all() and len(scores_table(at)) < len(table)
    # suggested: the two detected induction heads; ablating them raises the loss by nats
    detected = heads.top_heads(expected, "induction", k=2)
    induction = [(int(l), int(h)) for l, h in zip(detected.layer, detected["head"])]
    assert at.multiselect(key="heads_ablate").value == induction
    assert {l for l, _ in induction} == {1}
    at.button(key="heads_go").click().run()
    ok(at)
    clean, ablated = (float(m.value) for m in at.metric if "loss" in m.label)  # not the head panel's
    task = at.session_state["heads_run"]
    batch = RECIPES["induction-2l"].make_batch(task[3], 0)
    lib = ablation_effect(induction_model, batch, induction, "zero", metric="loss", n_random=0)
    assert clean == pytest.approx(lib.value[0], abs=1e-4) and ablated == pytest.approx(lib.value[1], abs=1e-4)
    assert ablated - clean > 1.0
    assert len(figures(at)) == 3  # the heatmap, the head panel's pattern (open by default) and the ablation bars


def test_heads_page_without_kinds_is_a_message():
    at = make_app("heads")
    at.multiselect(key="heads_kinds").set_value([]).run()
    assert not at.exception and at.info
    assert [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")] == ["heads_panel_attn"]  # no score map


# --- The shared head selection and the head panel -------------------------------------


def panel_expectations(model, clean, corrupt, layer, head):
    """What the head panel must show for ``(layer, head)``, computed with the library alone: exact
    patching of the head's z (denoise, logit_diff) and its DLA to logit(clean answer) -
    logit(corrupt answer) at the last position."""
    from circuits.patching import patch
    from interp.lens import dla

    frame = patch(model, clean, corrupt, site="z", by=("layer", "head"), metric="logit_diff", progress=False)
    row = frame[(frame.layer == layer) & (frame["head"] == head)].iloc[0]
    answer, wrong = int(model(clean)[0, -1].argmax()), int(model(corrupt)[0, -1].argmax())
    attribution = dla(model, clean, answer, wrong)
    value = attribution.loc[attribution.component == f"a{layer}.h{head}", "value"].iloc[0]
    return float(row["normalised"]), float(value)


def metrics_of(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_head_panel_from_the_url_matches_the_library(induction_model):
    from interp import heads

    probes = heads.default_tokens(induction_model, n=16, length=64, seed=0)  # the Heads page's default probes
    detected = heads.top_heads(heads.scores(induction_model, probes), "induction", k=1)
    layer, head = int(detected.layer.iloc[0]), int(detected["head"].iloc[0])
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["head"] = f"{layer}.{head}"  # as a shared link or a reload opens it
    at.query_params["token"] = "3"
    at.switch_page("views/heads.py")
    at.run()
    ok(at)
    assert [s.value for s in at.subheader] == [f"Head L{layer}H{head}"]
    assert at.selectbox(key="heads_panel_head").value == f"{layer}.{head}"
    assert at.selectbox(key="heads_panel_token").value == 3
    # the panel's prompt: the default clean / corrupt pair of the causal pages
    clean = induction_model.to_tokens(at.text_area(key="hp_clean").value)
    corrupt = induction_model.to_tokens(at.text_area(key="hp_corrupt").value)
    pattern = next(f for f in figures(at) if f.layout.title.text == f"L{layer}H{head} on the prompt")
    np.testing.assert_allclose(
        zarr(pattern.data[0]), attention_patterns(induction_model, clean)[layer, head], atol=1e-6
    )
    labels = induction_model.to_str_tokens(clean)
    assert list(pattern.layout.xaxis.ticktext) == list(pattern.layout.yaxis.ticktext)
    assert list(pattern.layout.xaxis.ticktext)[:3] == [f"{t} ·{i}" for i, t in enumerate(labels[:3])]
    normalised, value = panel_expectations(induction_model, clean, corrupt, layer, head)
    shown = metrics_of(at)
    assert float(shown["patching effect (normalised)"]) == pytest.approx(normalised, abs=1e-4)
    assert float(shown["direct logit attribution"]) == pytest.approx(value, abs=1e-4)
    assert normalised > 0.3 and value > 0.5  # an induction head writes the repeated token on this prompt
    # its scores: the heads.scores rows of that head
    scores = next(df.value for df in at.dataframe if list(df.value.columns) == ["kind", "score"])
    assert scores.set_index("kind").loc["induction", "score"] == pytest.approx(detected.score.iloc[0], abs=1e-9)
    # the selected token is shared: the Attention page's token view opens pinned at it
    at.switch_page("views/attention.py").run()
    ok(at)
    assert "let pinned = 3;" in token_view_html(at)
    assert (at.selectbox(key="attn_layer").value, at.selectbox(key="attn_head").value) == (layer, head)
    assert figures(at)[2].layout.title.text == f"L{layer}H{head}"  # the large pattern is the selected head's
    at.switch_page("views/heads.py").run()
    # another head from the selectbox: the URL follows; a head the model lacks opens no panel
    at.selectbox(key="heads_panel_head").select("0.1").run()
    ok(at)
    assert [s.value for s in at.subheader] == ["Head L0H1"] and at.query_params["head"] in ("0.1", ["0.1"])
    for bad in ("9.9", "x", "1.2.3"):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["head"] = bad
        at.switch_page("views/heads.py")
        at.run()
        ok(at)
        assert not at.subheader and at.selectbox(key="heads_panel_head").value == "none"


def test_head_panel_says_what_does_not_apply_and_goes_on():
    """steer-2l's default pair: clean and corrupt predict the same token, so the logit difference has
    no wrong token; the panel says so in place of those numbers and draws the rest."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = "steer-2l"
    at.query_params["head"] = "1.0"
    at.switch_page("views/heads.py")
    at.run()
    ok(at)
    assert [s.value for s in at.subheader] == ["Head L1H0"]
    assert any("predict the same token" in w.value for w in at.warning)
    assert any(f.layout.title.text == "L1H0 on the prompt" for f in figures(at))
    assert at.dataframe[-1].value["score"].is_monotonic_decreasing  # the page went on: its table is drawn


def test_head_panel_on_the_circuit_page_places_the_head(induction_model):
    from circuits.attribution import edge_attribution

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/circuit.py")
    at.run()
    ok(at)
    assert not at.subheader  # nothing selected yet
    clean = induction_model.to_tokens(at.text_area(key="circ_clean").value)
    corrupt = induction_model.to_tokens(at.text_area(key="circ_corrupt").value)
    top_k = int(at.select_slider(key="circ_top_k").value)
    circuit = edge_attribution(
        induction_model, clean, corrupt, metric="logit_diff", method="eap-ig", steps=5, progress=False
    ).prune(top_k=top_k)
    every = [f"a{l}.h{h}" for l in range(2) for h in range(4)]
    inside = [n for n in every if n in circuit.active_nodes()]
    outside = [n for n in every if n not in inside]
    assert inside and outside  # the faithful circuit holds some heads, not all
    for name in (inside[0], outside[0]):
        layer, head = (int(x) for x in name[1:].split(".h"))
        at.selectbox(key="circ_panel_head").select(f"{layer}.{head}").run()
        ok(at)
        assert [s.value for s in at.subheader] == [f"Head L{layer}H{head}"]
        place = next(m.value for m in at.markdown if m.value.startswith("**In the circuit**"))
        assert place.endswith("yes" if name in inside else "no")
        normalised, value = panel_expectations(induction_model, clean, corrupt, layer, head)
        shown = metrics_of(at)
        assert float(shown["patching effect (normalised)"]) == pytest.approx(normalised, abs=1e-4)
        assert float(shown["direct logit attribution"]) == pytest.approx(value, abs=1e-4)
        edges = next(df.value for df in at.dataframe if "component" in df.value)
        assert ((edges.src == name) | (edges.dst == name)).all() and len(edges) > 0
    # the selection is shared: the Heads page opens on the same head
    at.switch_page("views/heads.py").run()
    ok(at)
    assert [s.value for s in at.subheader] == [f"Head L{layer}H{head}"]


# --- Steering page ----------------------------------------------------------------------


def test_steering_page_moves_the_next_token_distribution(steer_model):
    from interp import tasks

    at = make_app("steering", source="steer-2l")
    ok(at)
    a_half, b_half = tasks.mode_halves(steer_model.cfg.d_vocab)
    bars = figures(at)[0]
    unsteered, steered = bars.data
    assert len(decode(unsteered.x)) == len(decode(steered.x)) == 10
    names = steer_model.vocabulary()
    in_half = lambda labels, half: all(names.index(t.strip()) in half for t in labels)
    assert in_half(unsteered.y, a_half) and in_half(steered.y, b_half)  # coef 4 on a mode-A prompt
    gens = at.dataframe[0].value
    assert gens.loc[0, "steered"].split()[0].startswith("b") and gens.loc[0, "unsteered"].split()[0].startswith("a")
    # a negative coefficient keeps the model in the A half
    at.slider(key="steer_coef").set_value(-4.0).run()
    assert in_half(figures(at)[0].data[1].y, a_half)
    # the sweep: every layer x coefficient, steering vector and random control
    at.text_input(key="steer_coefs").input("0 1 2").run()
    at.button(key="steer_sweep").click().run()
    ok(at)
    frame = at.dataframe[1].value
    assert len(frame) == steer_model.cfg.n_layers * 3 * 2 + 1  # + the unsteered row
    best = frame[(frame.vector == "steer") & (frame.coef == 2)].behaviour.min()
    assert best > 0.9 > frame[(frame.vector == "random") & (frame.coef == 2)].behaviour.max()


@pytest.mark.parametrize(
    "text, message",
    [
        ("B b40 b41 A a5 a6", "exactly one `|`"),
        ("B b40 zebra | A a5 a6", "unknown token 'zebra'"),
        ("B b40 b41 |  ", "a prompt is empty"),
    ],
)
def test_steering_page_bad_pairs_are_a_message(text, message):
    at = make_app("steering", source="steer-2l")
    at.radio(key="steer_pairs_mode").set_value("type pairs").run()
    at.text_area(key="steer_pairs_text").input(text).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]


def test_steering_page_typed_pairs_of_any_length_and_the_empty_state():
    at = make_app("steering", source="steer-2l")
    at.radio(key="steer_pairs_mode").set_value("type pairs").run()
    assert not at.exception and not at.error and at.info and at.code  # an explanation and an example
    at.text_area(key="steer_pairs_text").input("B b40 b41 b42\nB b43 | A a5").run()
    assert not at.exception and "exactly one" in at.error[0].value
    at.text_area(key="steer_pairs_text").input("B b40 b41 b42 | A a5\nB b43 | A a6 a7 a8").run()
    ok(at)
    assert "from 2 pairs" in at.caption[0].value


# --- Patching page ----------------------------------------------------------------------


def test_patching_page_exact_and_attribution(induction_model):
    from circuits.attribution import attribute
    from circuits.patching import patch

    at = make_app("patching")
    ok(at)
    clean = induction_model.to_tokens(at.text_area(key="patch_clean").value)
    corrupt = induction_model.to_tokens(at.text_area(key="patch_corrupt").value)
    assert clean.shape == corrupt.shape and (clean != corrupt).sum() == 1  # the default: the last token replaced
    shown = at.dataframe[0].value
    run = runs.run(patch, induction_model, clean, corrupt, site="z", by=("layer", "pos"), progress=False)
    lib = run.frame
    merged = shown.merge(lib, on=["layer", "pos"], suffixes=("", "_lib"))
    assert len(merged) == len(shown) == 20
    np.testing.assert_allclose(merged["normalised"], merged["normalised_lib"], atol=1e-6)
    assert [float(m.value) for m in at.metric[:2]] == pytest.approx(
        [run.meta["clean_value"], run.meta["corrupt_value"]], abs=1e-4
    )
    # the heads' output at the last position carries the whole effect, in layer 1
    top = shown.iloc[0]
    assert (top.layer, top.pos) == (1, clean.shape[1] - 1) and top.normalised > 0.9
    heat = figures(at)[0].data[0]
    z = decode(heat.z)
    assert z.shape == (2, clean.shape[1])  # layer x position
    assert np.nanargmax(z[1]) == clean.shape[1] - 1 and z[1, -1] == pytest.approx(top.normalised, abs=1e-6)
    # attribution mode estimates the same cells from gradients
    at.radio(key="patch_mode").set_value("attribution").run()
    ok(at)
    est = attribute(induction_model, clean, corrupt, site="z", by=("layer", "pos"))
    merged = at.dataframe[0].value.merge(est, on=["layer", "pos"], suffixes=("", "_lib"))
    np.testing.assert_allclose(merged["value"], merged["value_lib"], atol=1e-6)
    # by head, noising
    at.radio(key="patch_mode").set_value("exact").run()
    at.multiselect(key="patch_by_head").set_value(["head"]).run()
    at.radio(key="patch_direction").set_value("noise").run()
    ok(at)
    assert set(at.dataframe[0].value.columns) >= {"layer", "head", "normalised"} and int(at.metric[2].value) == 8


def test_patching_page_task_batch():
    at = make_app("patching")
    at.radio(key="patch_inputs").set_value("task batch").run()
    at.number_input(key="patch_n").set_value(4).run()
    at.selectbox(key="patch_site").select("resid_pre").run()
    ok(at)
    assert int(at.metric[2].value) == 2 * 64  # layers x positions of the zoo task's sequences
    at.selectbox(key="patch_how").select("gaussian noise").run()
    assert not at.exception and "no corrupt prompt to take a wrong token from" in at.error[0].value
    at.selectbox(key="patch_metric").select("logprob").run()
    ok(at)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        ("BOS t1 t2", "aligned position by position"),
        ("BOS t1 nonsense", "unknown token 'nonsense'"),
        ("", "empty prompt"),
    ],
)
def test_patching_page_bad_prompts_are_a_message(corrupt, message):
    at = make_app("patching")
    at.text_area(key="patch_corrupt").input(corrupt).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]


def test_patching_page_bad_positions_are_a_message():
    at = make_app("patching")
    at.radio(key="patch_inputs").set_value("task batch").run()
    at.text_input(key="patch_positions").input("last").run()
    assert not at.exception and "bad positions" in at.error[0].value
    at.text_input(key="patch_positions").input("99").run()
    assert not at.exception and "outside" in at.error[0].value


# --- Circuit page -----------------------------------------------------------------------


def test_circuit_page_graph_top_k_faithfulness_and_mib(induction_model):
    from circuits.attribution import edge_attribution
    from circuits.graph import Circuit

    at = make_app("circuit")
    ok(at)
    kept = int(at.metric[0].value.split("/")[0])
    top_k = at.select_slider(key="circ_top_k").value
    faith = float(at.metric[2].value)
    assert 1 <= kept <= top_k and faith >= 0.8  # opens at the smallest circuit with faithfulness 0.8
    clean = induction_model.to_tokens(at.text_area(key="circ_clean").value)
    corrupt = induction_model.to_tokens(at.text_area(key="circ_corrupt").value)
    full = edge_attribution(
        induction_model, clean, corrupt, metric="logit_diff", method="eap-ig", steps=5, progress=False
    )
    circuit = Circuit.from_json(full.prune(top_k=top_k).to_json())  # what the download button offers
    assert len(circuit.kept_edges) == kept and circuit.meta["model"] == "induction-2l"
    assert circuit.faithfulness(induction_model, clean, corrupt, "logit_diff") == pytest.approx(faith, abs=1e-3)
    options = [int(o) for o in at.select_slider(key="circ_top_k").options]
    smaller = options[options.index(top_k) - 1] if options.index(top_k) else None
    if smaller is not None:  # the next smaller size on the slider falls short of 0.8
        assert full.prune(top_k=smaller).faithfulness(induction_model, clean, corrupt, "logit_diff") < 0.8
    # the corruption changes the last token: the strongest paths run into layer-1 heads and on to the logits
    graph = figures(at)[0]
    labels = [t for tr in graph.data if tr.mode in ("markers+text", "markers") for t in tr.text]
    assert "logits" in labels and any(label.startswith("a1.") for label in labels)
    assert any(e.dst == "logits" and e.src.startswith("a1.") for e in circuit.kept_edges)
    # the slider is log-spaced from 1 edge to all; keeping every edge is exactly faithful
    options = at.select_slider(key="circ_top_k").options
    assert options[0] == "1" and int(options[-1]) == len(full.edges) and len(options) < 20
    at.select_slider(key="circ_top_k").set_value(len(full.edges)).run()
    ok(at)
    n_kept, n_all = (int(x) for x in at.metric[0].value.split("/"))
    assert n_kept == n_all and float(at.metric[2].value) == pytest.approx(1.0, abs=1e-3)
    # the faithfulness curve, then MIB's budgets with CPR / CMD
    at.button(key="circ_curve").click().run()
    ok(at)
    curve = at.dataframe[-1].value
    assert curve["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-3) and len(figures(at)) == 2
    at.button(key="circ_mib").click().run()
    ok(at)
    mib = runs.run(full.mib, induction_model, clean, corrupt, "logit_diff", n_boot=200)
    assert float(at.metric[3].value) == pytest.approx(mib.meta["cpr"], abs=1e-3)


def test_patching_page_on_a_recurrent_model():
    if "flipflop-lstm" not in zoo.names():
        pytest.skip("no flipflop-lstm in the zoo")
    at = make_app("patching", source="flipflop-lstm")
    at.text_area(key="patch_clean").input("BOS W1 IGN W0 IGN IGN READ").run()
    at.text_area(key="patch_corrupt").input("BOS W1 IGN W1 IGN IGN READ").run()
    ok(at)
    assert at.selectbox(key="patch_site").value == "hidden"
    for site in ("hidden", "cell"):
        at.selectbox(key="patch_site").select(site).run()
        ok(at)
        frame = at.dataframe[0].value.set_index("pos")["normalised"].sort_index()
        assert frame.loc[6] == pytest.approx(1.0, abs=0.02) and frame.loc[:2].abs().max() < 1e-6
    # the bit is kept in the cell state: patching it right after the write restores the answer
    assert frame.loc[3] > 0.9


# --- A real model on every page ---------------------------------------------------------

REAL = "smollm2-135m"
#: the pages without a real-model test of their own below (the browser test opens all seven)
PAGES = ("model", "attention")


@pytest.mark.parametrize("page", PAGES)
def test_pages_open_on_the_real_model_from_the_url(page, smollm2):
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = REAL  # as a shared link or a reload opens it
    if page != "model":
        at.switch_page(f"views/{page}.py")
    at.run()
    ok(at)
    assert at.session_state["model_source"] == REAL and REAL in sidebar_text(at)
    assert at.query_params["model"] == [REAL] or at.query_params["model"] == REAL
    assert page == "model" or figures(at)


@pytest.mark.slow  # the every-page browser test (same stage) renders the Heads page on smollm2 too
def test_heads_page_retrieval_and_sinks_on_the_real_model(smollm2):
    from interp import heads

    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = REAL
    # without the page's default head panel (18 s of patching on smollm2; tests/test_app_links.py tests it)
    at.session_state["heads_default_done"] = {REAL}
    at.switch_page("views/heads.py").run()
    ok(at)
    detected = heads.top_heads(
        heads.scores(smollm2, heads.default_tokens(smollm2, n=8, length=64, seed=0)), "induction", k=2
    )
    assert at.multiselect(key="heads_ablate").value == [
        (int(l), int(h)) for l, h in zip(detected.layer, detected["head"])
    ]
    at.number_input(key="ret_n").set_value(2)
    at.number_input(key="ret_ctx").set_value(160)
    at.button(key="ret_go").click().run()
    ok(at)
    labels = [m.label for m in at.metric]
    values = dict(zip(labels, (m.value for m in at.metric)))
    assert float(values["answer accuracy"]) == 1.0
    masking = next(df.value for df in at.dataframe if "condition" in df.value)
    target = masking.loc[masking.condition == "target", "value"].iloc[0]
    random = masking.loc[masking.condition == "random", "value"]
    assert target < 0.5 <= random.min()  # the top heads carry retrieval; random heads do not
    at.button(key="sink_go").click().run()
    ok(at)
    share = next(df.value for df in at.dataframe if "sink_share" in df.value)
    assert len(share) == smollm2.cfg.n_layers and share["sink_share"].max() > 0.3


def test_patching_page_ioi_on_the_real_model(smollm2):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = REAL
    # straight to the IOI prompts: the page's default prompt pair on smollm2 (its own sweep of 270
    # heads) is tested in tests/test_app_links.py (slow)
    at.session_state["patch_inputs"] = "task batch"
    at.session_state["patch_by_head"] = ["pos"]  # by position: one batched sweep (by head: 270 runs)
    at.switch_page("views/patching.py").run()
    ok(at)
    assert at.selectbox(key="patch_metric_ioi").value == "ioi_logit_diff"
    clean, corrupt = (float(m.value) for m in at.metric[:2])
    assert clean > 2 and corrupt < clean - 2  # the model does IOI; ABC removes it
    top = at.dataframe[0].value  # the 20 strongest cells
    assert int(at.metric[2].value) == smollm2.cfg.n_layers * 15  # layers x the template's 15 tokens
    assert top["layer"].iloc[0] >= smollm2.cfg.n_layers // 2  # the strongest cells are late heads


def test_circuit_page_on_the_real_model(smollm2):
    at = make_app("circuit", source=REAL)
    ok(at)
    assert at.text_area(key="circ_clean").value.startswith("When ")  # an IOI prompt
    n_kept, n_all = (int(x) for x in at.metric[0].value.split("/"))
    assert 1 <= n_kept and n_all > 10_000
    # it opens at the fewest edges whose circuit keeps 80% of the IOI logit difference
    assert float(at.metric[2].value) >= 0.8 and any("Opened at" in c.value for c in at.caption)
    # node names: drawn beside the nodes up to 80 nodes, in the hover text beyond
    labels = [t for tr in figures(at)[0].data if tr.mode in ("markers+text", "markers") for t in tr.text]
    assert "logits" in labels and any(label.startswith("a") and ".h" in label for label in labels)


@pytest.mark.slow  # the every-page browser test (same stage) renders it on smollm2 too
def test_steering_page_on_the_real_model(smollm2):
    at = make_app("steering", source=REAL)
    ok(at)
    assert at.radio(key="steer_pairs_mode").value == "the shipped sentiment pairs"
    at.multiselect(key="steer_layers").set_value([smollm2.cfg.n_layers * 2 // 3]).run()
    at.text_input(key="steer_coefs").input("0 4").run()
    at.button(key="steer_sweep").click().run()
    ok(at)
    frame = at.dataframe[1].value
    assert set(frame["vector"]) == {"none", "prompt", "steer", "random"}
    steer = frame[(frame.vector == "steer") & (frame.coef == 4)].behaviour.iloc[0]
    random = frame[(frame.vector == "random") & (frame.coef == 4)].behaviour.iloc[0]
    none = frame[frame.vector == "none"].behaviour.iloc[0]
    assert steer > random and steer > none + 2  # log-odds of positive words rise by nats


def test_lens_page_on_the_real_model(smollm2):
    from interp.lens import dla

    at = make_app("lens", source=REAL)
    ok(at)
    n = smollm2.to_tokens(at.text_area(key="lens_prompt").value).shape[1]
    grid, curves, attribution = figures(at)[:3]
    assert decode(grid.data[0].z).shape == (smollm2.cfg.n_layers, n)
    assert decode(attribution.data[0].z).shape == (smollm2.cfg.n_layers, smollm2.cfg.n_heads)
    at.text_input(key="lens_target").input(" Mary").run()
    at.text_input(key="lens_contrast").input(" John").run()
    ok(at)
    logit, total = (float(m.value) for m in at.metric[:2])
    lib = runs.run(dla, smollm2, at.text_area(key="lens_prompt").value, " Mary", " John")
    assert logit == pytest.approx(lib.meta["logit"], abs=1e-3) and total == pytest.approx(logit, abs=1e-3)
    at.text_input(key="lens_target").input(" Parisian London").run()
    assert not at.exception and "3 tokens, not one" in at.error[0].value


def test_lens_page_on_a_recurrent_model():
    at = make_app("lens", source="recall-gru")
    ok(at)
    assert at.selectbox(key="lens_stage").options == ["pre", "post"]
    assert len(figures(at)) == 3
