"""Retrieval heads (Wu et al. 2024): heads that copy an answer out of a needle in the context.

Definition (Wu et al.'s, as this project measures it): greedily decode an answer that should be copied from
a needle span ``[s, e)`` of the prompt; at each step take each head's most-attended
position ``i`` (arg-max of the last query row of its pattern); if ``s <= i < e`` and the
token just generated equals the context token at ``i``, the head earns ``1 / (e - s)``.
A head's score is the mean over prompts of its earnings (so in [0, 1]); a head scoring
above ``RETRIEVAL_THRESHOLD`` (0.1) is a retrieval head.

Decoding continues from the key-value cache where the model has one (the prompt runs once,
then each step feeds the new token and reads its attention row); without one it
recomputes the sequence per step (see :mod:`interp.decoding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.decoding import Step, greedy
from interp.errors import InputError
from interp.model import Model
from interp.runs import analysis, record
from interp.tasks import TaskBatch

RETRIEVAL_THRESHOLD = 0.1


@dataclass
class RetrievalResult:
    """What :func:`retrieval_analysis` found.

    scores: ``DataFrame[layer, head, score, retrieval]`` (score in [0, 1]; retrieval =
    score > threshold).  hits: ``DataFrame[sample, step, layer, head, attended_pos,
    attended_token, generated, in_span, hit]``, one row per decoding step and head.
    generated: ``[n, n_steps]`` greedy tokens.  accuracy: fraction of the needle tokens
    the model reproduced (exact token at each step).
    """

    scores: pd.DataFrame
    hits: pd.DataFrame
    generated: torch.Tensor
    accuracy: float
    threshold: float
    per_sample: torch.Tensor | None = None  # [n, n_layers, n_heads] each prompt's score (for intervals over prompts)

    @property
    def heads(self) -> list[tuple[int, int]]:
        """The retrieval heads (score > threshold), best first."""
        top = self.scores[self.scores["retrieval"]].sort_values("score", ascending=False)
        return [(int(l), int(h)) for l, h in zip(top["layer"], top["head"])]


def needle_spans(task: TaskBatch, needle_span: torch.Tensor | None = None) -> torch.Tensor:
    """The validated ``[n, 2]`` needle spans (start, end) of a task, inside the prompt."""
    span = needle_span if needle_span is not None else task.info.get("needle_span")
    if span is None:
        raise InputError(
            "the task has no info['needle_span'] [n, 2]: use interp.tasks.needle_retrieval or "
            "associative_recall, or pass needle_span="
        )
    span = torch.as_tensor(span, dtype=torch.long).reshape(-1, 2).cpu()
    n, length = task.tokens.shape
    if span.shape[0] != n:
        raise InputError(f"{span.shape[0]} needle spans for {n} prompts")
    s, e = span[:, 0], span[:, 1]
    bad = (s < 0) | (e > length) | (e <= s)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise InputError(
            f"needle span {tuple(span[i].tolist())} of prompt {i} is not a non-empty span inside "
            f"the context [0, {length})"
        )
    return span


@torch.no_grad()
def decode_attention(
    model: Model,
    tokens,
    n_steps: int,
    *,
    batch_size: int = 8,
    use_cache: bool = True,
    progress: bool = True,
    prefixes: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding that records where every head looks.

    Returns ``generated`` ``[n, n_steps]`` and ``attended`` ``[n, n_steps, n_layers,
    n_heads]``: the arg-max key position (absolute) of each head's last query row at each
    step (the row that produced that step's token).  Active hooks (e.g. ablations) apply.
    Decoding continues from the key-value cache where the model has one, reading only the
    new token's attention (:func:`interp.decoding.greedy`; ``prefixes``: see
    :func:`interp.decoding.decode`).
    """
    model.require_attention("retrieval scores")
    batch = model.tokenize(tokens)
    if n_steps < 1:
        raise InputError(f"n_steps must be >= 1, got {n_steps}")
    L = model.cfg.n_layers
    # -1 in layers without attention (a hybrid's state-space layers)
    # kept on the model's device (no host round trip per layer and step), moved once at the end
    attended = torch.full((len(batch), n_steps, L, model.cfg.n_heads), -1, dtype=torch.long, device=model.device)
    step = Step()

    def reader(layer: int):
        def read(pattern: torch.Tensor, hook) -> None:
            # the key axis in absolute positions (a sliding-window layer's cache holds the last keys only)
            keys = model.context.key_positions(pattern.shape[-1], pattern.shape[-2], pattern.device)
            rows = step.rows.to(attended.device)
            attended[rows, step.index, layer] = keys[pattern[:, :, -1, :].argmax(-1)].to(attended.device)

        return read

    hooks = [(model.site("pattern", l), reader(l)) for l in model.cfg.attn_layers or ()]
    generated = greedy(
        model,
        batch,
        n_steps,
        use_cache=use_cache,
        hooks=hooks,
        step=step,
        batch_size=batch_size,
        progress=progress,
        prefixes=prefixes,
    )
    return generated, attended.cpu()


