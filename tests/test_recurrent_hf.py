"""Recurrent and state-space families of ``transformers`` as first-class models
(:mod:`interp.recurrent.hf`, :class:`interp.backends.HFBackend`) and the generic path.

Oracles: Hugging Face's own forward and caches (logits, the state after every prefix), Mamba and
RWKV written out by hand from the model's weights (float64, independent of the library and of
HF's code), exact identities (a layer's output is its input plus its writes; patching the whole
carry at a step reproduces the source run from there on).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import circuits
import interp
from interp import interventions as I
from interp import runs
from interp.decoding import greedy
from interp.errors import InputError
from interp.gradients import site_gradients
from interp.sites import STATE_KINDS
from tests import families

T = 6  # prompt length
P = 2  # the position where a corrupt prompt differs


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """family -> (the HF model as built, the interp Model loaded from its folder); built on first use."""
    made: dict[str, tuple] = {}

    def get(family: str):
        if family not in made:
            hf, folder = families.build(family, tmp_path_factory.mktemp(family))
            made[family] = (hf, interp.load(str(folder)))
        return made[family]

    return get


def prompts(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean tokens and corrupt ones that differ at position P only."""
    clean = torch.randint(2, families.VOCAB, (batch, T), generator=torch.Generator().manual_seed(seed))
    corrupt = clean.clone()
    corrupt[:, P] = (clean[:, P] - 2 + 17) % (families.VOCAB - 2) + 2
    return clean, corrupt


def state_names(model) -> list[str]:
    return [n for n in model.site_names if n.rsplit("hook_", 1)[-1] in STATE_KINDS]


@torch.no_grad()
def stepped(model, tokens) -> torch.Tensor:
    """The unpatched run on the path a state patch takes (one token per forward): the baseline a
    patched run must equal bit for bit before the patched step."""
    return model.run_with_hooks(tokens, [(state_names(model)[0], lambda x, hook: None)])


