"""The recall gap (arora2023) and flip-flop glitches (liu2023): the analyses against exact
identities (the last write a read must retrieve equals the task's stored bit; the attention
read at a read position equals the attention pattern's entry), the retrain path with a handful
of steps, the bad input, and, marked ``reproduce``, the verdicts measured on the shipped models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

import interp
from apps.cli import app
from interp import glitches, reproduce, tasks, zoo
from interp.errors import InputError, Unsupported
from interp.recall_gap import recall_by_pairs
from interp.tasks.synthetic import FFL_BIT0, FFL_R, FFL_W
from interp.zoo.recipes_memory import flipflop_splits, gap_state_floats

#: the verdicts measured on the shipped models (full protocols); see each module's docstring for the rules
EXPECTED = {"arora2023": "partial", "liu2023": "reproduced"}


@pytest.fixture(scope="module")
def flipflop_2l() -> interp.Model:
    return interp.load("flipflop-2l")


# --- the analyses, against exact identities ---------------------------------------------------


def test_the_last_write_holds_the_bit_every_read_asks_for():
    """Liu et al.'s format: every graded label is the bit token after the read, and equals the most
    recent written bit (the token after the last ``w``) and the task's stored bit."""
    batch = tasks.flip_flop_ffl(64, p_ignore=0.8, seed=3)
    t = batch.tokens
    assert t.shape == (64, 64) and (t[:, 0] == FFL_W).all() and (t[:, -2] == FFL_R).all()
    last = glitches.last_writes(t)
    reads = batch.labels != tasks.IGNORE
    seq, pos = reads.nonzero(as_tuple=True)
    assert torch.equal(reads, t == FFL_R) and (last[reads] >= 0).all()
    assert torch.equal(t[seq, pos + 1], batch.labels[reads])  # the label is the bit the sequence reads
    assert torch.equal(t[seq, last[reads]], batch.labels[reads])  # ... which is the last written bit
    assert torch.equal(batch.info["bit"][reads] + FFL_BIT0, batch.labels[reads])
    assert (t[seq, last[reads] - 1] == FFL_W).all()
    assert (last[:, 0] == -1).all() and (last[:, 1] == 1).all()  # the first instruction writes its bit
    # instruction frequencies follow FFL(p): p(i) = p, p(w) = p(r) = (1 - p) / 2 between the fixed ends
    inner = tasks.flip_flop_ffl(4000, p_ignore=0.8, seed=4).tokens[:, 2:-2:2]
    freq = torch.bincount(inner.reshape(-1), minlength=3)[:3].float() / inner.numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.1, 0.8]), atol=0.01)  # w, r, i
    # the default format is unchanged: W0 / W1 / IGN / READ tokens after a BOS
    assert tasks.flip_flop(4, seed=0).tokens[:, 0].eq(tasks.BOS).all()


def test_read_errors_and_attention_at_reads_agree_with_the_model_and_its_patterns(flipflop_2l):
    batch = flipflop_splits(200)["sparse"]
    reads = glitches.read_errors(flipflop_2l, batch)
    assert len(reads) == int((batch.labels != tasks.IGNORE).sum())
    acc = batch.accuracy(flipflop_2l(batch.tokens))
    assert reads["correct"].mean() == pytest.approx(acc, abs=1e-6)
    att = glitches.attention_at_reads(flipflop_2l, batch, reads.head(5))
    assert len(att) == 5 * flipflop_2l.cfg.n_layers * flipflop_2l.cfg.n_heads
    first = reads.iloc[0]
    pattern = interp.attention.attention_patterns(flipflop_2l, batch.tokens[int(first.sequence)])
    for r in att[(att["sequence"] == first.sequence) & (att["pos"] == first.pos)].itertuples():
        assert r.to_last_write == pytest.approx(float(pattern[r.layer, r.head, first.pos, first.last_write]), abs=1e-6)
    row = glitches.read_pattern(flipflop_2l, batch.tokens[int(first.sequence)], int(first.pos))
    sums = row.groupby(["layer", "head"])["attention"].sum()
    assert ((sums - 1).abs() < 1e-5).all()  # a causal attention row sums to 1


