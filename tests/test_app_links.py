"""The linked views of the app (issue 28) driven with ``streamlit.testing.v1.AppTest``: a simulated
click on a head's cell of the Lens page's DLA map, of the Patching page's per-head map and of the
Attention page's layer x head overview opens that head's panel; a simulated click on a token of the
token view sets the shared token (``?token=``); the Heads and Patching pages' defaults; the token
view of a recurrent model's gradient saliency.

A browser sends these events as widget states; AppTest has no API for plotly selections or custom
components, so :func:`send` adds the same widget state to the next run (what the frontend sends)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from interp import heads, runs

APP = str(Path(__file__).resolve().parent.parent / "apps" / "app.py")


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def open_page(page: str, source: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if source is not None:
        at.query_params["model"] = source
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page(f"views/{page}.py")
    return at.run()


def chart(at: AppTest, key: str):
    """The plotly chart element whose Streamlit key is ``key``, and its figure."""
    el = next(e for e in at.get("plotly_chart") if e.proto.id.endswith(f"-{key}"))
    return el, pio.from_json(el.proto.spec)


def send(at: AppTest, widget_id: str, **value) -> AppTest:
    """Runs the app again with one more widget state, as the browser sends it."""
    states = at._tree.get_widget_states()
    w = states.widgets.add()
    w.id = widget_id
    for field, v in value.items():
        setattr(w, field, v)
    return at._run(states)


def click_head(at: AppTest, key: str, layer: int, head: int) -> AppTest:
    """A click on the click target of ``(layer, head)`` in the chart ``key`` (a plotly point
    selection event: its curve number and point index, what plotly reports for a click)."""
    el, fig = chart(at, key)
    for c, trace in enumerate(fig.data):
        if (trace.name or "").endswith(" (select)"):
            cells = [(int(x[0]), int(x[1])) for x in trace.customdata]
            if (layer, head) in cells:
                i = cells.index((layer, head))
                point = {"curve_number": c, "point_number": i, "point_index": i, "x": trace.x[i], "y": trace.y[i]}
                selection = {"points": [point], "point_indices": [i], "box": [], "lasso": []}
                return send(at, el.proto.id, string_value=json.dumps({"selection": selection}))
    raise AssertionError(f"no click target of L{layer}H{head} in {key}")


def click_token(at: AppTest, key: str, pos: int) -> AppTest:
    """A click on token ``pos`` of the token view ``key``: the component's trigger value ``token``."""
    el = next(e for e in at.get("bidi_component") if e.proto.id.endswith(f"-{key}"))
    trigger = f"$$STREAMLIT_INTERNAL_KEY_{el.proto.id}__events"
    return send(at, trigger, json_trigger_value=json.dumps([{"event": "token", "value": pos}]))


def token_view_data(at: AppTest, key: str = "attn_token_view") -> tuple[np.ndarray, int]:
    """The matrix the token view colours the prompt with, and the token it opens pinned at."""
    el = next(e for e in at.get("bidi_component") if e.proto.id.endswith(f"-{key}"))
    html = json.loads(el.proto.json)["html"]
    rows = np.array(json.loads(re.search(r"const A = (\[.*?\]\]);", html).group(1)))
    return rows, int(re.search(r"let pinned = (\d+);", html).group(1))


def decode(values) -> np.ndarray:
    """A figure's data array as floats; plotly's JSON stores numpy arrays as base64 typed arrays."""
    import base64

    if isinstance(values, dict):
        shape = tuple(int(x) for x in str(values.get("shape", "-1")).split(","))
        values = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).reshape(shape)
    return np.asarray(values, dtype=float)


def subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


