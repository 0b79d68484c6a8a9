"""Head scores: agreement with TransformerLens's head_detector, the known heads of
induction-2l, brute-force checks of the other definitions, weights-based scores against
TransformerLens, bad input, CLI and plots."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformer_lens.head_detector import detect_head, get_previous_token_head_detection_pattern

import interp
from interp import heads
from interp.compat import TokenizedPrompts
from interp.plots import heads as plots

TL_NAMES = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}


def _grid(frame: pd.DataFrame, kind: str, model) -> torch.Tensor:
    sub = frame[frame["kind"] == kind].sort_values(["layer", "head"])
    return torch.tensor(sub["score"].to_numpy()).view(model.cfg.n_layers, model.cfg.n_heads)


def test_equals_detect_head_on_zoo_model(induction_model):
    tokens = heads.default_tokens(induction_model, n=3, length=40, seed=1)
    tokens[1, 10:20] = 7  # runs of one token: many duplicates, consecutive repeats
    proxy = TokenizedPrompts(induction_model, tokens)
    for exclude_bos, exclude_current in [(False, False), (True, True), (True, False)]:
        ours = heads.scores(
            induction_model, tokens, list(TL_NAMES), exclude_bos=exclude_bos, exclude_current_token=exclude_current
        )
        for kind, name in TL_NAMES.items():
            ref = detect_head(
                proxy, proxy.prompts(), name, exclude_bos=exclude_bos, exclude_current_token=exclude_current
            )
            torch.testing.assert_close(_grid(ours, kind, induction_model), ref.double(), atol=1e-5, rtol=0)


def test_equals_detect_head_on_hf_gpt2(hf_gpt2):
    g = torch.Generator().manual_seed(0)
    prompts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 12, (40,), generator=g)) for _ in range(3)]
    tokens = hf_gpt2.to_tokens(prompts)
    assert torch.equal(tokens, hf_gpt2.module.to_tokens(prompts))  # the same tokens reach both
    ours = heads.scores(hf_gpt2, tokens, list(TL_NAMES))
    for kind, name in TL_NAMES.items():
        ref = detect_head(hf_gpt2.module, prompts, name)
        torch.testing.assert_close(_grid(ours, kind, hf_gpt2), ref.double(), atol=1e-5, rtol=0)


def detected(frame: pd.DataFrame, kind: str, threshold: float) -> set[tuple[int, int]]:
    sub = frame[(frame["kind"] == kind) & (frame["score"] > threshold)]
    return {(int(l), int(h)) for l, h in zip(sub["layer"], sub["head"])}


def test_induction_model_has_its_known_heads(induction_model):
    frame = heads.scores(induction_model, heads.default_tokens(induction_model, n=8))
    top = lambda kind, k: {(int(l), int(h)) for l, h in heads.top_heads(frame, kind, k)[["layer", "head"]].to_numpy()}
    prev = detected(frame, "previous_token", 0.5)
    assert prev and {l for l, _ in prev} == {0} and top("previous_token", len(prev)) == prev
    induction = detected(frame, "induction", 0.3)  # ~0.5 is perfect on [BOS] r r (mul score)
    assert induction and {l for l, _ in induction} == {1}
    assert top("induction", len(induction)) == induction == top("prefix_matching", len(induction))
    assert _grid(frame, "induction", induction_model)[0].max() < 0.1
    assert min(_grid(frame, "prefix_matching", induction_model)[l, h] for l, h in induction) > 0.7
    copying = heads.copying_scores(induction_model).set_index(["layer", "head"])["score"]
    assert all(copying[h] > 0.9 for h in induction)  # induction heads copy what they attend to


def test_prefix_matching_sink_and_custom_match_brute_force():
    model = interp.load(dict(d_model=32, d_head=8, n_layers=2, n_heads=4, n_ctx=32, d_vocab=20, attn_only=True))
    tokens = torch.randint(1, 20, (3, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    _, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
    frame = heads.scores(
        model,
        tokens,
        patterns={
            "prev": get_previous_token_head_detection_pattern,
            "bos": lambda t: torch.zeros(len(t), len(t)).index_fill_(1, torch.tensor([0]), 1),
        },
        batch_size=2,
    )
    prefix = torch.zeros(2, 4, dtype=torch.float64)
    sink = torch.zeros(2, 4, dtype=torch.float64)
    for l in range(2):
        A = cache[f"blocks.{l}.attn.hook_pattern"].double()
        for b in range(3):
            rows = []
            for q in range(24):
                targets = [k + 1 for k in range(q) if tokens[b, k] == tokens[b, q]]
                if targets:
                    rows.append(A[b, :, q, targets].sum(-1))
            prefix[l] += torch.stack(rows).mean(0) / 3
            sink[l] += A[b, :, 1:, 0].mean(-1) / 3
    torch.testing.assert_close(_grid(frame, "prefix_matching", model), prefix, atol=1e-6, rtol=0)
    torch.testing.assert_close(_grid(frame, "sink", model), sink, atol=1e-6, rtol=0)
    torch.testing.assert_close(_grid(frame, "prev", model), _grid(frame, "previous_token", model), atol=1e-6, rtol=0)
    # the bos pattern counts row 0 as well (mul score over all rows), unlike sink
    bos = _grid(frame, "bos", model)
    torch.testing.assert_close(bos, (sink * 23 + 1) / 24, atol=1e-6, rtol=0)


def test_bad_input(induction_model):
    with pytest.raises(ValueError, match="valid kinds"):
        heads.scores(induction_model, kinds=["inductoin"])
    with pytest.raises(ValueError, match="prefix_matching needs repeated tokens"):
        heads.scores(induction_model, torch.arange(20)[None], ["prefix_matching"])
    with pytest.raises(ValueError, match="at least 2 positions"):
        heads.scores(induction_model, torch.tensor([[0]]), ["sink"])
    with pytest.raises(ValueError, match="not lower triangular"):
        heads.scores(
            induction_model, torch.arange(6)[None], ["future"], patterns={"future": lambda t: torch.ones(6, 6)}
        )
    with pytest.raises(ValueError, match="longer than the model's context"):
        heads.scores(induction_model, torch.zeros(1, 65, dtype=torch.long))
    rnn = interp.load(dict(cell="lstm", d_vocab=7, d_model=8, n_layers=1, n_ctx=16))
    for call in (lambda: heads.scores(rnn), lambda: heads.copying_scores(rnn), lambda: heads.composition_scores(rnn)):
        with pytest.raises(ValueError, match="needs attention heads.*residual-stream"):
            call()
    with pytest.raises(ValueError, match="valid"):
        heads.composition_scores(induction_model, ["X"])


def test_copying_equals_full_ov_eigenvalues(induction_model):
    b = induction_model.module
    W_E, W_V, W_O, W_U = (w.detach().double() for w in (b.W_E, b.W_V, b.W_O, b.W_U))
    full = W_E @ W_V @ W_O @ W_U  # [L, H, d_vocab, d_vocab]
    lam = torch.linalg.eigvals(full)
    expected = lam.real.sum(-1) / lam.abs().sum(-1)
    ours = heads.copying_scores(induction_model, fold_ln=False)
    torch.testing.assert_close(torch.tensor(ours["score"].to_numpy()).view(2, 4), expected, atol=1e-6, rtol=0)


def test_composition_equals_transformer_lens_and_finds_k_composition(induction_model, hf_gpt2):
    for model in (induction_model, hf_gpt2):
        ours = heads.composition_scores(model, fold_ln=False)
        for kind in "QKV":
            ref = model.module.all_composition_scores(kind).scores.detach().double()
            sub = ours[ours.kind == kind]
            got = torch.zeros_like(ref)
            got[
                sub.src_layer.to_numpy(), sub.src_head.to_numpy(), sub.dst_layer.to_numpy(), sub.dst_head.to_numpy()
            ] = torch.tensor(sub.score.to_numpy())
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    comp = heads.composition_scores(induction_model)
    frame = heads.scores(induction_model, heads.default_tokens(induction_model, n=8), ["previous_token", "induction"])
    prev = detected(frame, "previous_token", 0.5)
    assert {l for l, _ in prev} == {0}
    for layer, head in detected(frame, "induction", 0.3):
        # each induction head's strongest composition of any kind: K from a previous-token head
        best = comp[(comp.dst_layer == layer) & (comp.dst_head == head)].sort_values("score").iloc[-1]
        assert best.kind == "K" and (best.src_layer, best.src_head) in prev


def test_icl_and_loss_by_position(induction_model):
    tokens = heads.default_tokens(induction_model, n=8)
    frame = heads.loss_by_position(induction_model, tokens)
    assert list(frame.columns) == ["pos", "loss", "sem", "n"] and len(frame) == 63
    assert heads.icl_score(induction_model, tokens) < -2.5  # ~4.1 nats early, ~0 in the repeat
    with pytest.raises(ValueError, match="before"):
        heads.icl_score(induction_model, tokens, early=40, late=10)


def test_cli_and_plots(induction_model, tmp_path):
    from typer.testing import CliRunner

    from apps.cli import app

    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(
        app, ["heads", "induction-2l", "--kinds", "induction,previous_token", "--out", str(out), "--sequences", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "induction" in res.output and "previous_token" in res.output
    assert set(pd.read_csv(out)["kind"]) == {"induction", "previous_token"}
    bad = CliRunner().invoke(app, ["heads", "induction-2l", "--kinds", "nope"])
    assert bad.exit_code == 2 and "valid kinds" in bad.output

    frame = heads.scores(induction_model, heads.default_tokens(induction_model, n=2))
    fig = plots.head_heatmap(frame)
    assert len(fig.data) == len(heads.KINDS)
    assert fig.data[0].z.shape == (2, 4)
    assert len(plots.composition_heatmap(heads.composition_scores(induction_model), "K").data) == 1
    assert (
        len(
            plots.loss_by_position_plot(
                heads.loss_by_position(induction_model, heads.default_tokens(induction_model))
            ).data
        )
        == 2
    )
    with pytest.raises(ValueError, match="missing"):
        plots.head_heatmap(frame.drop(columns="score"))