def test_recall_by_pairs_counts_every_query_and_state_floats_follow_the_formulas():
    m = interp.load(str(zoo.shipped("gap-attention-16", "gap")))
    frame = recall_by_pairs(m, pairs=[1, 8], n=16)
    assert set(frame["n_pairs"]) == {1, 8} and (frame["queries"] == 12).all()
    assert ((frame["accuracy"] >= 0) & (frame["accuracy"] <= 1)).all()
    assert gap_state_floats("lstm", 32) == 64 and gap_state_floats("gru", 32) == 32
    assert gap_state_floats("mamba", 8) == 2 * 32 * (8 + 3)  # 2 layers x d_inner 32 x (N + conv window 3)
    assert gap_state_floats("attention", 16) == 2 * 2 * 16 * 42  # 2 layers x K, V x d_model x 42 positions


# --- bad input ------------------------------------------------------------------------------------


def test_attention_at_errors_declines_a_recurrent_model_and_bad_input_is_one_line():
    lstm = interp.load("flipflop-lstm-ffl")
    batch = flipflop_splits(50)["dense"]
    reads = glitches.read_errors(lstm, batch)
    with pytest.raises(Unsupported, match="without attention"):
        glitches.attention_at_reads(lstm, batch, reads)
    with pytest.raises(InputError, match="flip-flop"):
        glitches.read_errors(lstm, tasks.associative_recall(4, d_vocab=20, n_pairs=2))
    with pytest.raises(InputError, match="flip-flop"):  # the one-token-per-instruction format
        glitches.read_errors(lstm, tasks.flip_flop(4, length=64))
    with pytest.raises(InputError, match="have 5"):
        glitches.read_errors(interp.load("flipflop-lstm"), batch)
    with pytest.raises(InputError, match="even"):
        tasks.flip_flop_ffl(4, length=63)
    with pytest.raises(InputError, match="pair counts"):
        recall_by_pairs(interp.load(str(zoo.shipped("gap-lstm-16", "gap"))), pairs=[0, 9])
    with pytest.raises(InputError, match="recall-gap task"):
        recall_by_pairs(lstm)
    with pytest.raises(InputError, match="no shipped model"):
        zoo.shipped("gap-lstm-999", "gap")


def test_retrain_is_refused_for_findings_that_evaluate_the_given_model():
    runner = CliRunner()
    out = runner.invoke(app, ["reproduce", "wu2024", "--retrain", "--model", "flipflop-lstm"])
    assert out.exit_code == 2 and "--retrain applies to" in out.output and "arora2023" in out.output
    assert "Traceback" not in out.output
    out = runner.invoke(app, ["reproduce", "liu2023", "--retrain", "--ray", "--model", "flipflop-lstm"])
    assert out.exit_code == 2 and "drop --ray" in out.output
    with pytest.raises(InputError, match="nothing to retrain"):
        reproduce.run("wu2024", "flipflop-lstm", retrain=True)


# --- the retrain path, with a handful of steps -------------------------------------------------------


def test_retrain_trains_the_findings_models_from_their_recipes(monkeypatch):
    """liu2023 with retrain: both models trained now (30 steps each, not the recipes' hundreds), not
    loaded; the shipped weights are untouched; the summary names the models it measured."""
    from interp.reproduce import liu2023
    from interp.zoo import recipes_memory

    monkeypatch.setattr(liu2023, "SEQUENCES", {"in-distribution": 400, "dense": 100, "sparse": 800})  # quick: 1/4

    monkeypatch.setitem(
        recipes_memory.MEMORY_RECIPES,
        "flipflop-2l",
        dataclasses.replace(recipes_memory.MEMORY_RECIPES["flipflop-2l"], steps=30),
    )
    monkeypatch.setitem(
        recipes_memory.MEMORY_RECIPES,
        "flipflop-lstm-ffl",
        dataclasses.replace(recipes_memory.MEMORY_RECIPES["flipflop-lstm-ffl"], steps=30),
    )
    shipped = (zoo.WEIGHTS / "flipflop-2l.safetensors").read_bytes()
    torch.set_num_threads(1)
    result = reproduce.run("liu2023", "flipflop-lstm", quick=True, retrain=True)
    s = result.summary
    assert s["details"]["retrained"] is True and s["model"] == "flipflop-2l, flipflop-lstm-ffl"
    assert s["given_model"] == "flipflop-lstm" and s["verdict"] in reproduce.VERDICTS
    # 30 steps do not learn flip-flop: the retrained transformer errs far more than the shipped one
    rates = result.frame[result.frame["measure"] == "error_rate"].set_index(["model", "split"])
    assert rates.loc[("flipflop-2l", "in-distribution"), "error_rate"] > 0.05
    assert (zoo.WEIGHTS / "flipflop-2l.safetensors").read_bytes() == shipped


