"""Steering and function vectors on real text (smollm2-135m): CAA from natural sentiment pairs
of different lengths against a random vector and a prompting baseline; Todd et al.'s
function vectors on held-out antonym queries; the batched indirect effects."""

from __future__ import annotations

import pytest
import torch

from interp import function_vectors as fvs
from interp import runs, steering
from interp.plots.steering import function_vector_curve, tradeoff_plot
from interp.tasks import text


@pytest.fixture(scope="module")
def sentiment_sweep(smollm2):
    task = text.sentiment(smollm2)
    return task, runs.run(
        steering.sweep,
        smollm2,
        task.pairs,
        [20, 24],
        [0, 1, 2, 4],
        task.eval,
        task.behaviour,
        neutral_prompts=task.neutral,
        instruction=task.instruction,
        progress=False,
    )


def test_sentiment_pairs_are_natural_text_of_different_lengths(smollm2):
    pos, neg = text.sentiment(smollm2).pairs.tokens(smollm2)
    assert pos.padded and neg.padded and not torch.equal(pos.lengths, neg.lengths)


def test_caa_raises_sentiment_monotonically_and_the_random_control_does_not(sentiment_sweep):
    task, result = sentiment_sweep
    df, base = result.frame, result.meta["baseline_behaviour"]
    steer = df[df.vector == "steer"]
    best = steer.groupby("layer")["behaviour"].max().idxmax()
    s = steer[steer.layer == best].sort_values("coef")["behaviour"].to_numpy()
    assert s[0] == pytest.approx(base, abs=1e-4) and (s[1:] > s[:-1]).all()  # monotone over the range
    assert s[-1] - base > 5  # nats of log-odds
    r = df[(df.vector == "random") & (df.layer == best)].sort_values("coef")["behaviour"].to_numpy()
    assert (abs(r - base) <= 0.25 * (s - base) + 1e-6).all(), (r, s)  # a small band around base
    prompt = df[df.vector == "prompt"].iloc[0]
    assert prompt["instruction"] == task.instruction and prompt["behaviour"] > base  # the baseline, same frame
    assert {"damage", "neutral_loss"} <= set(df.columns)
    fig = tradeoff_plot(result)
    assert result.meta["metric"] in fig.layout.title.text  # the Result's meta titles the figure
    assert any(t.name == "prompting baseline" for t in fig.data)


@pytest.mark.slow  # about a minute; make test keeps the CAA checks, todd2023 (reproduce stage) the function vector too
def test_function_vector_on_held_out_antonyms(smollm2):
    task = text.function_task(smollm2, "antonym")
    assert task.test and not set(task.test) & set(task.train)
    train = text.function_prompts(smollm2, task, 32, split="train", seed=0)
    test = text.function_prompts(smollm2, task, len(task.test), split="test", seed=1)
    result = runs.run(fvs.layer_sweep, smollm2, train, test, layers=[12, 14], top_k=15, coefs=(2.0,), progress=False)
    df = result.frame
    zero = float(df[df.condition == "zero_shot"]["accuracy"].iloc[0])
    best = result.meta["best"]
    rand = float(df[(df.condition == "random") & (df.layer == best["layer"])]["accuracy"].max())
    assert best["accuracy"] >= zero + 0.4 and best["accuracy"] > rand
    assert float(df[df.condition == "few_shot"]["accuracy"].iloc[0]) >= 0.5
    assert len(result.meta["heads"]) == 15
    fig = function_vector_curve(df)
    assert {t.name for t in fig.data} == {"fv, coef 2", "random, coef 2"} and len(fig.layout.shapes) == 2


def test_indirect_effects_downstream_equal_the_batched_hooks(tiny_llama):
    clean = torch.randint(2, 100, (6, 9), generator=torch.Generator().manual_seed(0))
    corrupt = torch.randint(2, 100, (6, 9), generator=torch.Generator().manual_seed(1))
    answers = torch.randint(2, 100, (6,), generator=torch.Generator().manual_seed(2))
    fast = fvs.head_indirect_effects(tiny_llama, clean, corrupt, answers, progress=False)
    hooks = fvs.head_indirect_effects(tiny_llama, clean, corrupt, answers, engine="hooks", progress=False)
    merged = fast.merge(hooks, on=["layer", "head"], suffixes=("", "_hooks"))
    assert (merged["p_patched"] - merged["p_patched_hooks"]).abs().max() < 1e-6


def test_function_tasks_and_bad_input(smollm2, tmp_path):
    for name in text.FUNCTION_TASKS:
        t = text.function_task(smollm2, name)
        assert len(t.train) >= 4 and len(t.test) >= 2
        for x, y in t.train + t.test:
            assert (
                len(smollm2.encode(" " + x, prepend_bos=False)) == len(smollm2.encode(" " + y, prepend_bos=False)) == 1
            )
    with pytest.raises(ValueError, match="unknown function task"):
        text.function_task(smollm2, "synonym")
    with pytest.raises(ValueError, match="empty"):
        steering.SteeringVector.from_pairs(smollm2, ["I liked it.", ""], ["I hated it.", "Bad."], layer=3)
    with pytest.raises(ValueError, match="one negative per positive"):
        steering.SteeringVector.from_pairs(smollm2, ["I liked it.", "Good."], ["I hated it."], layer=3)
    with pytest.raises(ValueError, match="single tokens.*'marvellousness'"):
        text.check_single_tokens(smollm2, ["great", "marvellousness"], "target words")
    vec = steering.SteeringVector.from_pairs(smollm2, ["I liked it."], ["I hated it."], layer=3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            with vec.apply(smollm2, coef=bad):
                pass
    with pytest.raises(ValueError, match="out of range"):
        steering.SteeringVector.from_pairs(smollm2, ["I liked it."], ["I hated it."], layer=30)
    path = tmp_path / "p.json"
    path.write_text('{"positive": ["I liked it.", "Nice."], "negative": ["I hated it."]}')
    with pytest.raises(ValueError, match="2 positive but 1 negative"):
        steering.read_pairs(path, smollm2)
