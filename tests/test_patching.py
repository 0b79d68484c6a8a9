"""Exact activation patching: agreement with TransformerLens, the engines, corruptions, metrics,
errors, recurrent models, and the known circuits of the zoo models."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching as tlp

import interp
from circuits import corrupt, metrics, patching
from interp import heads, runs, tasks


@pytest.fixture(scope="module")
def small():
    """A random 2-layer transformer with MLPs, 2 prompts of 6 tokens and a corrupt version."""
    torch.manual_seed(0)
    model = interp.load(
        dict(
            d_model=32,
            d_head=8,
            n_layers=2,
            n_heads=2,
            d_mlp=64,
            n_ctx=16,
            d_vocab=50,
            normalization_type="LN",
            act_fn="gelu",
        ),
        name="small",
    )
    clean = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    corrupted = corrupt.replace_tokens(clean, [1, 3], d_vocab=50, seed=1)
    return model, clean, corrupted


TL_SWEEPS = [  # our (site, by) -> TransformerLens preset and the axis order of its result
    ("z", "layer,pos,head", tlp.get_act_patch_attn_head_out_by_pos, ("layer", "pos", "head")),
    ("q", "layer,pos,head", tlp.get_act_patch_attn_head_q_by_pos, ("layer", "pos", "head")),
    ("k", "layer,pos,head", tlp.get_act_patch_attn_head_k_by_pos, ("layer", "pos", "head")),
    ("v", "layer,pos,head", tlp.get_act_patch_attn_head_v_by_pos, ("layer", "pos", "head")),
    ("z", "layer,head", tlp.get_act_patch_attn_head_out_all_pos, ("layer", "head")),
    ("q", "layer,head", tlp.get_act_patch_attn_head_q_all_pos, ("layer", "head")),
    ("k", "layer,head", tlp.get_act_patch_attn_head_k_all_pos, ("layer", "head")),
    ("v", "layer,head", tlp.get_act_patch_attn_head_v_all_pos, ("layer", "head")),
    ("pattern", "layer,head,pos", tlp.get_act_patch_attn_head_pattern_by_pos, ("layer", "head", "pos")),
    ("pattern", "layer,head", tlp.get_act_patch_attn_head_pattern_all_pos, ("layer", "head")),
    (
        "pattern",
        "layer,head,pos,src_pos",
        tlp.get_act_patch_attn_head_pattern_dest_src_pos,
        ("layer", "head", "pos", "src_pos"),
    ),
    ("resid_pre", "layer,pos", tlp.get_act_patch_resid_pre, ("layer", "pos")),
    # TL 4.x's resid_mid hook on the bridge feeds only the MLP: our mlp_in
    ("mlp_in", "layer,pos", tlp.get_act_patch_resid_mid, ("layer", "pos")),
    ("attn_out", "layer,pos", tlp.get_act_patch_attn_out, ("layer", "pos")),
    ("mlp_out", "layer,pos", tlp.get_act_patch_mlp_out, ("layer", "pos")),
]


def test_equals_transformer_lens_for_every_shared_site(small):
    model, clean, corrupted = small
    metric = metrics.logit_diff(answer=[3, 5], wrong=[7, 9], pos=-1)
    _, clean_cache = model.module.run_with_cache(clean)
    for site, by, preset, axes in TL_SWEEPS:
        ref = preset(model.module, corrupted, clean_cache, lambda logits: metric(logits))
        for engine in ("native", "hooks"):
            r = runs.run(
                patching.patch, model, clean, corrupted, site=site, by=by, metric=metric, engine=engine, progress=False
            )
            df = r.frame
            assert r.meta["engine"] == engine
            idx = tuple(torch.tensor(df[a].values) for a in axes)
            got = torch.tensor(df["value"].values, dtype=ref.dtype)
            assert (ref[idx] - got).abs().max() < 1e-4, (site, by, engine)
            if "src_pos" in axes:  # we skip src > dest (masked: no effect); TL's values there are the baseline
                assert len(df) < ref.numel()


def test_engines_agree_on_windows_directions_and_label_metrics(small):
    model, clean, corrupted = small
    labels = torch.full(clean.shape, tasks.IGNORE)
    labels[0, 2], labels[0, 4], labels[1, 3] = 5, 6, 8
    for metric in (metrics.from_labels(labels), metrics.kl(model(clean), pos=[3, 5])):
        for site, by in (("resid_mid", "layer,pos"), ("resid_post", "layer,pos"), ("z", "layer,pos,head")):
            for direction in ("denoise", "noise"):
                a, b = (
                    patching.patch(
                        model,
                        clean,
                        corrupted,
                        site=site,
                        by=by,
                        metric=metric,
                        engine=e,
                        window=2,
                        direction=direction,
                        progress=False,
                    )
                    for e in ("native", "hooks")
                )
                assert (a["value"] - b["value"]).abs().max() < 1e-4
                assert set(a["window"]) == {1, 2} and set(a.loc[a.window == 2, "layers"]) == {"0-1"}


def test_resid_mid_patches_the_whole_stream(small):
    """In the last layer, patching resid_mid at a position carries the MLP along, so it equals
    patching resid_post there; mlp_in (TL's resid_mid) changes only the MLP's input."""
    model, clean, corrupted = small
    kw = dict(by="layer,pos", metric=metrics.logprob(4, pos=-1), layers=[1], progress=False)
    mid = patching.patch(model, clean, corrupted, site="resid_mid", **kw)
    post = patching.patch(model, clean, corrupted, site="resid_post", **kw)
    mlp_in = patching.patch(model, clean, corrupted, site="mlp_in", **kw)
    assert (mid["value"] - post["value"]).abs().max() < 1e-4
    assert (mid["value"] - mlp_in["value"]).abs().max() > 1e-3


def test_frame_columns_and_normalisation(small):
    model, clean, corrupted = small
    r = runs.run(patching.patch, model, clean, corrupted, site="z", metric="logprob", progress=False)
    df, a = r.frame, r.meta
    assert list(df.columns) == ["layer", "pos", "head", "value", "effect", "normalised"]
    assert len(df) == 2 * 6 * 2
    assert df["effect"].sub(df["value"] - a["corrupt_value"]).abs().max() < 1e-9
    assert (
        df["normalised"].sub((df["value"] - a["corrupt_value"]) / (a["clean_value"] - a["corrupt_value"])).abs().max()
        < 1e-9
    )
    # positions 0 (never corrupted) give exactly the baseline: no forward was needed
    assert (df.loc[df.pos == 0, "effect"] == 0).all() and a["cells_run"] < len(df)
    # active Model.hooks() (steering, ablation) compose with patching: the hook engine runs them
    with model.hooks([("blocks.0.hook_attn_out", lambda x, hook: x * 0.5)]):
        steered = runs.run(patching.patch, model, clean, corrupted, site="z", metric="logprob", progress=False)
    assert steered.meta["engine"] == "hooks" and (steered.frame["value"] - df["value"]).abs().max() > 1e-3
    # patching every layer's resid_pre at every position restores the clean run
    full = patching.patch(
        model, clean, corrupted, site="resid_pre", by="layer", metric="logprob", layers=[0], progress=False
    )
    assert full["normalised"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_gaussian_noise_corruption(small):
    model, clean, _ = small
    noisy = corrupt.gaussian_noise(model, clean, [1, 2], n_samples=3, seed=0)
    assert noisy.tokens.shape == (6, 6) and noisy.repeat == 3
    metric = metrics.logprob([4, 7], pos=-1)
    ra, rb = (
        runs.run(
            patching.patch,
            model,
            clean,
            noisy,
            site="resid_pre",
            by="layer,pos",
            metric=metric,
            engine=e,
            progress=False,
        )
        for e in ("native", "hooks")
    )
    a, b = ra.frame, rb.frame
    assert (a["value"] - b["value"]).abs().max() < 1e-4
    assert ra.meta["clean_value"] != ra.meta["corrupt_value"]
    # restoring the residual at layer 0 (every position, so both noised embeddings) removes the noise exactly
    whole = patching.patch(model, clean, noisy, site="resid_pre", by="layer", metric=metric, layers=[0], progress=False)
    assert whole["normalised"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    # restoring an unnoised position changes nothing
    restored = a[(a.layer == 0)].set_index("pos")["normalised"]
    assert restored.loc[[0, 3]].abs().max() < 1e-6


def test_bad_input_errors(small):
    model, clean, corrupted = small
    with pytest.raises(ValueError, match="aligned position by position"):
        patching.patch(model, clean, corrupted[:, :5], progress=False)
    with pytest.raises(ValueError, match="needs answer tokens"):
        patching.patch(model, clean, corrupted, metric=metrics.Metric("logprob", torch.tensor([[-1]])), progress=False)
    with pytest.raises(ValueError, match="wrong tokens"):
        metrics.logit_diff(3, None)
    with pytest.raises(ValueError, match=r"window 3 runs past the last layer.*valid windows 1\.\.2"):
        patching.patch(model, clean, corrupted, window=3, progress=False)
    with pytest.raises(ValueError, match="valid sites"):
        patching.patch(model, clean, corrupted, site="hook_result", progress=False)
    with pytest.raises(ValueError, match="valid axes"):
        patching.patch(model, clean, corrupted, site="resid_pre", by="layer,head", progress=False)
    with pytest.raises(ValueError, match="direction must be one of"):
        patching.patch(model, clean, corrupted, direction="sideways", progress=False)
    with pytest.raises(ValueError, match=r"answer tokens must be in the vocabulary \[0, 50\)"):
        patching.patch(model, clean, corrupted, metric=metrics.prob(77), progress=False)
    rnn = interp.load(dict(cell="gru", d_vocab=11, d_model=8, n_layers=2, n_ctx=16))
    toks = torch.randint(0, 11, (1, 5))
    with pytest.raises(ValueError, match=r"without attention heads\); valid sites: \[.*'hidden'"):
        patching.patch(rnn, toks, corrupt.replace_tokens(toks, [1], d_vocab=11), site="z", progress=False)


@pytest.mark.parametrize(
    "cell,site",
    [
        ("lstm", "hidden"),
        ("lstm", "cell"),
        ("lstm", "output_gate"),
        ("lstm", "forget_gate"),
        ("gru", "hidden"),
        ("gru", "update_gate"),
        ("ssm", "state"),
        ("ssm", "gate"),
    ],
)
def test_recurrent_hidden_state_patching(cell, site):
    """Per-layer, per-step patching of RNN / SSM states and gates: one cell checked against a hand-made hook,
    and a patch at step t leaves every earlier metric position untouched."""
    model = interp.load(dict(cell=cell, d_vocab=13, d_model=12, n_layers=2, n_ctx=16, d_state=4, seed=1))
    clean = torch.randint(0, 13, (3, 7), generator=torch.Generator().manual_seed(2))
    corrupted = corrupt.replace_tokens(clean, [2], d_vocab=13, seed=3)
    metric = metrics.logprob([1, 2, 3], pos=-1)
    r = runs.run(patching.patch, model, clean, corrupted, site=site, by="layer,pos", metric=metric, progress=False)
    df = r.frame
    assert r.meta["engine"] == "hooks" and len(df) == 2 * 7
    name = f"blocks.1.hook_{site}"
    _, cache = model.run_with_cache(clean, names=[name])

    def put(x, hook):
        x = x.clone()
        x[:, 4] = cache[name][:, 4]
        return x

    want = float(metric(model.run_with_hooks(corrupted, [(name, put)])))
    got = df.set_index(["layer", "pos"]).loc[(1, 4), "value"]
    assert got == pytest.approx(want, abs=1e-5)
    early = patching.patch(
        model, clean, corrupted, site=site, by="layer,pos", metric=metrics.logprob([1, 2, 3], pos=1), progress=False
    )
    assert (early.loc[early.pos >= 2, "effect"] == 0).all()  # after the read position: no effect
    assert (early.loc[early.pos < 2, "effect"] == 0).all()  # before the corrupted token: same values


def test_induction_heads_carry_the_effect(induction_model):
    """[BOS] r r with the second copy re-randomised: patching the clean head outputs back at the
    last position, the two induction heads there carry the effect, in both directions.  The
    corruption leaves the first copy, where the previous-token heads prepare the keys, intact,
    and those heads are redundant: no single layer-0 cell matters."""
    m = induction_model
    batch = tasks.repeated_tokens(16, d_vocab=64, n_ctx=33, period=16, seed=1)
    clean = batch.tokens
    corrupted = corrupt.replace_tokens(clean, range(17, 33), d_vocab=64, low=1, seed=2)
    metric = metrics.logprob(clean[:, 32], pos=31)
    frame = heads.scores(m, heads.default_tokens(m, n=8), ["induction"])
    induction = {(int(l), int(h)) for l, h in frame[frame.score > 0.3][["layer", "head"]].to_numpy()}
    assert len(induction) == 2
    den = patching.patch(m, clean, corrupted, site="z", metric=metric, progress=False)
    top = den.reindex(den["effect"].abs().sort_values(ascending=False).index).head(2)
    assert {(l, h) for l, h in zip(top.layer, top["head"])} == induction and (top.pos == 31).all()
    assert (top["normalised"] > 0.5).all()
    noi = patching.patch(m, clean, corrupted, site="z", metric=metric, direction="noise", progress=False)
    worst = noi.sort_values("effect").head(2)
    assert {(l, h) for l, h in zip(worst.layer, worst["head"])} == induction and (worst["normalised"] < 0.8).all()
    assert (den[den.layer == 0]["normalised"].abs() < 0.1).all() and (noi[noi.layer == 0]["normalised"] > 0.9).all()


def test_recall_retrieval_head_and_key_position(recall_model):
    """Associative recall with the queried key replaced in the context: the retrieval heads at the
    query carry the effect, and in layer 0 the residual at the key position does."""
    m = recall_model
    b = tasks.associative_recall(32, n_pairs=4, d_vocab=128, seed=5)
    clean, last = b.tokens, int(b.info["query_pos"][0, -1])
    key_pos = b.info["value_pos"][:, -1] - 1
    corrupted = corrupt.recall_key_swap(b, d_vocab=128)
    metric = metrics.logprob(b.info["answer"][:, -1], pos=last)
    _, cache = m.run_with_cache(clean, names=["blocks.1.attn.hook_pattern"])
    to_value = cache["blocks.1.attn.hook_pattern"][torch.arange(len(clean)), :, last, key_pos + 1].mean(0)
    retrieval = int(to_value.argmax())
    heads = patching.patch(m, clean, corrupted, site="z", metric=metric, progress=False)
    best = heads.loc[heads["normalised"].idxmax()]
    assert (best["layer"], best["pos"]) == (1, last) and best["normalised"] > 0.3
    assert heads.set_index(["layer", "pos", "head"]).loc[(1, last, retrieval), "normalised"] > 0.3
    # the key's position: one sequence at a time, since the key sits at different positions
    for i in range(4):
        row = patching.patch(
            m,
            clean[i : i + 1],
            corrupted[i : i + 1],
            site="resid_pre",
            by="layer,pos",
            metric=metrics.logprob(b.info["answer"][i, -1], pos=last),
            layers=[0],
            progress=False,
        )
        assert int(row.loc[row["normalised"].idxmax(), "pos"]) == int(key_pos[i])


@pytest.mark.parametrize("name", ["recall-gru", "recall-ssm"])
def test_recurrent_recall_hidden_state_carries_the_association(name):
    """Recall with the queried value replaced: patching the clean state back at time step t
    restores the answer exactly when t is at or after the value's step (the state carries the
    key-value association from then on); the SSM's short convolution still holds the corrupt
    value for d_conv - 1 more steps, and its per-step output y matters only at the query."""
    from interp.zoo.recipes import RNN_RECALL

    m = interp.load(name)
    b = tasks.associative_recall(256, seed=7, **RNN_RECALL)
    q = b.info["query_pos"][0]
    keep = (b.info["value_pos"][:, -1] == 2) & (b.tokens[:, q[0]] != b.tokens[:, q[-1]])
    clean, ans = b.tokens[keep][:24], b.info["answer"][keep][:24, -1]
    other = 10 + (ans - 10 + torch.randint(1, 10, ans.shape, generator=torch.Generator().manual_seed(1))) % 10
    corrupted = clean.clone()
    corrupted[:, 2] = other
    metric = metrics.logit_diff(ans, other, pos=int(q[-1]))
    site = "hidden" if name == "recall-gru" else "state"
    r = runs.run(patching.patch, m, clean, corrupted, site=site, by="layer,pos", metric=metric, progress=False)
    df = r.frame
    assert r.meta["clean_value"] > 5 > 0 > r.meta["corrupt_value"]
    norm = df.set_index("pos")["normalised"]
    assert (norm.loc[:1] == 0).all()
    settled = 2 if name == "recall-gru" else 2 + m.module.cfg.d_conv - 1
    assert (norm.loc[settled:] > 0.95).all()
    if name == "recall-ssm":
        assert norm.loc[2] < 0.5
        y = patching.patch(m, clean, corrupted, site="hidden", by="layer,pos", metric=metric, progress=False)
        y = y.set_index("pos")["normalised"]
        assert y.iloc[-1] > 0.95 and (y.iloc[:-1].abs() < 0.05).all()


def test_flipflop_lstm_keeps_the_bit_in_the_cell_state():
    """flipflop-lstm: between the write and the read the bit lives in the cell state c, and
    the hidden state h only matters at the read (denoising one step of one state)."""
    model = interp.load("flipflop-lstm")
    clean = [
        "BOS W1 IGN IGN W0 IGN IGN IGN IGN IGN READ",
        "BOS W0 IGN IGN W1 IGN IGN IGN IGN IGN READ",
        "BOS W0 IGN W1 W0 IGN READ IGN IGN IGN READ",
        "BOS W1 IGN W0 W1 IGN READ IGN IGN IGN READ",
    ]
    corrupted = [
        "BOS W1 IGN IGN W1 IGN IGN IGN IGN IGN READ",
        "BOS W0 IGN IGN W0 IGN IGN IGN IGN IGN READ",
        "BOS W0 IGN W1 W1 IGN READ IGN IGN IGN READ",
        "BOS W1 IGN W0 W0 IGN READ IGN IGN IGN READ",
    ]
    write, read = 4, 10
    frames = {
        site: patching.patch(
            model, clean, corrupted, site=site, by="pos", metric="logit_diff", progress=False
        ).set_index("pos")["normalised"]
        for site in ("hidden", "cell")
    }
    cell, hidden = frames["cell"], frames["hidden"]
    assert cell.loc[write:].min() > 0.9
    assert hidden.loc[write : read - 1].max() < cell.loc[write : read - 1].min()
    assert hidden.loc[read] > 0.99