def test_trained_models_retrain_with_steps_gives_a_fresh_model():
    from interp.reproduce.trained import models

    fresh = models(["gap-gru-16"], retrain=True, steps=5)["gap-gru-16"]
    assert fresh.card["recipe"]["steps"] == 5 and fresh.card["recipe"]["state_floats"] == 16
    shipped = models(["gap-gru-16"], series="gap")["gap-gru-16"]
    assert shipped.card["recipe"]["steps"] > 5
    assert recall_by_pairs(fresh, pairs=[2], n=8)["queries"].sum() == 96


# --- the verdicts on the shipped models ---------------------------------------------------------------


@pytest.mark.reproduce
@pytest.mark.parametrize("fid", sorted(EXPECTED))
def test_verdict_on_the_shipped_models(fid):
    result = reproduce.run(fid, "flipflop-lstm")  # the given model is not the one measured
    s = result.summary
    assert s["verdict"] == EXPECTED[fid], s["reason"]
    assert s["ours"] is not None and s["ci_low"] <= s["ours"] <= s["ci_high"] and s["n"] >= 2
    assert s["model"] != "flipflop-lstm" and s["details"]["retrained"] is False
    if fid == "arora2023":
        frame = result.frame
        assert len(frame) == 15 * 4 and frame["state_floats"].min() > 0
        attn = frame[(frame["family"] == "attention") & (frame["size"] == 16) & (frame["n_pairs"] == 8)]
        assert float(attn["ci_low"].iloc[0]) >= 0.9
        # one line per model and a guessing line per family panel
        assert len(result.figure.data) == 15 + 5
    else:
        # measured on Liu et al.'s format at 128 tokens: the transformer errs on dense (~11%) and sparse (~15%)
        # sequences, rarely in distribution; its sparse errors come at reads far from the last write; the
        # LSTM never errs; at its errors the read head's attention to the most recent write is diluted
        rates = result.frame[result.frame["measure"] == "error_rate"].set_index(["model", "split"])
        assert rates.loc[("flipflop-2l", "dense"), "ci_low"] > 0.05
        assert rates.loc[("flipflop-2l", "sparse"), "ci_low"] > 0.05
        assert rates.loc[("flipflop-2l", "in-distribution"), "error_rate"] < 0.01
        assert (rates.loc["flipflop-lstm-ffl", "errors"] == 0).all()
        assert s["details"]["error_distance"]["sparse"] > 64
        assert len(result.figure.data) == 2 + 2 + 1  # error bars per model, attention per outcome, one read's row
        d = s["details"]
        assert d["read_head_at_errors"]["to_last_write"]["high"] < d["read_head_at_correct"]["to_last_write"]["low"]
    print(f"{fid}: {s['verdict']}, ours {s['ours']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}], {s['seconds']} s")


@pytest.mark.parametrize("name", ["gap-attention-16", "gap-lstm-64", "gap-mamba-32"])
def test_shipped_recall_gap_cards_record_what_the_weights_reach(name):
    """Each card holds the accuracy its weights give on the recipe's held-out batches (recorded, not
    required: the recall gap is measured), its state size in floats and its training time."""
    from interp.zoo.recipes import get_recipe

    model = interp.load(str(zoo.shipped(name, "gap")))
    card = model.card
    with torch.no_grad():
        metrics = get_recipe(name).evaluate(model)
    for key, value in card["metrics"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key
    family, size = name.split("-")[1], int(name.split("-")[2])
    assert card["recipe"]["state_floats"] == gap_state_floats(family, size) and card["train_seconds"] > 0
