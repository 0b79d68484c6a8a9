"""The Model facade: hooks, caches, loading from every source, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import interp
from interp.checkpoint import save_checkpoint
from interp.errors import InputError
from interp.tasks import repeated_tokens


def _tokens(model, n=3, seed=0):
    return repeated_tokens(n, d_vocab=model.cfg.d_vocab, n_ctx=min(32, model.cfg.n_ctx), seed=seed).tokens


def test_noop_hooks_leave_logits_bit_identical(induction_model):
    tokens = _tokens(induction_model)
    clean = induction_model(tokens)
    every_site = [(name, lambda x, hook: x) for name in induction_model.site_names]
    assert torch.equal(induction_model.run_with_hooks(tokens, every_site), clean)
    with induction_model.hooks([("blocks.0.attn.hook_pattern", lambda x, hook: None)]):
        assert torch.equal(induction_model(tokens), clean)


def test_cache_equals_manual_attention(induction_model):
    """Layer-0 attention recomputed by hand from the cached residual and the weights."""
    m = induction_model
    tokens = _tokens(m)
    _, cache = m.run_with_cache(
        tokens,
        names=[
            "blocks.0.hook_resid_pre",
            "blocks.0.ln1.hook_out",
            "blocks.0.attn.hook_pattern",
            "blocks.0.attn.hook_z",
            "blocks.0.hook_attn_out",
            "blocks.0.hook_resid_post",
        ],
    )
    x = cache["blocks.0.ln1.hook_out"]  # after the LayerNorm weights (hook_normalized is before)
    bridge = m.module
    q = torch.einsum("bpd,hde->bphe", x, bridge.W_Q[0]) + bridge.b_Q[0]
    k = torch.einsum("bpd,hde->bphe", x, bridge.W_K[0]) + bridge.b_K[0]
    v = torch.einsum("bpd,hde->bphe", x, bridge.W_V[0]) + bridge.b_V[0]
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / m.cfg.d_head**0.5
    causal = torch.triu(torch.ones(scores.shape[-1], scores.shape[-1], dtype=torch.bool), 1)
    pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], pattern, atol=1e-5, rtol=1e-5)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"], z, atol=1e-5, rtol=1e-5)
    attn_out = torch.einsum("bqhe,hed->bqd", z, bridge.W_O[0]) + bridge.b_O[0]
    torch.testing.assert_close(cache["blocks.0.hook_attn_out"], attn_out, atol=1e-5, rtol=1e-5)
    # attention-only block: resid_post = resid_pre + attn_out
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_pre"] + attn_out, atol=1e-5, rtol=1e-5
    )


def test_hook_can_overwrite_and_hooks_compose(induction_model):
    m = induction_model
    tokens = _tokens(m)
    zero_l1 = ("blocks.1.hook_attn_out", lambda x, hook: torch.zeros_like(x))
    zero_l0 = ("blocks.0.hook_attn_out", lambda x, hook: torch.zeros_like(x))
    both = m.run_with_hooks(tokens, [zero_l0, zero_l1])
    with m.hooks([zero_l0]):
        with m.hooks([zero_l1]):
            nested = m(tokens)
        only_l0 = m(tokens)
    assert torch.equal(both, nested)
    assert not torch.allclose(only_l0, nested)
    # both attention layers removed: logits depend only on the current token (+ position)
    assert not torch.allclose(both, m(tokens))


def test_save_and_reload_gives_identical_logits(induction_model, tmp_path):
    tokens = _tokens(induction_model)
    save_checkpoint(induction_model.module, induction_model.card, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "copy.safetensors"]
    again = interp.load(tmp_path / "copy.safetensors")
    assert torch.equal(again(tokens), induction_model(tokens))
    assert again.cfg == induction_model.cfg


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_directory_matches_hf_model(arch, hf_dirs):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dirs[arch]).eval()
    model = interp.load(hf_dirs[arch])
    tokens = model.to_tokens("w1 w2 w3 w1 w2 w3 w7")
    assert tokens[0, 0].item() == 0  # BOS prepended
    with torch.no_grad():
        ref = hf(tokens, output_hidden_states=True)
        logits, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"])
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-4)
    # HF hidden_states[1] is the residual stream after block 0
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], ref.hidden_states[1], atol=1e-5, rtol=1e-4)
    assert model.cfg.family == "transformer" and model.cfg.n_heads == 4
    assert model.to_str_tokens(tokens)[:3] == ["<bos>", "w1", "w2"]


def test_in_memory_hf_model_with_tokenizer(tmp_path):
    from tests.conftest import build_hf_model

    hf, tok = build_hf_model("gpt2", tmp_path / "m")
    hf.train()  # load() must switch dropout off
    tokens = torch.tensor([[0, 5, 6, 7, 5, 6]])
    with torch.no_grad():
        ref = hf.eval()(tokens).logits
    hf.train()
    model = interp.load(hf, tokenizer=tok)
    torch.testing.assert_close(model(tokens), ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(model(tokens), model(tokens))  # deterministic: dropout is off


class TinyRNN(nn.Module):
    """A user's own module: embedding -> GRU -> linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(12, 16)
        self.rnn = nn.GRU(16, 16, batch_first=True)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 12)

    def forward(self, tokens):
        h, _ = self.rnn(self.emb(tokens))
        return self.head(torch.tanh(self.mix(h)))