# --- HF's own states after each prefix (read from HF's cache formats, not through the library) ---
@torch.no_grad()
def hf_states(family: str, hf, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Site name -> ``[batch, T, ...]``: HF's state after each prefix ``tokens[:, :t+1]`` (one full
    forward per prefix, HF's multi-token path)."""
    out: dict[str, list[torch.Tensor]] = {}
    for t in range(tokens.shape[1]):
        ids = tokens[:, : t + 1]
        if family == "rwkv":
            # one row at a time: HF's single-token path broadcasts rows into each other (see interp.recurrent.hf._Rows)
            rows = [hf(ids[b : b + 1], use_cache=True).state for b in range(len(ids))]
            s = [torch.cat([r[i] for r in rows]) for i in range(5)]
            for l in range(hf.config.num_hidden_layers):
                out.setdefault(f"blocks.{l}.hook_wkv_state", []).append(torch.stack([x[..., l] for x in s[2:]], 1))
                out.setdefault(f"blocks.{l}.hook_shift_state", []).append(torch.stack([s[1][..., l], s[0][..., l]], 1))
        elif family == "xlstm":
            cache = hf(ids, use_cache=True).cache
            for l, (c, n, m) in cache.rnn_state.items():
                for kind, v in (("mlstm_cell", c), ("mlstm_norm", n), ("mlstm_max", m)):
                    out.setdefault(f"blocks.{l}.hook_{kind}", []).append(v.clone())
        elif family == "recurrent_gemma":
            hf(ids, use_cache=True)
            for l, layer in enumerate(hf.model.layers):
                tb = layer.temporal_block
                if hasattr(tb, "rg_lru"):
                    out.setdefault(f"blocks.{l}.hook_lru_state", []).append(tb.rg_lru.recurrent_states.clone())
                    out.setdefault(f"blocks.{l}.hook_conv_state", []).append(tb.conv1d_state.clone())
        else:  # Mamba-1 / Mamba-2 mixers keep theirs in a transformers Cache
            cache = hf(ids, use_cache=True).cache
            for l, layer in enumerate(cache.layers):
                if getattr(layer, "recurrent_states", {}).get(0) is not None:
                    out.setdefault(f"blocks.{l}.hook_ssm_state", []).append(layer.recurrent_states[0].clone())
                    out.setdefault(f"blocks.{l}.hook_conv_state", []).append(layer.conv_states[0].clone())
    return {k: torch.stack(v, 1) for k, v in out.items()}


# --- Mamba-1 and RWKV-4 written out by hand from the weights ---------------------------------------
def _linear(x, lin):
    y = x @ lin.weight.double().T
    return y + lin.bias.double() if getattr(lin, "bias", None) is not None else y


def _rms(x, norm):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight.double()


@torch.no_grad()
def mamba_reference(hf, tokens, edit=None, record=None) -> torch.Tensor:
    """Logits of a HF Mamba-1 model (float64), one step at a time.  ``edit(l, t, h)`` returns the
    SSM state layer l carries out of step t (after y_t is read from h); ``record`` collects
    intermediate values by site name."""
    bb = hf.backbone
    x = bb.embeddings.weight.double()[tokens]
    B_, T_ = tokens.shape
    for l, layer in enumerate(bb.layers):
        mix = layer.mixer
        E, N, R, K = mix.intermediate_size, mix.ssm_state_size, mix.time_step_rank, mix.conv_kernel_size
        xz = _linear(_rms(x, layer.norm), mix.in_proj)
        xi, z = xz[..., :E], xz[..., E:]
        w = mix.conv1d.weight.double()[:, 0, :]  # [E, K]: out_t = sum_k w[k] x_{t-K+1+k}
        padded = F.pad(xi, (0, 0, K - 1, 0))
        conv = sum(w[:, k] * padded[:, k : k + T_] for k in range(K)) + mix.conv1d.bias.double()
        u = F.silu(conv)
        dbc = u @ mix.x_proj.weight.double().T
        dt, Bm, Cm = dbc[..., :R], dbc[..., R : R + N], dbc[..., R + N :]
        delta = F.softplus(dt @ mix.dt_proj.weight.double().T + mix.dt_proj.bias.double())
        A = -torch.exp(mix.A_log.double())
        h = torch.zeros(B_, E, N, dtype=torch.float64)
        ys = []
        for t in range(T_):
            h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
            ys.append((h * Cm[:, t, None, :]).sum(-1) + mix.D.double() * u[:, t])
            if edit is not None:
                h = edit(l, t, h)
        gated = torch.stack(ys, 1) * F.silu(z)
        if record is not None:
            record.update({f"blocks.{l}.hook_conv": u, f"blocks.{l}.hook_gate_pre": z, f"blocks.{l}.hook_dt": dt})
            record.update({f"blocks.{l}.hook_B": Bm, f"blocks.{l}.hook_C": Cm, f"blocks.{l}.hook_out_proj_in": gated})
        x = x + _linear(gated, mix.out_proj)
    return _linear(_rms(x, bb.norm_f), hf.lm_head)


def _ln(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)


def _shift(x):
    return F.pad(x, (0, 0, 1, 0))[:, :-1]


@torch.no_grad()
def rwkv_reference(hf, tokens, edit=None) -> torch.Tensor:
    """Logits of a HF RWKV-4 model (float64), with the WKV sums kept as plain numerator /
    denominator (no max-exponent trick).  ``edit(l, t, num, den)`` returns the sums layer l carries
    out of step t."""
    assert hf.config.rescale_every > hf.config.num_hidden_layers  # no eval-time weight rescaling
    m = hf.rwkv
    x = m.embeddings.weight.double()[tokens]
    for l, block in enumerate(m.blocks):
        if l == 0:
            x = _ln(x, block.pre_ln)
        a = block.attention
        h = _ln(x, block.ln1)
        prev = _shift(h)

        def mixed(mix, h=h, prev=prev):
            mix = mix.double()
            return h * mix + prev * (1 - mix)

        k = _linear(mixed(a.time_mix_key), a.key)
        v = _linear(mixed(a.time_mix_value), a.value)
        r = torch.sigmoid(_linear(mixed(a.time_mix_receptance), a.receptance))
        decay, bonus = torch.exp(-torch.exp(a.time_decay.double())), a.time_first.double()
        num = torch.zeros_like(k[:, 0])
        den = torch.zeros_like(k[:, 0])
        wkv = []
        for t in range(tokens.shape[1]):
            e = torch.exp(bonus + k[:, t])
            wkv.append((num + e * v[:, t]) / (den + e))  # step t reads the sums of tokens < t
            num = decay * num + torch.exp(k[:, t]) * v[:, t]
            den = decay * den + torch.exp(k[:, t])
            if edit is not None:
                num, den = edit(l, t, num, den)
        x = x + _linear(r * torch.stack(wkv, 1), a.output)
        f = block.feed_forward
        h2 = _ln(x, block.ln2)
        prev2 = _shift(h2)
        kk = torch.relu(_linear(h2 * f.time_mix_key.double() + prev2 * (1 - f.time_mix_key.double()), f.key)) ** 2
        rr = torch.sigmoid(
            _linear(h2 * f.time_mix_receptance.double() + prev2 * (1 - f.time_mix_receptance.double()), f.receptance)
        )
        x = x + rr * _linear(kk, f.value)
    return _linear(_ln(x, m.ln_out), hf.head)


def replace_at(where: tuple[int, int], value):
    """An ``edit`` for the references: the state carried out of (layer, step) ``where`` becomes ``value``."""

    def edit(l, t, *state):
        if (l, t) == where:
            return value
        return state[0] if len(state) == 1 else state

    return edit


def record_at(where: tuple[int, int], store: dict):
    """An ``edit`` for the references that keeps the state carried out of (layer, step) ``where``."""

    def edit(l, t, *state):
        kept = state[0] if len(state) == 1 else state
        if (l, t) == where:
            store["state"] = kept
        return kept

    return edit


def _at(t: int) -> slice:
    return slice(t, t + 1)


def _one_step(value: torch.Tensor, t: int) -> torch.Tensor:
    """A ``[batch, T, ...]`` source holding ``value [batch, ...]`` at position t."""
    src = torch.zeros((value.shape[0], T, *value.shape[1:]), dtype=torch.float32)
    src[:, t] = value.float()
    return src


# --- tests ---------------------------------------------------------------------------------------
FAMILIES = ("mamba", "falcon_mamba", "mamba2", "rwkv", "recurrent_gemma", "xlstm", "zamba2", "jamba")


@pytest.mark.parametrize("family", FAMILIES)
def test_state_sites_are_the_models_own_states(zoo, family):
    """Every state site at position t equals HF's own state after the prefix of t + 1 tokens (HF's
    multi-token path), the stepped run's logits equal HF's forward, and an unhooked run is HF's."""
    hf, model = zoo(family)
    clean, _ = prompts()
    names = state_names(model)
    assert names, f"{family} has no state sites"
    with torch.no_grad():
        want = hf(clean).logits
        logits, cache = model.run_with_cache(clean, names=names)
        assert (model(clean) - want).abs().max() < 1e-5
    assert (logits - want).abs().max() < 1e-5
    ref = hf_states(family, hf, clean)
    assert set(ref) == set(names)
    for name in names:
        assert cache[name].shape == ref[name].shape, name
        err = (cache[name].float() - ref[name].float()).abs().max()
        assert err < 1e-4 * (1 + ref[name].float().abs().max()), (name, float(err))


def test_mamba_state_patch_equals_hand_unrolled_reference(zoo):
    """Done-when: patching Mamba's SSM state at (layer, step) leaves every earlier logit bit-identical,
    changes later ones, and equals Mamba written out by hand from its weights, for a state patched
    in from another prompt and for a zero-ablated state; the semantic sites equal the
    reference's intermediate values."""
    hf, model = zoo("mamba")
    _, corrupt = prompts()
    other = prompts(9)[0]  # the source of the patched states: another prompt
    record: dict[str, torch.Tensor] = {}
    base = mamba_reference(hf, corrupt, record=record)
    with torch.no_grad():
        full, cache = model.run_with_cache(corrupt, names=list(record))
    plain = stepped(model, corrupt)
    assert (full - base).abs().max() < 1e-5 and (plain - base).abs().max() < 1e-5
    for name, value in record.items():
        assert (cache[name] - value).abs().max() < 1e-5, name
    for l, t in [(0, 1), (1, 3)]:
        name = model.site("ssm_state", l)
        source: dict = {}
        mamba_reference(hf, other, edit=record_at((l, t), source))
        h = source["state"]
        for label, iv, value in [
            ("patch", I.patch(name, _one_step(h, t), positions=_at(t)), h),
            ("zero", I.zero(name, positions=_at(t)), torch.zeros_like(h)),
        ]:
            want = mamba_reference(hf, corrupt, edit=replace_at((l, t), value))
            with torch.no_grad(), model.intervene(iv):
                got = model(corrupt)
            assert torch.equal(got[:, : t + 1], plain[:, : t + 1]), (label, l, t)  # positions <= t: untouched
            assert (want[:, t + 1 :] - base[:, t + 1 :]).abs().max() > 1e-3, (label, l, t)  # the patch matters
            assert (got.double() - want).abs().max() < 1e-5, (label, l, t, float((got.double() - want).abs().max()))


def test_rwkv_state_patch_equals_hand_unrolled_reference(zoo):
    """Done-when for RWKV: patching the WKV state at (layer, step) leaves earlier logits bit-identical,
    changes later ones, and equals RWKV-4 written out by hand (plain sums, float64)."""
    hf, model = zoo("rwkv")
    _, corrupt = prompts()
    other = prompts(9)[0]  # the source of the patched states: another prompt
    base = rwkv_reference(hf, corrupt)
    plain = stepped(model, corrupt)
    assert (plain - base).abs().max() < 1e-5
    for l, t in [(0, 1), (1, 3)]:
        name = model.site("wkv_state", l)
        source: dict = {}
        rwkv_reference(hf, other, edit=record_at((l, t), source))
        num, den = source["state"]
        triple = torch.stack([num, den, torch.zeros_like(num)], 1)  # HF's stable form: sums * exp(0)
        for label, iv, sums in [
            ("patch", I.patch(name, _one_step(triple, t), positions=_at(t)), (num, den)),
            ("zero", I.zero(name, positions=_at(t)), (torch.zeros_like(num), torch.zeros_like(den))),
        ]:
            want = rwkv_reference(hf, corrupt, edit=replace_at((l, t), sums))
            with torch.no_grad(), model.intervene(iv):
                got = model(corrupt)
            assert torch.equal(got[:, : t + 1], plain[:, : t + 1]), (label, l, t)
            assert (want[:, t + 1 :] - base[:, t + 1 :]).abs().max() > 1e-3, (label, l, t)  # the patch matters
            assert (got.double() - want).abs().max() < 1e-5, (label, l, t, float((got.double() - want).abs().max()))


@pytest.mark.parametrize(
    "family,read",
    [
        ("mamba", None),
        ("mamba2", None),
        ("rwkv", None),
        ("xlstm", None),
        # its attention layer (1) has a key-value carry of its own: read the recurrent layer's output
        ("recurrent_gemma", "blocks.0.hook_resid_post"),
    ],
)
def test_patching_every_state_restores_the_clean_run(zoo, family, read):
    """The state kinds are the whole carry: patching all of them, every layer, at every step, from
    the clean run into the corrupt one (which differs at position P) gives the clean run after P
    (logits, or the recurrent layer's output) and keeps the corrupt one up to P; one kind at one
    (layer, step) changes only later positions."""
    _, model = zoo(family)
    clean, corrupt = prompts(1)
    names = state_names(model)

    def out(tokens, hooks=()):
        if read is None:
            return model.run_with_hooks(tokens, list(hooks) + [(names[0], lambda x, hook: None)])
        return model.run_with_cache(tokens, names=[read, names[0]], fwd_hooks=list(hooks))[1][read]

    with torch.no_grad():
        want, src = out(clean), model.run_with_cache(clean, names=names)[1]
        plain = out(corrupt)
        got = out(corrupt, I.hook_fns(model, [I.patch(n, src[n]) for n in names]))
        assert torch.equal(got[:, : P + 1], plain[:, : P + 1])
        assert (got[:, P + 1 :] - want[:, P + 1 :]).abs().max() < 1e-5
        assert (plain[:, P + 1 :] - want[:, P + 1 :]).abs().max() > 1e-3  # the corruption mattered
        t = P + 1
        one = out(corrupt, I.hook_fns(model, [I.patch(names[0], src[names[0]], positions=_at(t))]))
    assert torch.equal(one[:, : t + 1], plain[:, : t + 1])
    assert (one[:, t + 1 :] - plain[:, t + 1 :]).abs().max() > 1e-4


def test_circuits_patch_by_layer_and_step(zoo):
    """``circuits.patch(site=<state>, by="layer,pos")`` (hooks engine) equals one intervention per
    cell; cells at or after the last read position change nothing."""
    _, model = zoo("mamba")
    clean, corrupt = prompts(2)
    run = runs.run(circuits.patch, model, clean, corrupt, site="ssm_state", by="layer,pos", metric="kl", progress=False)
    df = run.frame
    assert run.meta["engine"] == "hooks" and len(df) == model.cfg.n_layers * T
    with torch.no_grad():
        want, src = model.run_with_cache(clean, names=model.sites("ssm_state"))
    clean_lp = want[:, -1].log_softmax(-1)
    for row in df.itertuples():
        if row.pos >= T - 1:
            assert row.value == pytest.approx(run.meta["baseline"], abs=1e-6)  # read at T-1 only: no effect
            continue
        name = model.site("ssm_state", int(row.layer))
        with torch.no_grad(), model.intervene(I.patch(name, src[name], positions=_at(int(row.pos)))):
            got = model(corrupt)[:, -1].log_softmax(-1)
        kl = (clean_lp.exp() * (clean_lp - got)).sum(-1).mean()
        assert row.value == pytest.approx(float(kl), abs=1e-5), (row.layer, row.pos)


@pytest.mark.parametrize("family", ["mamba", "rwkv", "xlstm"])
def test_free_running_decoding_from_a_patched_state(zoo, family):
    """Decoding from the corrupt prompt with every state of the step before its last token patched
    in from the clean prompt continues exactly as the clean prompt does (the logits of every step),
    from the cache (one token per step) and recomputing alike; unpatched, it does not."""
    from interp.decoding import decode

    _, model = zoo(family)
    clean, corrupt = prompts(3)
    names = state_names(model)
    with torch.no_grad():
        _, src = model.run_with_cache(clean, names=names)

    def run(tokens, use_cache=True):
        seen = []

        def choose(logits):
            seen.append(logits.float())
            return logits.argmax(-1)

        tokens_out = decode(model, tokens, 4, choose, use_cache=use_cache)
        return tokens_out, torch.stack(seen, 1)

    want_tokens, want = run(clean)
    store: dict = {}  # cached prompt prefixes, copied for each call (deep copies of the family's cache)
    for _ in range(2):
        assert torch.equal(greedy(model, clean, 4, prefixes=store), want_tokens)
    assert len(store) == 1
    _, unpatched = run(corrupt)
    assert (unpatched - want).abs().max() > 1e-3
    with model.intervene([I.patch(n, src[n], positions=_at(T - 2)) for n in names]):
        for use_cache in (True, False):
            tokens_out, got = run(corrupt, use_cache)
            assert torch.equal(tokens_out, want_tokens) and (got - want).abs().max() < 1e-5, use_cache


def test_stepping_costs_one_forward_per_token_only_when_a_state_is_hooked(zoo):
    _, model = zoo("mamba")
    clean, _ = prompts()
    calls = []
    handle = model.backend.hf.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with torch.no_grad():
            model.run_with_cache(clean, names=[model.site("resid_post", 0), model.site("conv", 1), model.site("B", 0)])
            assert len(calls) == 1
            model.run_with_cache(clean, names=[model.site("ssm_state", 0)])
            assert len(calls) == 1 + T
    finally:
        handle.remove()
    with torch.enable_grad():  # an ordinary call in grad mode runs (without gradients) ...
        assert model.run_with_hooks(clean, [(model.site("ssm_state", 0), lambda x, hook: x)]).grad_fn is None
    with pytest.raises(InputError, match="gradients do not flow"):  # ... asking for gradients is refused
        site_gradients(model, clean, lambda logits: logits[:, -1, 0].sum(), [model.site("ssm_state", 0)])


def test_hybrid_recurrent_sites_in_recurrent_layers_only(zoo):
    """RecurrentGemma (recurrent layer 0, attention layer 1): its recurrent sites are in layer 0 only,
    asking for them in layer 1 says where they are, and a sweep runs over layer 0."""
    hf, model = zoo("recurrent_gemma")
    assert model.layers_with("lru_state") == [0] and model.layers_with("mixer_out") == [0, 1]
    with pytest.raises(InputError, match=r"only in layers \[0\]"):
        model.site("lru_state", 1)
    clean, corrupt = prompts(4)
    df = circuits.patch(model, clean, corrupt, site="lru_state", by="layer,pos", metric="kl", progress=False)
    assert set(df["layer"]) == {0} and len(df) == T
    assert df.loc[df["pos"] < P, "effect"].abs().max() == 0  # before the corruption: the same state, no run
    assert df.loc[df["pos"].between(P, T - 2), "effect"].abs().max() > 1e-4


@pytest.mark.parametrize("family", ["mamba", "rwkv", "xlstm"])
def test_defaults_attribution_dla_and_lens(zoo, family):
    """Attribution's default site is the mixer output where there are no heads; it ranks cells like
    exact patching; DLA's per-layer pieces add up to the logit (xLSTM's: before its soft-cap); the logit lens at the last layer is the model's own output."""
    _, model = zoo(family)
    clean, corrupt = prompts(5)
    att_run = runs.run(circuits.attribute, model, clean, corrupt, metric="kl")
    att = att_run.frame
    assert att_run.meta["site"] == "mixer_out" and set(att.columns) >= {"layer", "pos"}
    exact_run = runs.run(circuits.patch, model, clean, corrupt, metric="kl", progress=False)
    exact = exact_run.frame
    assert exact_run.meta["site"] == "mixer_out"
    reached = exact["pos"] >= P
    assert (
        torch.corrcoef(torch.tensor([att.loc[reached, "effect"].values, exact.loc[reached, "effect"].values]))[0, 1]
        > 0.5
    )
    target = int(model(clean[:1])[0, -1].argmax())
    dla_run = runs.run(interp.lens.dla, model, clean[:1], target)
    d, a = dla_run.frame, dla_run.meta
    assert set(d["kind"]) == {"embed", "layer", "bias"} and len(d) == model.cfg.n_layers + 2
    if family == "xlstm":  # soft-capped logits: the pieces add up to the logit before the cap
        assert "soft-cap" in a["linearisation"] and a["pre_cap"] == a["total"]
        assert abs(a["logit"]) < abs(a["total"]) + 1e-6  # the cap only shrinks
    else:
        assert a["total"] == pytest.approx(a["logit"], abs=1e-4)
    lens = interp.lens.logit_lens(model, clean[:1])
    last = lens[(lens["layer"] == lens["layer"].max()) & (lens["rank_k"] == 1)].sort_values("pos")
    with torch.no_grad():
        own = model(clean[:1])[0].log_softmax(-1).max(-1)
    assert torch.allclose(torch.tensor(last["logprob"].values), own.values, atol=1e-4)  # xLSTM: with its soft-cap
    assert (last["token_id"].values == own.indices.numpy()).all()


def test_generic_path_xlstm_and_codegen(zoo):
    """Models the bridge cannot wrap (xLSTM: no adapter; CodeGen: the bridge crashes) load through
    hooks on their own modules: HF's logits, the standard site names, each layer's output = its
    input + its writes, HF's hidden states, and a missing site lists the model's sites."""
    hf, model = zoo("xlstm")
    assert "no adapter" in model.card["generic"] and model.cfg.n_heads == 0
    clean, corrupt = prompts(6)
    names = [n for l in range(model.cfg.n_layers) for n in model.site_names if n.startswith(f"blocks.{l}.")]
    with torch.no_grad():
        assert (model(clean) - hf(clean).logits).abs().max() < 1e-5
        _, cache = model.run_with_cache(clean, names=[n for n in names if "hook_mlstm" not in n])
    for l in range(model.cfg.n_layers):
        writes = cache[model.site("mixer_out", l)] + cache[model.site("mlp_out", l)]
        assert (cache[model.site("resid_post", l)] - cache[model.site("resid_pre", l)] - writes).abs().max() < 1e-5
    with pytest.raises(InputError, match="its site kinds"):
        model.site("z", 0)
    df = circuits.patch(model, clean, corrupt, site="resid_pre", by="layer,pos", metric="kl", progress=False)
    assert df.loc[(df["layer"] == 0) & (df["pos"] == P), "normalised"].item() == pytest.approx(1.0, abs=1e-4)

    hf, model = zoo("codegen")
    assert "bridge failed" in model.card["generic"]
    with torch.no_grad():
        out = hf(clean, output_hidden_states=True)
        assert (model(clean) - out.logits).abs().max() < 1e-4
        _, cache = model.run_with_cache(clean)
    for l in range(model.cfg.n_layers - 1):  # the last hidden state HF returns is after the final norm
        assert (cache[model.site("resid_post", l)] - out.hidden_states[l + 1]).abs().max() < 1e-5
    assert (cache[model.site("unembed_in")] - out.hidden_states[-1]).abs().max() < 1e-5
    assert torch.equal(greedy(model, clean, 4, use_cache=True), greedy(model, clean, 4, use_cache=False))


def test_an_architecture_nothing_runs_is_one_line(tmp_path):
    """An encoder-only model (DistilBERT: no causal LM in transformers) is refused in one line that
    names it and the generic path."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    from tests.conftest import build_tokenizer

    cfg = DistilBertConfig(vocab_size=families.VOCAB, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    DistilBertForMaskedLM(cfg).save_pretrained(tmp_path)
    build_tokenizer(tmp_path)
    with pytest.raises(InputError) as err:
        interp.load(str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "distilbert" in msg and "DistilBertForMaskedLM" in msg and "generic path" in msg


def test_a_family_whose_stepping_is_wrong_loads_without_state_sites(zoo, monkeypatch):
    """A family rule that matched modules whose cache it misreads (here: each layer's state written
    back into the other layer) fails the load-time check (stepping must reproduce the forward): the
    model loads without state sites, and its card says why, rather than giving wrong states."""
    from interp.loading import from_hf_generic
    from interp.recurrent import hf as R

    hf, model = zoo("xlstm")
    right = R.adapt(hf)

    class Swapped(R.XlstmCarry):
        def write(self, kind, layer, value):
            super().write(kind, 1 - layer, value)

    broken = R.Family(right.name, right.states, right.sites, lambda b, d, t: Swapped(hf, b, d, t))
    monkeypatch.setattr(R, "adapt", lambda module: broken)
    loaded = from_hf_generic(hf, tokenizer=model.tokenizer, name="broken")
    assert "logits" in loaded.card["recurrent_state"] and not state_names(loaded)
    assert "mixer_out" in loaded.site_kinds()  # its other sites stay


def test_state_sites_take_the_hooks_engine(zoo):
    """On a model the downstream engine runs (Zamba2: recomputing from a cached prefix), a state site
    still goes through the hooks engine (its state lives in the cache the engine would reuse) and
    asking for the native engine says why; a mixer site runs native and equals the hooks engine."""
    _, model = zoo("zamba2")
    clean, corrupt = prompts(7)
    kw = dict(by="layer,pos", metric="kl", progress=False)
    state = runs.run(circuits.patch, model, clean, corrupt, site="conv_state", **kw)
    assert state.meta["engine"] == "hooks" and state.frame["effect"].abs().max() > 1e-3
    with pytest.raises(InputError, match="decoding cache"):
        circuits.patch(model, clean, corrupt, site="conv_state", engine="native", **kw)
    native = runs.run(circuits.patch, model, clean, corrupt, site="conv_in", **kw)
    hooks = circuits.patch(model, clean, corrupt, site="conv_in", engine="hooks", **kw)
    assert native.meta["engine"] == "native" and (native.frame["value"] - hooks["value"]).abs().max() < 1e-5