def retrieval_analysis(
    model: Model,
    task: TaskBatch,
    *,
    threshold: float = RETRIEVAL_THRESHOLD,
    needle_span: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = True,
    prefixes: dict | None = None,
) -> RetrievalResult:
    """Retrieval scores with the per-step hits behind them (see the module docstring;
    ``prefixes``: the prompts' shared cache, :func:`interp.decoding.decode`).

    task: prompts ``tokens [n, pos]`` whose answer is to be copied from
    ``info['needle_span']`` ([n, 2], start and end in the prompt), e.g.
    :func:`interp.tasks.needle_retrieval` (a needle of several tokens) or
    :func:`interp.tasks.associative_recall` (the last query's value).  Each prompt is
    decoded for ``e - s`` steps.
    """
    span = needle_spans(task, needle_span)
    batch = model.tokenize(task.batch())
    steps = span[:, 1] - span[:, 0]  # [n]
    generated, attended = decode_attention(
        model, batch, int(steps.max()), batch_size=batch_size, progress=progress, prefixes=prefixes
    )
    n, T, L, H = attended.shape
    ctx = batch.tokens.cpu()
    s, e = span[:, 0, None, None, None], span[:, 1, None, None, None]
    in_span = (attended >= s) & (attended < e)
    att_tok = ctx.gather(1, attended.clamp(max=ctx.shape[1] - 1).reshape(n, -1)).reshape(n, T, L, H)
    prompt = attended < batch.lengths[:, None, None, None]
    att_tok = torch.where(prompt, att_tok, -1)  # attended a generated token
    live = torch.arange(T)[None, :] < steps[:, None]  # step t exists for prompt b
    hit = in_span & (att_tok == generated[:, :, None, None]) & live[:, :, None, None]
    per_sample = hit.sum(1).double() / steps[:, None, None].double()  # [n, L, H]
    score = per_sample.mean(0)
    scores = pd.DataFrame(
        [
            {"layer": l, "head": h, "score": float(score[l, h]), "retrieval": bool(score[l, h] > threshold)}
            for l, h in model.heads()
        ]
    )
    b, t, l, h = torch.meshgrid(torch.arange(n), torch.arange(T), torch.arange(L), torch.arange(H), indexing="ij")
    has_attn = torch.zeros(L, dtype=torch.bool)
    has_attn[list(model.cfg.attn_layers or ())] = True
    keep = live[:, :, None, None].expand(n, T, L, H) & has_attn[None, None, :, None]
    hits = pd.DataFrame(
        {
            "sample": b[keep],
            "step": t[keep],
            "layer": l[keep],
            "head": h[keep],
            "attended_pos": attended[keep],
            "attended_token": att_tok[keep],
            "generated": generated[:, :, None, None].expand(n, T, L, H)[keep],
            "in_span": in_span[keep],
            "hit": hit[keep],
        }
    )
    target = _needle_tokens(ctx, span, T)
    correct = (generated == target) & live
    return RetrievalResult(scores, hits, generated, float(correct.sum() / live.sum()), threshold, per_sample.float())


