"""The shipped zoo: every model meets the metric on its card, and training works from scratch."""

from __future__ import annotations

import pytest
import torch

import interp
from interp import zoo
from interp.training import meets_card, train
from interp.zoo.recipes import RECIPES, get_recipe

EXPECTED = {"induction-2l", "recall-2l", "steer-2l", "flipflop-lstm", "recall-gru", "recall-ssm"}


def test_zoo_lists_every_recipe():
    assert EXPECTED <= set(zoo.names())
    assert set(zoo.names()) <= set(RECIPES)
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