def test_dla_cell_click_opens_the_head_panel(induction_model):
    """Lens page: a click on the DLA cell of the head with the largest direct attribution (read from
    the library's frame) selects it: its panel opens, the URL carries it."""
    from interp.lens import dla

    at = open_page("lens")
    ok(at)
    assert not subheaders(at)
    tokens = induction_model.to_tokens(at.text_area(key="lens_prompt").value)
    target = int(induction_model(tokens)[0, -1].argmax())
    frame = dla(induction_model, tokens, target)
    best = frame[frame.kind == "head"].sort_values("value").iloc[-1]
    layer, head = int(best.layer), int(best["head"])
    _, fig = chart(at, "lens_dla")
    targets = next(t for t in fig.data if t.name == "direct logit attribution (select)")
    values = {(int(c[0]), int(c[1])): c[2] for c in targets.customdata}
    assert values[(layer, head)] == pytest.approx(best.value, abs=1e-6)  # the cell carries the library's value
    click_head(at, "lens_dla", layer, head)
    ok(at)
    assert subheaders(at) == [f"Head L{layer}H{head}"]
    assert at.query_params["head"] in (f"{layer}.{head}", [f"{layer}.{head}"])
    assert "direct logit attribution" in {m.label for m in at.metric}
    # a rerun without a new click keeps the selection (the chart reports its last selection again)
    at.run()
    assert subheaders(at) == [f"Head L{layer}H{head}"]


def test_patching_cell_click_opens_the_head_panel(induction_model):
    """Patching page, z swept by head: a click on the cell of the head with the largest normalised
    effect opens its panel on the page's own prompts and metric, with the same effect."""
    at = open_page("patching")
    at.multiselect(key="patch_by_head").set_value(["head"]).run()
    ok(at)
    frame = at.dataframe[0].value
    best = frame.iloc[0]  # the strongest cell
    layer, head = int(best.layer), int(best["head"])
    click_head(at, "patch_heatmap", layer, head)
    ok(at)
    assert subheaders(at) == [f"Head L{layer}H{head}"]
    shown = {m.label: m.value for m in at.metric}
    assert float(shown["patching effect (normalised)"]) == pytest.approx(best.normalised, abs=1e-4)


def test_overview_scales_and_a_thumbnail_click_selects_the_head(induction_model):
    """Attention page: the overview holds one thumbnail per head, each the head's pattern (the prompt
    is short: unpooled); a click on one selects the head and moves the page's layer and head to it."""
    from interp.attention import attention_patterns

    at = open_page("attention")
    ok(at)
    tokens = induction_model.to_tokens(at.text_area(key="attn_text").value)
    n = tokens.shape[1]
    expected = attention_patterns(induction_model, tokens).numpy()
    _, fig = chart(at, "attn_overview")
    z = decode(fig.data[0].z)
    b = min(12, n)
    assert len(fig.data[1].customdata) == 8  # 2 layers x 4 heads, a click target each
    cell = b + 1
    # thumbnail (1, 2): pooled rows of L1H2 (mean over destinations, sum over sources)
    edges = np.linspace(0, n, b + 1).round().astype(int)
    want = np.add.reduceat(np.add.reduceat(expected[1, 2], edges[:-1], 0) / np.diff(edges)[:, None], edges[:-1], 1)
    got = np.nan_to_num(z[cell : cell + b, 2 * cell : 2 * cell + b])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # pooled rows stay distributions
    click_head(at, "attn_overview", 0, 3)
    ok(at)
    assert (at.selectbox(key="attn_layer").value, at.selectbox(key="attn_head").value) == (0, 3)
    assert at.query_params["head"] in ("0.3", ["0.3"])


def test_overview_reads_at_30_x_9_and_32_x_32():
    """The overview's size stays bounded: smollm2's 30 x 9 heads and a 32 x 32-head frame each fit
    in about 1,700 pixels with thumbnails of at least 4 pixels per cell."""
    import pandas as pd

    from interp.plots.attention import head_overview

    for layers, n_heads in ((30, 9), (32, 32)):
        n = 20
        rng = np.random.default_rng(0)
        rows = []
        for l in range(layers):
            for h in range(n_heads):
                p = np.tril(rng.random((n, n)))
                p /= p.sum(1, keepdims=True)
                d, s = np.tril_indices(n)
                rows.append(pd.DataFrame({"layer": l, "head": h, "dest": d, "src": s, "attention": p[d, s]}))
        fig = head_overview(pd.concat(rows), selected=(layers - 1, n_heads - 1))
        assert len(fig.data[1].customdata) == layers * n_heads
        assert fig.layout.height <= 1700 and fig.layout.width <= 1700
        px = (fig.layout.height - 110) / (layers * 13 - 1)  # 12-cell thumbnails and a 1-cell gap
        assert px * 12 >= 40  # each thumbnail at least 40 pixels
        assert list(fig.layout.yaxis.ticktext) == [str(l) for l in range(layers)]
        assert len(fig.layout.shapes) == 1  # the selected head outlined


