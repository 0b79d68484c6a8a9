"""Attribution patching and edge attribution (EAP, EAP-IG): agreement with exact patching on the zoo
models, cost, gradients of the per-receiver forward, and the induction circuit."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

import interp
from circuits import attribution, corrupt, edges, metrics, patching
from interp import runs, tasks
from interp.gradients import site_gradients


def induction_setup(n: int = 8):
    """[BOS] r r (period 16) vs the second copy re-randomised; log-prob of every repeated token."""
    batch = tasks.repeated_tokens(n, d_vocab=64, n_ctx=33, period=16, seed=1)
    corrupted = corrupt.replace_tokens(batch.tokens, range(17, 33), d_vocab=64, low=1, seed=2)
    return batch.tokens, corrupted, metrics.from_labels(batch.labels)


def recall_setup(n: int = 32):
    """Four key-value pairs and queries; corrupt = the key the last query asks for replaced by an
    unused key in the context; log-prob of the answer at the last query."""
    b = tasks.associative_recall(n, n_pairs=4, d_vocab=128, seed=5)
    clean, last = b.tokens, int(b.info["query_pos"][0, -1])
    corrupted = corrupt.recall_key_swap(b, d_vocab=128)
    return clean, corrupted, metrics.logprob(b.info["answer"][:, -1], pos=last)


@pytest.mark.parametrize("which", ["induction", "recall"])
def test_attribution_ranks_head_positions_like_exact_patching(which, induction_model, recall_model):
    model, (clean, corrupted, metric) = (
        (induction_model, induction_setup()) if which == "induction" else (recall_model, recall_setup())
    )
    exact = runs.run(patching.patch, model, clean, corrupted, site="z", metric=metric, progress=False)
    est = runs.run(attribution.attribute, model, clean, corrupted, site="z", metric=metric)
    assert est.meta["clean_value"] == pytest.approx(exact.meta["clean_value"], abs=1e-5)
    exact, est = exact.frame, est.frame
    assert list(est.columns) == list(exact.columns) and len(est) == len(exact)
    assert spearmanr(exact["effect"], est["effect"]).statistic >= 0.8


def test_attribution_costs_two_forwards_and_one_backward(induction_model):
    clean, corrupted, metric = induction_setup(4)
    calls = []
    run = induction_model.backend.run

    def counting(tokens, hooks):
        calls.append(torch.is_grad_enabled())
        return run(tokens, hooks)

    induction_model.backend.run = counting
    try:
        df = attribution.attribute(
            induction_model, clean, corrupted, site=["z", "resid_pre", "attn_out", "pattern"], metric=metric
        )
    finally:
        induction_model.backend.run = run
    assert calls == [False, True]  # the clean forward, then the corrupt forward with gradients
    assert set(df["site"]) == {"z", "resid_pre", "attn_out", "pattern"}
    assert df.loc[df.site == "resid_pre", "head"].isna().all()  # by is cut to the axes each site has


def test_attribution_is_the_first_order_term(small_recurrent):
    """On a GRU's per-step hidden state: (clean - corrupt) . d metric / d hidden at the corrupt run."""
    model, clean, corrupted = small_recurrent
    metric = metrics.logprob([1, 2, 3], pos=-1)
    est = attribution.attribute(model, clean, corrupted, site="hidden", by="layer,pos", metric=metric)
    names = [f"blocks.{l}.hook_hidden" for l in range(2)]
    _, grads = site_gradients(model.module, corrupted, lambda lg: metric(lg), names)
    _, c_clean = model.run_with_cache(clean, names=names)
    _, c_corrupt = model.run_with_cache(corrupted, names=names)
    for l, name in enumerate(names):
        want = ((c_clean[name] - c_corrupt[name]) * grads[name]).sum((0, 2))
        got = torch.tensor(est[est.layer == l].sort_values("pos")["effect"].values, dtype=want.dtype)
        assert torch.allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def small_recurrent():
    model = interp.load(dict(cell="gru", d_vocab=13, d_model=12, n_layers=2, n_ctx=16, seed=1))
    clean = torch.randint(0, 13, (3, 7), generator=torch.Generator().manual_seed(2))
    return model, clean, corrupt.replace_tokens(clean, [2, 4], d_vocab=13, seed=3)


def test_per_receiver_forward_is_exact_and_its_gradients_are_the_inputs(recall_model):
    model = recall_model
    clean, corrupted, metric = recall_setup(4)
    graph, heads = edges.Graph.of(model), model.weights()
    plain = model(clean)
    eps: dict = {}
    with torch.enable_grad():
        logits = edges.run(model, heads, graph, clean, eps=eps)
        value = metric(logits)
        grads = dict(zip(eps, torch.autograd.grad(value, list(eps.values()))))
    assert (logits - plain).abs().max() < 1e-4
    g = edges.receiver_grads(eps, grads, graph)
    assert g.shape[0] == len(graph.receivers()) == 2 * (3 * 4 + 1) + 1
    _, want = site_gradients(model.module, clean, lambda lg: metric(lg), ["ln_final.hook_in"])
    assert torch.allclose(g[-1], want["ln_final.hook_in"], atol=1e-6)
    # layer 1's heads read the residual entering it only through their q/k/v inputs, and the MLP
    # reads resid_mid: their receiver gradients, plus the skip path's (the final residual's),
    # add up to the gradient of the residual entering layer 1 (canonical name: blocks.1.hook_in)
    _, total = site_gradients(model.module, clean, lambda lg: metric(lg), ["blocks.1.hook_in"])
    heads_and_mlp = g[graph.receiver_index()[("a1.h0", "q")] :].sum(0)
    assert torch.allclose(heads_and_mlp, total["blocks.1.hook_in"], atol=1e-5)


def test_eap_finds_the_induction_circuit(induction_model):
    model = induction_model
    batch = tasks.repeated_tokens(16, d_vocab=64, n_ctx=33, period=16, seed=1)
    clean = batch.tokens
    corrupted = corrupt.replace_tokens(clean, range(17, 33), d_vocab=64, low=1, seed=2)
    metric = metrics.logprob(clean[:, 32], pos=31)
    _, cache = model.run_with_cache(clean, names=["blocks.0.attn.hook_pattern"])
    prev = int(cache["blocks.0.attn.hook_pattern"].diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, 2)).argmax())
    for method in ("eap", "eap-ig"):
        circuit = attribution.edge_attribution(model, clean, corrupted, metric=metric, method=method, progress=False)
        assert len(circuit.edges) == int(edges.Graph.of(model).valid().sum())
        assert circuit.prune(top_k=len(circuit.edges)).faithfulness(model, clean, corrupted, metric) == pytest.approx(
            1.0, abs=1e-3
        )
        assert circuit.prune(top_k=0).faithfulness(model, clean, corrupted, metric) == pytest.approx(0.0, abs=1e-3)
    small = circuit.prune(top_k=20)  # EAP-IG
    kept = small.kept_edges
    assert len(kept) <= 20
    assert any(e.src == f"a0.h{prev}" and e.dst.startswith("a1.") for e in kept)  # previous-token -> induction
    assert small.faithfulness(model, clean, corrupted, metric) >= 0.8


def test_edge_attribution_needs_heads(small_recurrent):
    model, clean, corrupted = small_recurrent
    with pytest.raises(ValueError, match="needs attention heads"):
        attribution.edge_attribution(model, clean, corrupted, metric="logprob")
    with pytest.raises(ValueError, match="method must be one of"):
        attribution.edge_attribution(model, clean, corrupted, metric="logprob", method="acdc")
