"""The shipped zoo: every model meets the metric on its card, and training works from scratch."""

from __future__ import annotations

import pytest
import torch

import interp
from interp import heads, zoo
from interp.training import meets_card, train
from interp.zoo.recipes import all_recipes, get_recipe

EXPECTED = {"induction-2l", "recall-2l", "steer-2l", "flipflop-lstm", "recall-gru", "recall-ssm"}


def test_zoo_lists_every_recipe():
    assert EXPECTED <= set(zoo.trained_names())
    assert set(zoo.trained_names()) <= set(all_recipes())
    assert "smollm2-135m" in zoo.names()
    table = zoo.available()
    assert {"name", "family", "metric", "value", "threshold", "train_seconds"} <= set(table.columns)
    assert set(table.loc[table.name.isin(["recall-gru", "flipflop-lstm"]), "family"]) == {"rnn"}
    assert set(table.loc[table.name == "recall-ssm", "family"]) == {"ssm"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_weights_meet_their_card(name):
    model = interp.load(name)
    card = zoo.card(name)
    with torch.no_grad():
        metrics = get_recipe(name).evaluate(model)
    assert meets_card(card, metrics), (name, metrics, card["metric"])
    # the card records the number actually reached on the same held-out batches
    assert metrics[card["metric"]["name"]] == pytest.approx(card["metrics"][card["metric"]["name"]], abs=1e-4)


def test_recipe_retrains_from_scratch(tmp_path):
    """flipflop-lstm trains in seconds: the full recipe from scratch must meet its card."""
    model, card = train("flipflop-lstm", out=tmp_path / "ff", progress=False)
    assert meets_card(card), card["metrics"]
    again = interp.load(tmp_path / "ff.safetensors")
    tokens = get_recipe("flipflop-lstm").make_batch(4, 123).tokens
    assert torch.equal(again(tokens), model(tokens))
    for key in ("config", "recipe", "seed", "metrics", "train_seconds", "vocab"):
        assert key in card


def test_training_is_reproducible():
    _, a = train("steer-2l", steps=5, progress=False)
    _, b = train("steer-2l", steps=5, progress=False)
    assert a["metrics"] == b["metrics"]


def test_unknown_recipe():
    with pytest.raises(ValueError, match="available"):
        train("nope")


def test_head_dropout_and_sparsity_shape_induction_2l():
    """DropHead zeroes whole heads per sequence; the sparsity penalty left layer 1 of the shipped
    induction-2l with two live heads (the induction heads) and two pruned ones."""
    from dataclasses import replace

    from interp.training import _head_dropout_hooks, head_sparsity_penalty

    ((_, hook),) = _head_dropout_hooks({0: 0.5})
    torch.manual_seed(0)
    out = hook(torch.ones(64, 5, 4, 16), None)
    per_head = out[:, 0, :, 0]
    assert set(per_head.unique().tolist()) == {0.0, 2.0} and (out == per_head[:, None, :, None]).all()
    model = interp.load("induction-2l")
    module = model.module
    live = module.blocks[1].attn.o.weight.view(64, 4, 16).norm(dim=(0, 2))  # each head's W_O norm
    # the heads that kept their output are the ones detection calls induction heads
    score = heads.scores(model, heads.default_tokens(model), ["induction"]).query("layer == 1").set_index("head")
    induction = sorted(score.index[score["score"] > 0.2])  # chance is ~0.02
    others = sorted(set(range(4)) - set(induction))
    assert len(induction) == 2 and (live[others] < 0.05).all() and (live[induction] > 1.0).all()
    penalty = float(head_sparsity_penalty(module, {1: 1.0}, eps=0.0))
    assert penalty > 0 and float(head_sparsity_penalty(module, {1: 2.0}, eps=0.0)) == pytest.approx(2 * penalty)
    _, card = train(replace(get_recipe("induction-2l"), sparsity_from=0), steps=3, progress=False)
    assert card["recipe"]["head_dropout"] == {0: 0.25} and card["recipe"]["head_sparsity"] == {1: 0.05}