def test_token_click_sets_the_shared_token(induction_model):
    """Attention page: a click on a token of the token view makes it the shared token: the URL carries
    ``token=``, the view opens pinned there, and the Heads page's panel reads that destination."""
    at = open_page("attention")
    ok(at)
    n = induction_model.to_tokens(at.text_area(key="attn_text").value).shape[1]
    assert token_view_data(at)[1] == n - 1  # nothing selected: the last token
    click_token(at, "attn_token_view", 5)
    ok(at)
    assert at.query_params["token"] in ("5", ["5"])
    assert token_view_data(at)[1] == 5
    assert at.slider(key="attn_dest").value == 5  # the page's one-destination view follows
    at.switch_page("views/heads.py").run()
    ok(at)
    assert at.selectbox(key="heads_panel_token").value == 5


def test_heads_page_opens_on_the_top_heads(induction_model):
    """Heads page defaults: the top head of each kind outlined and listed, the panel open on the top
    induction head (both from the library's detection); a link naming a head opens that one instead."""
    probes = heads.default_tokens(induction_model, n=16, length=64, seed=0)
    scores = heads.scores(induction_model, probes)
    top = heads.top_heads(scores, k=1)
    ind = top[top.kind == "induction"].iloc[0]
    at = open_page("heads")
    ok(at)
    assert subheaders(at) == [f"Head L{ind.layer}H{ind['head']}"]
    _, fig = chart(at, "heads_heatmap")
    outlined = {
        t.name.removesuffix(" (highlight)"): (int(t.y[0]), int(t.x[0]))
        for t in fig.data
        if "highlight" in (t.name or "")
    }
    kinds = at.multiselect(key="heads_kinds").value
    assert outlined == {k: (int(r.layer), int(r["head"])) for k, r in top.set_index("kind").loc[kinds].iterrows()}
    listing = next(m.value for m in at.markdown if m.value.startswith("**Top head of each kind**"))
    assert f"induction **L{ind.layer}H{ind['head']}**" in listing
    # a link naming another head opens that head, not the default
    at = open_page("heads", head="0.1")
    ok(at)
    assert subheaders(at) == ["Head L0H1"]


@pytest.mark.slow  # ~40 s: the page scores every head and patches all 270 for the panel
def test_heads_page_opens_on_smollm2s_induction_head(smollm2):
    """Heads page on smollm2: the panel opens on the detected top induction head, its patching effect
    and DLA drawn."""
    probes = heads.default_tokens(smollm2, n=8, length=64, seed=0)  # the page's probes for text models
    ind = heads.top_heads(heads.scores(smollm2, probes), "induction", k=1).iloc[0]
    at = open_page("heads", source="smollm2-135m")
    ok(at)
    assert subheaders(at) == [f"Head L{ind.layer}H{ind['head']}"]
    assert {"patching effect (normalised)", "direct logit attribution"} <= {m.label for m in at.metric}


