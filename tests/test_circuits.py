"""Path patching, circuit graphs (pruning, JSON), plots and the `interp patch` command."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest
import torch
from transformer_lens.patching import get_act_patch_direct_path
from typer.testing import CliRunner

from apps.cli import app
from circuits import attribution, corrupt, metrics, patching, path_patching, plots
from circuits.faithfulness import faithfulness_curve, smallest_faithful
from circuits.graph import VERSION, Circuit, Edge, Node
from interp import tasks


def test_path_patching_equals_transformer_lens_direct_path(hf_gpt2):
    """TL's get_act_patch_direct_path needs split q/k/v inputs, which the HF GPT-2 bridge has."""
    m = hf_gpt2
    clean = torch.randint(2, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    corrupted = corrupt.replace_tokens(clean, [1, 2, 3, 4, 5, 6], d_vocab=m.cfg.d_vocab, low=2, seed=1)
    metric = metrics.logit(5, pos=-1)
    _, c_clean = m.module.run_with_cache(clean)
    _, c_corrupt = m.module.run_with_cache(corrupted)
    for comp in "qkv":
        ref = get_act_patch_direct_path(
            m.module, corrupted, c_clean, c_corrupt, lambda lg: metric(lg), 0, 1, component=comp, verbose=False
        )
        df = path_patching.path_patch(
            m, clean, corrupted, senders=[(0, 1)], receivers="all", components=comp, metric=metric, progress=False
        )
        assert list(df["receiver"]) == [f"a1.h{h}" for h in range(4)]
        assert (ref[1] - torch.tensor(df["value"].values, dtype=ref.dtype)).abs().max() < 1e-4


def test_path_to_logits_from_the_last_layer_is_head_patching(induction_model):
    """A last-layer head reaches the logits only directly: its path to the logits is its output."""
    batch = tasks.repeated_tokens(4, d_vocab=64, n_ctx=21, period=10, seed=0)
    corrupted = corrupt.replace_tokens(batch.tokens, range(11, 21), d_vocab=64, low=1, seed=1)
    metric = metrics.logprob(batch.tokens[:, 20], pos=19)
    paths = path_patching.path_patch(
        induction_model, batch.tokens, corrupted, senders=[(1, h) for h in range(4)], metric=metric, progress=False
    )
    heads = patching.patch(
        induction_model, batch.tokens, corrupted, site="z", by="layer,head", layers=[1], metric=metric, progress=False
    )
    assert (paths["value"].values - heads["value"].values).__abs__().max() < 1e-4
    with pytest.raises(ValueError, match="later layers"):
        path_patching.path_patch(
            induction_model, batch.tokens, corrupted, senders=[(1, 0)], receivers="all", metric=metric, progress=False
        )


@pytest.fixture(scope="module")
def toy_circuit() -> Circuit:
    nodes = [
        Node("input", "input", -1),
        Node("a0.h0", "head", 0, 0),
        Node("a0.h1", "head", 0, 1),
        Node("a1.h0", "head", 1, 0),
        Node("logits", "logits", 2),
    ]
    edges = [
        Edge("input", "a0.h0", "v", -2.0),
        Edge("a0.h0", "a1.h0", "k", -1.5),
        Edge("a1.h0", "logits", "", -1.0),
        Edge("input", "a0.h1", "q", 0.9),
        Edge("a0.h1", "logits", "", 0.05),
        Edge("input", "logits", "", 0.3),
    ]
    return Circuit(nodes, edges, {"model": "toy", "method": "eap", "n_layers": 2, "n_heads": 2})


def test_prune_and_json_round_trip(toy_circuit, tmp_path):
    top3 = toy_circuit.prune(top_k=3)
    assert [e.key for e in top3.kept_edges] == ["input->a0.h0<v>", "a0.h0->a1.h0<k>", "a1.h0->logits"]
    # input -> a0.h1 is large but leads nowhere once a0.h1 -> logits is dropped
    thr = toy_circuit.prune(threshold=0.5)
    assert not thr.has_edge("input", "a0.h1") and thr.has_edge("a0.h0", "a1.h0", "k")
    assert toy_circuit.prune(threshold=0.5, connected=False).has_edge("input", "a0.h1")
    path = tmp_path / "c.json"
    text = top3.to_json(path)
    data = json.loads(text)
    assert data["format"] == "interp.circuit" and data["version"] == VERSION
    assert set(data["edges"][0]) == {"src", "dst", "component", "score", "kept"}
    back = Circuit.from_json(path)
    assert [(e.key, e.score, e.kept) for e in back.edges] == [(e.key, e.score, e.kept) for e in top3.edges]
    assert back.meta["pruned"]["top_k"] == 3 and Circuit.from_json(text).nodes == top3.nodes
    with pytest.raises(ValueError, match="version 99 is not supported"):
        Circuit.from_json({**data, "version": 99})
    with pytest.raises(ValueError, match="not a circuit file"):
        Circuit.from_json({"format": "other"})
    with pytest.raises(ValueError, match="prune needs threshold"):
        toy_circuit.prune()


def test_plots(toy_circuit, induction_model):
    m = induction_model
    batch = tasks.repeated_tokens(2, d_vocab=64, n_ctx=13, period=6, seed=0)
    corrupted = corrupt.replace_tokens(batch.tokens, range(7, 13), d_vocab=64, low=1, seed=1)
    metric = metrics.logprob(batch.tokens[:, 12], pos=11)
    frames = [
        patching.patch(m, batch.tokens, corrupted, site=s, by=b, metric=metric, window=w, progress=False)
        for s, b, w in [
            ("resid_pre", "layer,pos", 1),
            ("z", "layer,head", 1),
            ("z", "layer,pos,head", 1),
            ("attn_out", "layer,pos", 2),
            ("pattern", "layer,head,pos,src_pos", 1),
        ]
    ]
    toks = m.to_str_tokens(batch.tokens[0])
    for df in frames:
        fig = plots.patching_heatmap(df, tokens=toks)
        maps = [t for t in fig.data if isinstance(t, go.Heatmap)]
        assert maps and all(t.z is not None and t.z.size > 0 for t in maps)
    assert len([t for t in plots.patching_heatmap(frames[3]).data if isinstance(t, go.Heatmap)]) == 2  # windows 1, 2
    est = attribution.attribute(m, batch.tokens, corrupted, site="z", metric=metric)
    assert isinstance(plots.agreement_scatter(frames[2], est), go.Figure)
    fig = plots.circuit_graph(toy_circuit.prune(top_k=3))
    assert sum(isinstance(t, go.Scatter) and t.mode == "lines" for t in fig.data) == 3
    circuit = attribution.edge_attribution(m, batch.tokens, corrupted, metric=metric, method="eap", progress=False)
    curve = faithfulness_curve(circuit, m, batch.tokens, corrupted, metric, sizes=[2, 10])
    assert list(curve.columns) == ["top_k", "n_edges", "n_nodes", "faithfulness"]
    assert isinstance(plots.faithfulness_plot(curve), go.Figure)
    with pytest.raises(ValueError, match="not in the frame"):
        plots.patching_heatmap(frames[0], value="nope")


def test_smallest_faithful_circuit_is_the_first_size_that_reaches_the_target(induction_model):
    """Bisection over sizes: the size returned reaches the target (checked by the circuit's own
    faithfulness), and on this model's monotone curve every smaller size does not."""
    m = induction_model
    batch = tasks.repeated_tokens(4, d_vocab=64, n_ctx=13, period=6, seed=0)
    corrupted = corrupt.replace_tokens(batch.tokens, range(7, 13), d_vocab=64, low=1, seed=1)
    metric = metrics.logprob(batch.tokens[:, 12], pos=11)
    circuit = attribution.edge_attribution(m, batch.tokens, corrupted, metric=metric, method="eap", progress=False)
    sizes = [k for k in (1, 2, 3, 5, 10, 20, 30, 50) if k < circuit.n_edges] + [circuit.n_edges]
    curve = faithfulness_curve(circuit, m, batch.tokens, corrupted, metric, sizes=sizes)
    k, f = smallest_faithful(circuit, m, batch.tokens, corrupted, metric, target=0.8, sizes=sizes)
    assert f >= 0.8 and f == pytest.approx(
        circuit.prune(top_k=k).faithfulness(m, batch.tokens, corrupted, metric), abs=1e-5
    )
    reached = curve[curve.faithfulness >= 0.8]
    assert curve.faithfulness.is_monotonic_increasing or k in set(reached.top_k)
    if curve.faithfulness.is_monotonic_increasing:
        assert k == int(reached.top_k.iloc[0]) and k > 1, curve
    # a target no circuit reaches gives the full circuit; sizes must be edge counts
    assert smallest_faithful(circuit, m, batch.tokens, corrupted, metric, target=2.0, sizes=sizes)[0] == circuit.n_edges
    with pytest.raises(ValueError, match="positive edge counts"):
        smallest_faithful(circuit, m, batch.tokens, corrupted, metric, sizes=[0, 5])


def test_cli_patch(tmp_path):
    runner = CliRunner()
    clean = "t5 t9 t3 t7 t5 t9 t3"
    out = tmp_path / "cells.csv"
    res = runner.invoke(
        app,
        [
            "patch",
            "induction-2l",
            "--clean",
            clean,
            "--corrupt",
            "t5 t9 t3 t7 t5 t9 t4",
            "--site",
            "z",
            "--out",
            str(out),
            "--top",
            "3",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "clean" in res.output and out.is_file() and len(out.read_text().splitlines()) == 1 + 2 * 8 * 4
    js = tmp_path / "cells.json"
    res = runner.invoke(
        app,
        [
            "patch",
            "induction-2l",
            "--clean",
            clean,
            "--corrupt",
            "t5 t9 t3 t7 t5 t9 t4",
            "--site",
            "resid_pre",
            "--metric",
            "logprob",
            "--answer",
            "t7",
            "--method",
            "attribution",
            "--out",
            str(js),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert {"layer", "pos", "effect", "normalised"} <= set(json.loads(js.read_text())[0])
    bad = runner.invoke(
        app, ["patch", "induction-2l", "--clean", clean, "--corrupt", "t5 t9 t3"], catch_exceptions=False
    )
    assert bad.exit_code == 2 and "aligned position by position" in bad.output