def test_custom_module_through_nnsight_can_be_cached_and_patched():
    net = TinyRNN().eval()
    sites = {"hook_embed": "emb", "blocks.0.hook_hidden": "rnn", "blocks.0.hook_resid_post": "mix"}
    model = interp.load(net, sites=sites, n_ctx=32, family="rnn")
    assert model.cfg.family == "rnn" and model.cfg.n_heads == 0 and model.cfg.d_vocab == 12
    tokens = torch.randint(0, 12, (2, 9), generator=torch.Generator().manual_seed(1))
    logits, cache = model.run_with_cache(tokens)
    assert set(cache) == set(sites)
    with torch.no_grad():
        h, _ = net.rnn(net.emb(tokens))
        torch.testing.assert_close(cache["blocks.0.hook_hidden"], h)
        torch.testing.assert_close(logits, net(tokens))

    # patch the GRU output at position 4 only: positions before are unchanged
    def patch(x, hook):
        x = x.clone()
        x[:, 4] = 0
        return x

    patched = model.run_with_hooks(tokens, [("blocks.0.hook_hidden", patch)])
    assert torch.equal(patched[:, :4], logits[:, :4])
    assert not torch.allclose(patched[:, 4], logits[:, 4])
    torch.testing.assert_close(patched[:, 5:], logits[:, 5:])  # GRU output feeds only the same position here


def test_custom_module_bad_sites():
    with pytest.raises(ValueError, match="rnn2"):
        interp.load(TinyRNN(), sites={"blocks.0.hook_hidden": "rnn2"})
    with pytest.raises(ValueError, match="sites="):
        interp.load(TinyRNN())


def test_random_init_from_config_dict():
    model = interp.load(dict(d_model=32, d_head=8, n_layers=1, n_heads=4, n_ctx=16, d_vocab=20, attn_only=True))
    assert model.cfg.n_layers == 1 and model.cfg.d_vocab == 20
    names = model.hook_names()
    assert {"blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z"} <= set(names["name"])
    shape = names.set_index("name").loc["blocks.0.attn.hook_pattern", "shape"]
    assert shape == "[batch, 4, pos, pos]"


def test_generate_is_greedy(induction_model):
    tokens = _tokens(induction_model, n=2)[:, :20]
    out = induction_model.generate(tokens, max_new_tokens=4)
    assert out.shape == (2, 24)
    assert torch.equal(out[:, 20], induction_model(tokens)[:, -1].argmax(-1))


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ("nonexistent-2l", FileNotFoundError, "not a zoo name"),
        ("induction-3l", ValueError, "did you mean"),
        ("/no/such/dir", FileNotFoundError, "no model"),
    ],
)
def test_bad_sources(bad, error, match):
    with pytest.raises(error, match=match):
        interp.load(bad)


def test_not_safetensors_is_refused(tmp_path):
    stem = tmp_path / "evil"
    (tmp_path / "evil.json").write_text(json.dumps(interp.zoo.card("induction-2l")))
    (tmp_path / "evil.safetensors").write_bytes(b"\x80\x04not safetensors, maybe a pickle")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        interp.load(stem.with_suffix(".safetensors"))
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "w.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        interp.load(tmp_path / "w.pt")


def test_hub_id_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for hub_id in ("some-org/some-model", "gpt2"):  # owner-less ids are hub ids too, as on the hub
        with pytest.raises(FileNotFoundError, match="hub id it needs the hub, which cannot be reached"):
            interp.load(hub_id)


def test_bad_tokens_and_sites(induction_model):
    m = induction_model
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        m(torch.tensor([[0, 64]]))
    with pytest.raises(ValueError, match="n_ctx=64"):
        m(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(InputError, match="integers"):
        m(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown token"):
        m.to_tokens("BOS t1 banana")
    with pytest.raises(ValueError, match="empty"):
        m.to_tokens("   ")
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre"):
        m.run_with_cache(_tokens(m), names=["blocks.0.hook_resid_pr"])
