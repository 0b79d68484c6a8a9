"""Retrieval scores (Wu et al. 2024): the decoding mechanics against plain runs, ground truth
on induction-2l (its induction heads copy a repeat's continuation out of the first copy),
recall-2l's retrieval head with query masking, HF models, bad input."""

from __future__ import annotations

import pytest
import torch

from interp import heads, retrieval, tasks
from interp.ablation import ablation_effect
from interp.tasks import TaskBatch
from interp.zoo.recipes import RECALL


def continuation_task(n: int, period: int = 20, shown: int = 8, steps: int = 6, d_vocab: int = 64) -> TaskBatch:
    """[BOS] r r[:shown]: continuing the repeat copies r[shown:shown+steps] from the first copy."""
    g = torch.Generator().manual_seed(3)
    r = torch.randint(1, d_vocab, (n, period), generator=g)
    tokens = torch.cat([torch.zeros(n, 1, dtype=torch.long), r, r[:, :shown]], dim=1)
    span = torch.tensor([[1 + shown, 1 + shown + steps]]).repeat(n, 1)
    return TaskBatch(tokens, torch.full_like(tokens, tasks.IGNORE), {"needle_span": span})


def test_induction_heads_are_retrieval_heads_on_a_repeat(induction_model):
    res = retrieval.retrieval_analysis(induction_model, continuation_task(16), progress=False)
    s = res.scores.set_index(["layer", "head"])["score"]
    assert res.accuracy > 0.6  # the model continues the repeat (greedy, 6 steps)
    frame = heads.scores(induction_model, heads.default_tokens(induction_model, n=8), "induction")
    induction = {(int(l), int(h)) for l, h, v in frame[["layer", "head", "score"]].to_numpy() if v > 0.3}
    # the induction heads look at the token they copy; no other head does
    assert set(res.heads) == induction and all(s[h] > 0.5 for h in induction)
    # the scores are the per-sample hits, aggregated as defined
    per = res.hits.groupby(["sample", "layer", "head"])["hit"].sum().groupby(["layer", "head"]).mean() / 6
    assert torch.allclose(torch.tensor(per.to_numpy()), torch.tensor(res.scores["score"].to_numpy()), atol=1e-12)
    hit = res.hits[res.hits.hit]
    assert (hit.attended_token == hit.generated).all() and hit.in_span.all()


def test_decoding_reads_the_same_attention_and_tokens_as_plain_runs(hf_gpt2):
    task = tasks.needle_retrieval(3, n_ctx=40, needle_len=3, d_vocab=hf_gpt2.cfg.d_vocab, seed=1)
    generated, attended = retrieval.decode_attention(hf_gpt2, task.tokens, 3, batch_size=2, progress=False)
    assert torch.equal(generated, hf_gpt2.generate(task.tokens, 3)[:, -3:])
    seq = torch.cat([task.tokens, generated[:, :2]], dim=1)  # the input of the last step
    _, cache = hf_gpt2.run_with_cache(seq, names=lambda n: n.endswith("hook_pattern"))
    for l in range(hf_gpt2.cfg.n_layers):
        assert torch.equal(attended[:, 2, l], cache[f"blocks.{l}.attn.hook_pattern"][:, :, -1].argmax(-1))
    scores = retrieval.retrieval_scores(hf_gpt2, task, progress=False)
    assert list(scores.columns) == ["layer", "head", "score", "retrieval"] and len(scores) == 8
    assert scores["score"].between(0, 1).all()


def test_recall_model_retrieval_heads_are_the_ones_query_masking_needs(recall_model):
    # one query per prompt: its value then stands only in the key-value list (the needle), not
    # also after an earlier query of the same key
    task = tasks.associative_recall(256, seed=7, **{**RECALL, "n_queries": 1})
    res = retrieval.retrieval_analysis(recall_model, task, progress=False)
    assert res.accuracy > 0.9
    score = res.scores.set_index(["layer", "head"])["score"]
    # an unambiguous split: the retrieval heads score near 1, every other head near 0
    assert res.heads and all(score[h] > 0.8 for h in res.heads)
    assert all(s < 0.1 for h, s in score.items() if h not in res.heads)
    assert {l for l, _ in res.heads} == {1}
    # causal check (Wu et al.): masking their queries at the decoding positions drops recall to
    # chance (1 / n_pairs = 0.25) or below; masking as many other heads does not
    effect = ablation_effect(recall_model, task, res.heads, "query", metric="accuracy", n_random=2)
    clean = effect.loc[effect.condition == "clean", "value"].item()
    target = effect.loc[effect.condition == "target", "value"].item()
    random = effect.loc[effect.condition == "random", "value"]
    assert clean > 0.9 and target < 0.3 and random.min() > clean - 0.1, effect


def test_bad_input(induction_model):
    task = continuation_task(2)
    with pytest.raises(ValueError, match="inside the context"):
        retrieval.retrieval_scores(induction_model, task, needle_span=torch.tensor([[20, 40], [1, 3]]))
    with pytest.raises(ValueError, match="inside the context"):
        retrieval.retrieval_scores(induction_model, task, needle_span=torch.tensor([[5, 5], [1, 3]]))
    with pytest.raises(ValueError, match="needle_span"):
        retrieval.retrieval_scores(induction_model, TaskBatch(task.tokens, task.labels, {}))
    long = TaskBatch(torch.ones(1, 62, dtype=torch.long), torch.ones(1, 62), {"needle_span": torch.tensor([[1, 6]])})
    with pytest.raises(ValueError, match="exceed n_ctx"):
        retrieval.retrieval_scores(induction_model, long)
