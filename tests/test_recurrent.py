"""Tests of interp.recurrent: hooked LSTM / GRU / selective-SSM models unrolled per step."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from interp.gradients import site_gradients
from interp.recurrent import SITE_KINDS, HookedRecurrent, RecurrentConfig
from interp.recurrent.rnn import GRUBlock, LSTMBlock, _GRUScan, _LSTMScan
from interp.recurrent.ssm import _SSMScan

CELLS = ("lstm", "gru", "ssm")


STATE_SITE = {"lstm": "hook_hidden", "gru": "hook_hidden", "ssm": "hook_state"}


def make(cell: str, n_layers: int = 1, d_model: int = 16, d_vocab: int = 13, **kw) -> HookedRecurrent:
    cfg = RecurrentConfig(cell=cell, d_vocab=d_vocab, d_model=d_model, n_layers=n_layers, d_state=4, **kw)
    return HookedRecurrent(cfg).eval()


def tokens(seed: int, batch: int = 3, pos: int = 10, d_vocab: int = 13) -> torch.Tensor:
    return torch.randint(0, d_vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


# --- config and names -------------------------------------------------------------------
def test_config_round_trip_and_validation():
    cfg = RecurrentConfig(cell="ssm", d_vocab=20, d_model=8, n_layers=2, d_state=4, seed=3)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert RecurrentConfig.from_dict(d) == cfg
    assert cfg.family == "ssm" and RecurrentConfig(cell="gru", d_vocab=4, d_model=4).family == "rnn"
    with pytest.raises(ValueError):
        RecurrentConfig(cell="rnn", d_vocab=4, d_model=4)
    with pytest.raises(ValueError):
        RecurrentConfig(cell="lstm", d_vocab=4, d_model=0)
    with pytest.raises(ValueError):
        RecurrentConfig.from_dict({**d, "n_heads": 2})


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = make("gru", seed=5), make("gru", seed=5)
    assert torch.equal(torch.rand(1), before)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("cell", CELLS)
def test_site_names(cell):
    model = make(cell, n_layers=2)
    names = model.site_names()
    steps = []
    with torch.no_grad():
        model.run_with_hooks(
            tokens(0, pos=4),
            fwd_hooks=[(lambda n: n.startswith("blocks.0."), lambda x, hook: steps.append((hook.name, hook.step)))],
        )
    assert [s for n, s in steps if n == f"blocks.0.{STATE_SITE[cell]}"] == [0, 1, 2, 3]
    assert [s for n, s in steps if n == "blocks.0.hook_resid_pre"] == [None]
    assert all(hp.step is None for hp in model.hook_dict.values())
    assert set(names) == set(model.hook_dict)
    assert set(names.values()) <= set(SITE_KINDS)
    assert set(model.recurrent_sites) <= set(names)
    assert f"blocks.1.{STATE_SITE[cell]}" in model.recurrent_sites
    assert "blocks.0.hook_resid_pre" not in model.recurrent_sites
    expected = {"lstm": 6, "gru": 4, "ssm": 1}[cell]
    assert len(model.recurrent_sites) == 2 * expected
    # the names a filter-hooked forward reports are exactly the sites, once each step
    seen: list[str] = []
    with torch.no_grad():
        model.run_with_hooks(tokens(0, pos=5), fwd_hooks=[(lambda n: True, lambda x, hook: seen.append(hook.name))])
    for name in names:
        assert seen.count(name) == (5 if name in model.recurrent_sites else 1), name


# --- hooks change nothing unless they edit -----------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("grad", [False, True])
def test_noop_hooks_bit_identical(cell, grad):
    model = make(cell, n_layers=2)
    tok = tokens(1)
    with torch.set_grad_enabled(grad):
        ref = model(tok)
        for name in model.hook_dict:
            out = model.run_with_hooks(tok, fwd_hooks=[(name, lambda x, hook: None)])
            assert torch.equal(out, ref), name
            out = model.run_with_hooks(tok, fwd_hooks=[(name, lambda x, hook: x.clone())])
            assert torch.equal(out, ref), name
        out = model.run_with_hooks(tok, fwd_hooks=[(lambda n: True, lambda x, hook: x)])
        assert torch.equal(out, ref)
        _, cache = model.run_with_cache(tok)
        assert torch.equal(_, ref)


@pytest.mark.parametrize("cell", CELLS)
def test_edits_to_other_positions_are_ignored(cell):
    """At step t a hook may scribble on positions != t; the model must not see it."""
    model = make(cell)
    tok = tokens(2)
    site = f"blocks.0.{STATE_SITE[cell]}"
    ref = model(tok)

    def scribble(x, hook):
        t = hook.ctx.get("t", 0)
        hook.ctx["t"] = t + 1
        if t > 0:
            x[:, t - 1] = 100.0
        if t + 1 < x.shape[1]:
            x[:, t + 1] = -100.0
        return x

    _, plain = model.run_with_cache(tok, names_filter=site)
    for grad in (False, True):
        for copy in (False, True):
            fn = (lambda x, hook: scribble(x.clone(), hook)) if copy else scribble
            if grad and not copy:  # in-place edits of an autograd-tracked tensor: only on a copy
                continue
            model.hook_dict[site].ctx.clear()
            with torch.set_grad_enabled(grad), model.hooks(fwd_hooks=[(site, fn)]):
                out, cache = model.run_with_cache(tok, names_filter=site)
            assert torch.equal(out, ref)
            # a hook after the scribbler sees the contract restored
            assert torch.equal(cache[site], plain[site])
    model.hook_dict[site].ctx.clear()


@pytest.mark.parametrize("cell", CELLS)
def test_bad_hook_return_raises(cell):
    model = make(cell)
    site = f"blocks.0.{STATE_SITE[cell]}"
    with pytest.raises(ValueError, match="per-step site"):
        model.run_with_hooks(tokens(0), fwd_hooks=[(site, lambda x, hook: x[:, :2])])


# --- caches are the full sequence and match an independent implementation ----------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_cache_matches_torch_modules(cell):
    model = make(cell)
    tok = tokens(3)
    blk = model.blocks[0]
    d = model.cfg.d_model
    ref = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(d, d, batch_first=True)
    with torch.no_grad():
        for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
            getattr(ref, name.replace("W", "weight").replace("b_", "bias_") + "_l0").copy_(getattr(blk, name))
        emb = model.embed(tok)
        want, state = ref(emb)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                _, cache = model.run_with_cache(tok)
            hidden = cache["blocks.0.hook_hidden"]
            assert hidden.shape == (3, 10, d)
            torch.testing.assert_close(hidden, want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(cache["blocks.0.hook_resid_post"], want, atol=1e-5, rtol=1e-5)
            if cell == "lstm":
                torch.testing.assert_close(cache["blocks.0.hook_cell"][:, -1], state[1][0], atol=1e-5, rtol=1e-5)
                # the gates reproduce the cell: c_t = f c_{t-1} + i g
                c = cache["blocks.0.hook_cell"]
                c_prev = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], 1)
                recon = cache["blocks.0.hook_forget_gate"] * c_prev + (
                    cache["blocks.0.hook_input_gate"] * cache["blocks.0.hook_cell_candidate"]
                )
                torch.testing.assert_close(recon, c)


def _reference_ssm_states(block, resid):
    """An independent implementation of the ssm scan (einsum, Python loop over steps)."""
    T = resid.shape[1]
    u, z = block.in_proj(block.norm(resid)).chunk(2, -1)
    u = F.conv1d(u.transpose(1, 2), block.conv_weight, block.conv_bias, padding=block.d_conv - 1, groups=u.shape[-1])[
        ..., :T
    ].transpose(1, 2)
    u = F.silu(u)
    dt, Bm, Cm = block.x_proj(u).split([block.dt_rank, block.d_state, block.d_state], -1)
    delta = F.softplus(block.dt_proj(dt))
    A = -torch.exp(block.A_log)
    h = torch.zeros(resid.shape[0], u.shape[-1], block.d_state)
    states, ys = [], []
    for t in range(T):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * u[:, t, :, None] * Bm[:, t, None, :]
        states.append(h)
        ys.append(torch.einsum("ben,bn->be", h, Cm[:, t]) + block.D * u[:, t])
    return torch.stack(states, 1), torch.stack(ys, 1)


def test_ssm_cache_matches_reference_loop():
    model = make("ssm", n_layers=2)
    tok = tokens(4)
    with torch.no_grad():
        _, cache = model.run_with_cache(tok)
        for layer in range(2):
            want_states, want_y = _reference_ssm_states(model.blocks[layer], cache[f"blocks.{layer}.hook_resid_pre"])
            states = cache[f"blocks.{layer}.hook_state"]
            assert states.shape == (3, 10, model.cfg.d_inner, 4)
            torch.testing.assert_close(states, want_states, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(cache[f"blocks.{layer}.hook_hidden"], want_y, atol=1e-5, rtol=1e-4)
    with torch.enable_grad():
        _, cache_g = model.run_with_cache(tok)
    for name in cache:
        assert torch.equal(cache_g[name], cache[name]), name


@pytest.mark.parametrize("cell", CELLS)
def test_cache_is_full_sequence_and_stable(cell):
    model = make(cell)
    tok = tokens(5)
    site = f"blocks.0.{STATE_SITE[cell]}"
    with torch.no_grad():
        _, c1 = model.run_with_cache(tok, names_filter=site)
        _, c2 = model.run_with_cache(tok, names_filter=site)  # a new run does not disturb c1
    assert torch.equal(c1[site], c2[site])
    assert c1[site].shape[:2] == (3, 10)
    assert all(c1[site][:, t].abs().sum() > 0 for t in range(10))


# --- patching a recurrent state at step t ------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("grad", [False, True])
def test_patch_state_at_step_is_causal(cell, n_layers, grad):
    model = make(cell, n_layers=n_layers)
    clean, corrupt = tokens(6), tokens(7)
    site = f"blocks.0.{STATE_SITE[cell]}"
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=site)
    src = cache[site]
    with torch.set_grad_enabled(grad):
        base = model(corrupt)
        for t0 in (0, 4, 9):

            def patch_inplace(x, hook, t0=t0):
                x[:, t0] = src[:, t0]

            def patch_copy(x, hook, t0=t0):
                y = x.clone()
                y[:, t0] = src[:, t0]
                return y

            def patch_at_step(x, hook, t0=t0):
                if hook.step == t0:
                    x[:, t0] = src[:, t0]

            outs = []
            for fn in [patch_copy] if grad else [patch_inplace, patch_copy, patch_at_step]:
                out = model.run_with_hooks(corrupt, fwd_hooks=[(site, fn)])
                assert torch.equal(out[:, :t0], base[:, :t0])
                assert not torch.allclose(out[:, t0], base[:, t0])
                outs.append(out)
            assert all(torch.equal(o, outs[0]) for o in outs)


@pytest.mark.parametrize("cell", CELLS)
def test_patched_state_propagates_and_cache_shows_it(cell):
    model = make(cell)
    clean, corrupt = tokens(8), tokens(9)
    site = f"blocks.0.{STATE_SITE[cell]}"
    _, cache = model.run_with_cache(clean, names_filter=site)
    t0 = 3

    def patch(x, hook):
        x[:, t0] = cache[site][:, t0]

    with torch.no_grad():
        _, base = model.run_with_cache(corrupt, names_filter=site)
        with model.hooks(fwd_hooks=[(site, patch)]):
            _, patched = model.run_with_cache(corrupt, names_filter=site)
    p, b = patched[site], base[site]
    assert torch.equal(p[:, :t0], b[:, :t0])
    assert torch.equal(p[:, t0], cache[site][:, t0])
    assert not torch.allclose(p[:, t0 + 1], b[:, t0 + 1])
    # patching every step with the clean states reproduces the clean run exactly
    with torch.no_grad():
        full = model.run_with_hooks(corrupt, fwd_hooks=[(site, lambda x, hook: cache[site])])
    if cell != "ssm":  # the ssm's output also reads u from the (corrupt) input directly
        assert torch.equal(full, model(clean))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_steering_hook_adds_at_every_step(cell):
    model = make(cell)
    tok = tokens(10)
    site = "blocks.0.hook_hidden"
    v = torch.randn(model.cfg.d_model) * 0.1
    outs = []
    for grad in (False, True):
        with torch.set_grad_enabled(grad), model.hooks(fwd_hooks=[(site, lambda x, hook: x + v)]):
            _, c = model.run_with_cache(tok, names_filter=site)
        outs.append(c[site])
    assert torch.equal(outs[0], outs[1])
    # the cached (steered) hidden at step t is the unsteered step function of the steered h_{t-1}, plus v
    _, plain = model.run_with_cache(tok, names_filter=site)
    assert torch.allclose(outs[0][:, 0], plain[site][:, 0] + v)
    assert not torch.allclose(outs[0][:, 5], plain[site][:, 5] + v)


# --- gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_fast_path_gradients_match_hooked_autograd(cell):
    model = make(cell, n_layers=2, d_model=8).double()
    tok = tokens(11, pos=7)
    model.zero_grad()
    model(tok).sin().sum().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.run_with_hooks(
        tok, fwd_hooks=[(lambda n: n in model.recurrent_sites, lambda x, hook: x)]
    ).sin().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, fast[n], atol=1e-10, rtol=1e-8, msg=n)


def test_scan_functions_gradcheck():
    g = torch.Generator().manual_seed(0)
    T, B, d = 4, 2, 3

    def rnd(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.double) * scale).requires_grad_()

    assert torch.autograd.gradcheck(_LSTMScan.apply, (rnd(T, B, 4 * d), rnd(4 * d, d), rnd(4 * d)))
    assert torch.autograd.gradcheck(_GRUScan.apply, (rnd(T, B, 3 * d), rnd(3 * d, d), rnd(3 * d)))
    E, N = 3, 2
    delta = (torch.rand(T, B, E, generator=g, dtype=torch.double) * 0.5 + 0.1).requires_grad_()
    A = (-torch.rand(E, N, generator=g, dtype=torch.double) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(_SSMScan.apply, (delta, A, rnd(T, B, E), rnd(T, B, N), rnd(T, B, N)))
    assert LSTMBlock.n_gates == 4 and GRUBlock.n_gates == 3


@pytest.mark.parametrize("cell", CELLS)
def test_site_gradients_per_step_matches_finite_difference(cell):
    model = make(cell, d_model=8).double()
    tok = tokens(12, pos=6)
    site = f"blocks.0.{STATE_SITE[cell]}"
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, 0].sum()
    value, grads = site_gradients(model, tok, metric, [site, "hook_embed"])
    torch.testing.assert_close(value, metric(model(tok)).detach())
    g = grads[site]
    _, cache = model.run_with_cache(tok, names_filter=site)
    assert g.shape == cache[site].shape
    v = torch.randn(g.shape, generator=torch.Generator().manual_seed(0), dtype=torch.double)
    for t0 in (1, 4):

        def nudge(eps, t0=t0):
            def hook(x, hook):
                y = x.clone()
                y[:, t0] = y[:, t0] + eps * v[:, t0]
                return y

            with torch.no_grad():
                return metric(model.run_with_hooks(tok, fwd_hooks=[(site, hook)]))

        fd = (nudge(1e-6) - nudge(-1e-6)) / 2e-6
        torch.testing.assert_close(fd, (g[:, t0] * v[:, t0]).sum(), atol=1e-6, rtol=1e-4)
    # whole-sequence site: compare with autograd on the embedding
    emb = model.embed(tok).detach().requires_grad_()
    x = emb
    for blk in model.blocks:
        x = blk(x)
    (ge,) = torch.autograd.grad(metric(model.unembed(model.ln_final(x))), emb)
    torch.testing.assert_close(grads["hook_embed"], ge)
    assert all(p.grad is None for p in model.parameters())


# --- training smoke ---------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_training_smoke_copy_task(cell):
    """Copy the previous token: the loss must halve within 30 steps."""
    torch.manual_seed(0)
    model = HookedRecurrent(RecurrentConfig(cell=cell, d_vocab=8, d_model=32, d_state=4, seed=0)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        tok = tokens(100 + step, batch=16, pos=12, d_vocab=8)
        logits = model(tok)[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, 8), tok[:, :-1].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("cell", CELLS)
def test_safetensors_round_trip(cell, tmp_path):
    from safetensors.torch import load_file, save_file

    model = make(cell, n_layers=2)
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    cfg = RecurrentConfig.from_dict({**json.loads(json.dumps(model.cfg.to_dict())), "seed": 99})
    other = HookedRecurrent(cfg).eval()
    missing, unexpected = other.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    assert not missing and not unexpected
    tok = tokens(13)
    assert torch.equal(other(tok), model(tok))
