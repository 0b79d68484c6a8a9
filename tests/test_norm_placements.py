"""Decompositions through norm placements other than pre-norm: where they are exact, and how far
off the stated linearisation is where it is not.

- Sandwich norms (Gemma-3: a norm on each sublayer's output) and post-norm blocks (OLMo-2): a
  head's write is its output through the post-attention norm at that norm's scale of the run.
  The heads then add up to the attention output exactly, and direct logit attribution adds up
  to the logit exactly.  Removing one head changes that norm's scale too: the linear share is
  exact only with the scale frozen, and the test measures the gap when it is not.
- A final logit soft-cap (Gemma-2): the pieces add up to the logits before the cap, which the
  model then caps.
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp import runs
from interp.lens import dla
from interp.weights import readout
from tests.families import build


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("norms")
    return {f: interp.load(build(f, root / f)[1]) for f in ("gemma3_text", "olmo2", "gemma2")}


@pytest.mark.parametrize("family", ["gemma3_text", "olmo2"])
def test_heads_through_post_norms_add_up_and_the_frozen_scale_is_named(models, family):
    model = models[family]
    tokens = torch.tensor([[5, 17, 33, 8, 61, 12, 40, 9]])
    target, other = 20, 30
    result = runs.run(dla, model, tokens, target, other)
    frame, meta = result.frame, result.meta
    assert abs(meta["total"] - meta["logit"]) < 1e-5
    assert "post-attention norm" in meta["linearisation"]
    w = model.weights()
    _, cache = model.run_with_cache(tokens, names=model.sites("z") + model.sites("attn_out"))
    for l in range(model.cfg.n_layers):
        z = cache[model.site("z", l)].float()
        rebuilt = w.head_outputs(l, z).sum(-2) + w.attn_bias(l, z)
        assert (rebuilt - cache[model.site("attn_out", l)]).abs().max() < 1e-5
    # how far off the linear share is when the post-norm's scale is not frozen: ablate the head
    # with the largest piece and compare the logit change with its piece
    heads = frame[frame["kind"] == "head"]
    top = heads.loc[heads["value"].abs().idxmax()]
    layer, head = int(top["layer"]), int(top["head"])

    def drop(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, [(model.site("z", layer), drop)])[0, -1]
    actual = meta["logit"] - float(logits[target] - logits[other])
    gap = abs(actual - float(top["value"]))
    # the gap is real (the scale moves) but the linear share stays the right size and sign here
    assert gap > 1e-6 and gap < 0.5 * abs(float(top["value"])) + 1e-3, (actual, float(top["value"]))


def test_the_final_soft_cap_is_applied_after_the_pieces(models):
    model = models["gemma2"]
    ro = readout(model)
    assert ro.softcap
    tokens = torch.tensor([[5, 17, 33, 8, 61, 12, 40, 9]])
    meta = runs.run(dla, model, tokens, 20, 30).meta
    logits, cache = model.run_with_cache(tokens, names=[model.site("final_resid")])
    x = cache[model.site("final_resid")][0, -1]
    raw = (ro.module(x[None]).float() @ ro.W_U + ro.b_U)[0]  # before the cap
    assert abs(meta["total"] - float(raw[20] - raw[30])) < 1e-4
    assert abs(meta["pre_cap"] - meta["total"]) < 1e-9
    capped = ro.cap(raw)
    assert (capped - logits[0, -1]).abs().max() < 1e-4  # the model's logits are the capped pieces' sum
    assert "soft-cap" in meta["linearisation"]
