"""interp.saliency: the per-position reads of attention-free models.  token_saliency checked against
an independent computation (the full Jacobian of the logits with respect to the embeddings, by
torch.autograd.functional.jacobian), its causal zeros, and what a trained selective SSM reads; the
SSM's hidden attention checked by the exact identity it states (it rebuilds the scan's output)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from interp.errors import InputError, Unsupported
from interp.saliency import ssm_hidden_attention, ssm_layers, ssm_read, token_saliency
from interp.zoo.recipes import RECIPES


def jacobian_saliency(model, tokens: torch.Tensor) -> np.ndarray:
    """``[dest, src]``: ``|| d logit_t(top_t) / d e_s ||`` from the whole Jacobian of the logits with
    respect to the embedding output (swapped in by a hook that returns the given tensor)."""
    name = model.site("embed")
    with torch.no_grad():
        embed = model.run_with_cache(tokens, [name])[1][name]
        top = model(tokens)[0].argmax(-1)

    def logits_of(e: torch.Tensor) -> torch.Tensor:
        return model.run_with_hooks(tokens, fwd_hooks=[(name, lambda x, hook: e)])[0]

    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(logits_of, embed)  # [pos, vocab, 1, pos, d_model]
    n = tokens.shape[1]
    raw = torch.stack([jac[t, top[t], 0].norm(dim=-1) for t in range(n)])  # [dest, src]
    return (raw / raw.sum(-1, keepdim=True)).numpy()


@pytest.mark.parametrize("name", ["recall-gru", "recall-ssm", "flipflop-lstm", "induction-2l"])
def test_saliency_equals_the_jacobian(name):
    model = interp.load(name)
    tokens = RECIPES[name].make_batch(1, 3).tokens[:1, :12]
    sal = token_saliency(model, tokens).numpy()
    np.testing.assert_allclose(sal, jacobian_saliency(model, tokens), atol=1e-5)
    assert (np.triu(sal, 1) == 0).all()  # causal: nothing is read from later tokens
    np.testing.assert_allclose(sal.sum(1), 1.0, atol=1e-5)
    raw = token_saliency(model, tokens, normalise=False).numpy()
    np.testing.assert_allclose(raw / raw.sum(1, keepdims=True), sal, atol=1e-6)


def test_a_selective_ssm_reads_the_value_of_the_queried_key():
    """recall-ssm (associative recall: ``k v k v _ _ _ q ...``): at a query, the output's saliency
    on the value paired with the queried key exceeds that on the other value in most queries
    (measured 50 of 64 at seed 1; chance is half)."""
    model = interp.load("recall-ssm")
    batch = RECIPES["recall-ssm"].make_batch(32, 1)
    wins = total = 0
    for i in range(32):
        tokens, labels = batch.tokens[i : i + 1], batch.labels[i]
        sal = token_saliency(model, tokens)
        for q in range(tokens.shape[1]):
            keys = [p for p in (1, 3) if int(labels[q]) >= 0 and int(tokens[0, p]) == int(tokens[0, q])]
            if keys:  # a query of a stored key: its value sits right after the key
                other = 4 if keys[0] == 1 else 2
                total += 1
                wins += bool(sal[q, keys[0] + 1] > sal[q, other])
    assert total >= 32 and wins / total > 0.7, (wins, total)


def test_saliency_refuses_a_batch():
    model = interp.load("recall-gru")
    with pytest.raises(InputError, match="one sequence"):
        token_saliency(model, RECIPES["recall-gru"].make_batch(2, 0).tokens)


def test_ssm_hidden_attention_rebuilds_the_scan_output():
    """y_t = sum_s alpha[:, t, s] u_s + D u_t, with y the block's hidden site and u the scan's input
    (read from the block's own hook point): exact up to float32 rounding."""
    model = interp.load("recall-ssm")
    assert ssm_layers(model) == [0]
    tokens = RECIPES["recall-ssm"].make_batch(2, 5).tokens[1:]
    alpha = ssm_hidden_attention(model, tokens, 0)
    block = model.module.blocks[0]
    names = [block.hook_u.name, model.site("hidden", 0)]
    _, cache = model.run_with_cache(tokens, names, logits=False)
    u, y = cache[names[0]][0], cache[names[1]][0]
    rebuilt = torch.einsum("ets,se->te", alpha, u) + block.D.detach() * u
    torch.testing.assert_close(rebuilt, y, atol=1e-4 * float(y.abs().max()), rtol=0)
    assert (alpha.triu(1) == 0).all()
    read = ssm_read(model, tokens, 0)
    torch.testing.assert_close(read.sum(-1), torch.ones(tokens.shape[1]))
    with pytest.raises(Unsupported, match="selective SSM"):
        ssm_hidden_attention(interp.load("recall-gru"), RECIPES["recall-gru"].make_batch(1, 0).tokens, 0)