@pytest.mark.slow  # ~45 s: the page patches smollm2's 270 heads, the test once more with the library
def test_patching_page_opens_on_the_ioi_example(smollm2):
    """Patching page on smollm2: the IOI example (interp.tasks.text.ioi) with its indirect object and
    subject filled in as the answer and wrong tokens; the shown metric is the library's logit
    difference of those names, swept by head."""
    from circuits.patching import patch
    from interp import metrics
    from interp.tasks.text import ioi

    pair = ioi(smollm2, 1, corruption="ABC", templates=[0], seed=0)
    at = open_page("patching", source="smollm2-135m")
    ok(at)
    assert at.text_area(key="patch_clean").value == pair.texts[0]
    assert at.text_area(key="patch_corrupt").value == pair.corrupt_texts[0]
    io, s = smollm2.decode([int(pair.answer[0])]), smollm2.decode([int(pair.wrong[0])])
    assert (at.text_input(key="patch_answer").value, at.text_input(key="patch_wrong").value) == (io, s)
    assert at.multiselect(key="patch_by_head").value == ["head"]
    run = runs.run(
        patch,
        smollm2,
        pair.clean.tokens,
        pair.corrupt.tokens,
        site="z",
        by=("layer", "head"),
        metric=metrics.logit_diff(pair.answer, pair.wrong),
        progress=False,
    )
    clean, corrupt = (float(m.value) for m in at.metric[:2])
    assert [clean, corrupt] == pytest.approx([run.meta["clean_value"], run.meta["corrupt_value"]], abs=1e-3)
    assert clean > 2 and corrupt < clean - 2  # the model does IOI on the example; ABC removes it
    shown = at.dataframe[0].value
    merged = shown.merge(run.frame, on=["layer", "head"], suffixes=("", "_lib"))
    np.testing.assert_allclose(merged["normalised"], merged["normalised_lib"], atol=1e-4)


def test_recurrent_model_token_view_shows_saliency():
    """Attention page on an SSM: no attention, so the token view shows gradient saliency, the same
    matrix as interp.saliency.token_saliency; a click on a token selects it too."""
    import interp
    from interp.saliency import token_saliency

    at = open_page("attention", source="recall-ssm")
    ok(at)
    assert any("gradient saliency" in i.value for i in at.info)
    model = interp.load("recall-ssm")
    tokens = model.to_tokens(at.text_area(key="attn_text").value)
    rows, pinned = token_view_data(at)
    np.testing.assert_allclose(rows, np.tril(token_saliency(model, tokens).numpy()), atol=1e-4)
    click_token(at, "attn_token_view", 3)
    ok(at)
    assert token_view_data(at)[1] == 3 and at.query_params["token"] in ("3", ["3"])


def test_patching_answer_tokens_typed_and_refused(induction_model):
    """Patching page, a prompt pair: typed answer and wrong tokens give the library's logit difference
    of those tokens; a token the model lacks, or only one of the two, is one line of error."""
    from circuits.patching import patch
    from interp import metrics

    at = open_page("patching")
    assert at.text_input(key="patch_answer").value == ""  # zoo models: empty, the runs' predictions
    at.text_input(key="patch_answer").input("t7").run()
    at.text_input(key="patch_wrong").input("t9").run()
    ok(at)
    clean = induction_model.to_tokens(at.text_area(key="patch_clean").value)
    corrupt = induction_model.to_tokens(at.text_area(key="patch_corrupt").value)
    answer, wrong = induction_model.token_id("t7"), induction_model.token_id("t9")
    run = runs.run(
        patch, induction_model, clean, corrupt, site="z", by=("layer", "pos"), metric=metrics.logit_diff(answer, wrong)
    )
    shown = {m.label: float(m.value) for m in at.metric[:2]}
    assert shown == {
        "logit_diff('t7' - 't9') clean": pytest.approx(run.meta["clean_value"], abs=1e-4),
        "logit_diff('t7' - 't9') corrupt": pytest.approx(run.meta["corrupt_value"], abs=1e-4),
    }
    at.text_input(key="patch_wrong").input("").run()
    assert not at.exception and "give both" in at.error[0].value
    at.text_input(key="patch_wrong").input("zebra").run()
    assert not at.exception and len(at.error) == 1 and "zebra" in at.error[0].value


def test_recurrent_model_token_view_shows_the_ssm_hidden_attention():
    """Attention page on an SSM, the second read: the token view draws interp.saliency.ssm_read."""
    import interp
    from interp.saliency import ssm_read

    at = open_page("attention", source="recall-ssm")
    at.radio(key="attn_read").set_value("hidden attention of SSM layer 0").run()
    ok(at)
    model = interp.load("recall-ssm")
    tokens = model.to_tokens(at.text_area(key="attn_text").value)
    rows, _ = token_view_data(at)
    np.testing.assert_allclose(rows, np.tril(ssm_read(model, tokens, 0).numpy()), atol=1e-4)
