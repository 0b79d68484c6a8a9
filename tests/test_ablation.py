"""Head ablation: each way of knocking a head out does exactly that, ablations compose with
other hooks, and the induction heads of induction-2l are causally needed."""

from __future__ import annotations

import pytest
import torch

from interp import heads, tasks
from interp.ablation import ablate, ablation_effect, random_heads


def _cache(model, tokens, names):
    return model.run_with_cache(tokens, names=names)[1]


def test_each_ablation_does_what_it_says(induction_model):
    m = induction_model
    tokens = heads.default_tokens(m, n=3, length=20)
    ref = heads.default_tokens(m, n=2, length=24, seed=5)
    z1 = "blocks.1.attn.hook_z"
    clean = _cache(m, tokens, [z1])[z1]
    with ablate(m, [(1, 2)], "zero"):
        z = _cache(m, tokens, [z1])[z1]
    assert (z[:, :, 2] == 0).all() and torch.equal(z[:, :, [0, 1, 3]], clean[:, :, [0, 1, 3]])
    with ablate(m, [(1, 2)], "mean", reference=ref):
        z = _cache(m, tokens, [z1])[z1]
    assert torch.allclose(z[:, :, 2], _cache(m, ref, [z1])[z1][:, :, 2].mean((0, 1)).expand(3, 20, -1))
    with ablate(m, [(1, 2)], "resample", reference=ref):
        z = _cache(m, tokens, [z1])[z1]
    assert torch.allclose(z[:, :, 2], _cache(m, ref, [z1])[z1][[0, 1, 0], :20, 2])
    # query masking from position 12: uniform over the causal prefix there, untouched before
    p1 = "blocks.1.attn.hook_pattern"
    with ablate(m, [(1, 2)], "query", positions=12):
        pat = _cache(m, tokens, [p1])[p1][:, 2]
    assert torch.allclose(pat[:, 12:], torch.tril(torch.ones(20, 20))[12:] / torch.arange(13, 21)[:, None])
    assert torch.allclose(pat[:, :12], _cache(m, tokens, [p1])[p1][:, 2, :12])


def test_ablations_compose_and_undo(induction_model):
    m = induction_model
    tokens = heads.default_tokens(m, n=2, length=20)
    before = m(tokens)
    z0, z1 = "blocks.0.attn.hook_z", "blocks.1.attn.hook_z"
    with ablate(m, [(0, 1)]), ablate(m, [(1, 3)]):
        c = _cache(m, tokens, [z0, z1])
        assert (c[z0][:, :, 1] == 0).all() and (c[z1][:, :, 3] == 0).all()
    assert torch.equal(m(tokens), before)


def test_random_heads_and_bad_input(induction_model):
    m = induction_model
    drawn = random_heads(m, 3, exclude=[(1, 0), (1, 1)], seed=4)
    assert len(set(drawn)) == 3 and not {(1, 0), (1, 1)} & set(drawn)
    assert drawn == random_heads(m, 3, exclude=[(1, 0), (1, 1)], seed=4)
    with pytest.raises(ValueError, match="cannot draw"):
        random_heads(m, 7, exclude=[(1, 0), (1, 1)])
    with pytest.raises(ValueError, match="choose one of"):
        with ablate(m, [(1, 0)], "scramble"):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with ablate(m, [(1, 4)]):
            pass
    with pytest.raises(ValueError, match="reference"):
        with ablate(m, [(1, 0)], "mean"):
            pass


def test_induction_heads_are_needed_for_the_repeat(induction_model):
    """The detected induction heads carry the repeat; as many random other heads do not.

    induction-2l's layer 0 holds four redundant previous-token heads (DropHead) and layer 1 two
    induction heads beside two pruned ones, so a random pair can hit a previous-token head
    without breaking the circuit; ablating all of layer 0 does break it.
    """
    m = induction_model
    frame = heads.scores(m, heads.default_tokens(m, n=8), ["induction"])
    detected = [(int(l), int(h)) for l, h in frame[frame.score > 0.3][["layer", "head"]].to_numpy()]
    assert len(detected) == 2 and {l for l, _ in detected} == {1}
    task = tasks.repeated_tokens(64, d_vocab=64, n_ctx=64, seed=11)  # labels: the repeated positions
    for how, floor in (("zero", 4.0), ("query", 3.0)):
        effect = ablation_effect(m, task, detected, how, n_random=15)  # 15 random pairs of the 6 others
        by = effect.groupby("condition")["delta"]
        assert by.mean()["target"] > floor and by.max()["random"] < 0.05 * by.mean()["target"], how
    layer0 = ablation_effect(m, task, [(0, h) for h in range(4)], "zero", n_random=0)
    assert layer0.delta.iloc[1] > 2.0  # the previous-token heads together