def retrieval_scores(
    model: Model,
    task: TaskBatch,
    *,
    threshold: float = RETRIEVAL_THRESHOLD,
    needle_span: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """``DataFrame[layer, head, score, retrieval]``: Wu et al. retrieval score of every head
    (see :func:`retrieval_analysis`, which also returns the per-sample hits)."""
    return retrieval_analysis(
        model, task, threshold=threshold, needle_span=needle_span, batch_size=batch_size, progress=progress
    ).scores


def _needle_tokens(ctx: torch.Tensor, span: torch.Tensor, T: int) -> torch.Tensor:
    """[n, T] the tokens to copy (needle content; -1 past each needle's end)."""
    idx = span[:, :1] + torch.arange(T)[None]
    target = ctx.gather(1, idx.clamp(max=ctx.shape[1] - 1))
    return torch.where(idx < span[:, 1:], target, -1)


def answer_accuracy(
    model: Model,
    task: TaskBatch,
    *,
    needle_span: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = False,
    prefixes: dict | None = None,
) -> float:
    """Fraction of needle tokens reproduced by greedy decoding of the task's prompts
    (active hooks, e.g. ``ablate(..., how="query", positions=From(prompt lengths - 1))``, apply;
    ``prefixes``: the prompts' shared cache, see :func:`interp.decoding.decode`)."""
    span = needle_spans(task, needle_span)
    steps = span[:, 1] - span[:, 0]
    T = int(steps.max())
    batch = model.tokenize(task.batch())
    generated = greedy(model, batch, T, batch_size=batch_size, progress=progress, prefixes=prefixes)
    live = torch.arange(T)[None, :] < steps[:, None]
    correct = (generated == _needle_tokens(batch.tokens.cpu(), span, T)) & live
    return float(correct.sum() / live.sum())


# --- Wu et al.'s experiment ------------------------------------------------------------------


@dataclass
class RetrievalExperiment:
    """Wu et al. (2024) on one prompt set: the retrieval score of every head, their sparsity,
    and query-masking the top-k retrieval heads against k random heads during decoding.

    scores: ``DataFrame[layer, head, score, retrieval]``.  masking: the frame of
    :func:`interp.ablation.ablation_effect` (``condition`` clean / target / random, one row per
    random draw, ``value`` = answer accuracy, ``delta`` against clean).  sparsity: the share of
    heads scoring above ``threshold``.  heads: the top-k heads masked.
    """

    scores: pd.DataFrame
    masking: pd.DataFrame
    sparsity: float
    threshold: float
    heads: list[tuple[int, int]]
    accuracy: float
    per_sample: torch.Tensor | None = None  # [n, n_layers, n_heads] each prompt's retrieval score


@analysis("retrieval", figure="interp.plots.heads.head_heatmap", to_frame=lambda e, meta: e.scores)
def retrieval_experiment(
    model: Model,
    task: TaskBatch,
    *,
    k: int = 5,
    n_random: int = 3,
    seed: int = 0,
    threshold: float = RETRIEVAL_THRESHOLD,
    batch_size: int = 8,
    progress: bool = True,
    control_outside: int | None = None,
) -> RetrievalExperiment:
    """Retrieval scores, sparsity and the masking experiment in one call (see
    :class:`RetrievalExperiment`).  Masking zeroes a head's query from each prompt's last token
    on (decoding only: the prompt itself is read unmasked), as Wu et al.; the control masks
    ``k`` heads drawn at random from the other heads, ``n_random`` times.  control_outside:
    draw the control heads outside the ``control_outside`` best-scoring heads (Wu et al.'s code
    draws them outside the top 100 of Llama-2-7B's 1024); default: outside the ``k`` masked."""
    from interp import interventions as I
    from interp.ablation import ablation_effect

    model.require_attention("retrieval heads")
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_heads:
        raise InputError(f"k must be an int in [1, {n_heads}] (the model's heads), got {k!r}")
    # masking starts at each prompt's last token, so the analysis and every masking condition
    # share the cache of the prompts without it (computed once)
    prefixes: dict | None = {} if model.supports_cache else None
    analysis = retrieval_analysis(
        model, task, threshold=threshold, batch_size=batch_size, progress=progress, prefixes=prefixes
    )
    top = analysis.scores.nlargest(k, "score")
    heads = [(int(l), int(h)) for l, h in zip(top["layer"], top["head"])]
    exclude: list[tuple[int, int]] = []
    if control_outside is not None:
        if (
            isinstance(control_outside, bool)
            or not isinstance(control_outside, int)
            or not 0 <= control_outside < n_heads
        ):
            raise InputError(f"control_outside must be an int in [0, {n_heads}), got {control_outside!r}")
        outside = analysis.scores.nlargest(control_outside, "score")
        exclude = [(int(l), int(h)) for l, h in zip(outside["layer"], outside["head"])]

    def accuracy(m: Model, t: TaskBatch) -> float:
        return answer_accuracy(m, t, batch_size=batch_size, prefixes=prefixes)

    accuracy.__name__ = "answer_accuracy"  # the frame's metric column, as with metric="answer_accuracy"
    masking = ablation_effect(
        model,
        task,
        heads,
        "query",
        metric=accuracy,
        positions=I.From(task.batch().last),
        n_random=n_random,
        seed=seed,
        random_exclude=exclude,
    )
    out = RetrievalExperiment(
        analysis.scores,
        masking,
        float(analysis.scores["retrieval"].mean()),
        threshold,
        heads,
        analysis.accuracy,
        analysis.per_sample,
    )
    # a Result's frame is the scores; the rest of the experiment is its meta
    record(masking=masking, sparsity=out.sparsity, threshold=threshold, heads=heads, accuracy=out.accuracy)
    return out


@analysis("niah_grid", figure="interp.plots.retrieval.niah_heatmap")
def niah_grid(
    model: Model,
    context_lengths,
    depths,
    *,
    n: int = 4,
    heads: list[tuple[int, int]] | None = None,
    n_random: int = 0,
    task: str = "needle_haystack",
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """The needle-in-a-haystack picture: greedy answer accuracy per context length x needle
    depth, with ``n`` prompts a cell; with ``heads``, also with those heads query-masked during
    decoding, and with ``n_random`` > 0 the control: as many heads drawn at random from the
    others, masked the same way (draw ``i`` seeded ``seed + i``).
    ``DataFrame[context_length, depth, condition ("none" | "masked" | "random"), draw, accuracy, n]``.
    task: "needle_haystack" or "passkey" (:mod:`interp.tasks.text`)."""
    from interp.ablation import ablate, random_heads
    from interp.interventions import From
    from interp.tasks import text

    build = {"needle_haystack": text.needle_haystack, "passkey": text.passkey}.get(task)
    if build is None:
        raise InputError(f"task must be 'needle_haystack' or 'passkey', got {task!r}")
    lengths, depths = [int(c) for c in context_lengths], [float(d) for d in depths]
    if not lengths or not depths:
        raise InputError("give at least one context length and one depth")
    too_long = [c for c in lengths if c > model.cfg.n_ctx]
    if too_long:
        raise InputError(f"context lengths {too_long} exceed the model's context n_ctx={model.cfg.n_ctx}")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise InputError(f"n_random must be an int >= 0, got {n_random!r}")
    if n_random and not heads:
        raise InputError("n_random draws controls for masked heads: give heads= too")
    rows = []
    conditions: list[tuple[str, int | None, list[tuple[int, int]]]] = [("none", None, [])]
    if heads:
        conditions.append(("masked", None, list(heads)))
        conditions += [
            ("random", i, random_heads(model, len(heads), exclude=heads, seed=seed + i)) for i in range(n_random)
        ]
    bar = tqdm(total=len(lengths) * len(depths) * len(conditions), desc="needle grid", disable=not progress)
    for c in lengths:
        for d in depths:
            batch = build(model, n, context_length=c, depth=d, seed=seed)
            for cond, draw, masked in conditions:
                if not masked:
                    acc = answer_accuracy(model, batch)
                else:
                    with ablate(model, masked, "query", positions=From(batch.batch().last)):
                        acc = answer_accuracy(model, batch)
                rows.append({"context_length": c, "depth": d, "condition": cond, "draw": draw, "accuracy": acc, "n": n})
                bar.update()
    bar.close()
    return pd.DataFrame(rows)
