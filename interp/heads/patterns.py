"""Pattern-based head scores: previous-token, duplicate-token, induction (TransformerLens
``head_detector`` patterns and its "mul" score), prefix matching, attention to the first
token, and custom patterns.

Every score is reduced inside a hook on each layer's attention pattern as the layer runs
and the pattern is dropped, so no ``[batch, head, pos, pos]`` cache is kept: memory stays
at one layer's pattern, which the forward makes anyway.

Definitions: previous-token / duplicate-token / induction use TL's "mul" score
sum(A*P)/sum(A) (so a perfect induction head on [BOS] r r scores about 0.5), averaged over
the sequences of the batch exactly as ``detect_head`` averages over a list of prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp import executor as executors
from interp.errors import InputError
from interp.executor import Executor
from interp.model import Model
from interp.runs import analysis
from interp.tasks import TaskBatch, repeated_tokens
from interp.tokens import TokenBatch

TL_KINDS = ("previous_token", "duplicate_token", "induction")
PATTERN_KINDS = TL_KINDS + ("prefix_matching", "sink")
KINDS = PATTERN_KINDS + ("copying",)  # copying is read from the weights, not the tokens
SINK_THRESHOLD = 0.3  # a sink head pays >= 0.3 of its attention to position 0 (Xiao et al. 2023 see most of it there)

PatternFn = Callable[[torch.Tensor], torch.Tensor]  # tokens [pos] -> detection pattern [pos, pos]


# --- tokens ---------------------------------------------------------------------------------


def bos_id(model: Model) -> int:
    """The token the model's sequences start with (the tokenizer's BOS, else 0)."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None and getattr(tok, "bos_token_id", None) is not None:
        return int(tok.bos_token_id)
    return 0


def default_tokens(model: Model, n: int = 8, length: int | None = None, seed: int = 0) -> torch.Tensor:
    """``[n, length]`` tokens ``[BOS] r r`` with ``r`` random (uniform over the vocabulary
    except BOS): the standard probe for previous-token, induction and prefix-matching heads.
    ``length`` defaults to ``min(n_ctx, 128)``.
    """
    length = min(model.cfg.n_ctx, 128) if length is None else int(length)
    if not 5 <= length <= model.cfg.n_ctx:
        raise InputError(f"length must be in [5, n_ctx={model.cfg.n_ctx}] so that a segment repeats, got {length}")
    batch = repeated_tokens(n, d_vocab=model.cfg.d_vocab, n_ctx=length, period=(length - 1) // 2, seed=seed)
    tokens = batch.tokens
    bos = bos_id(model)
    if bos != 0:  # repeated_tokens draws from [1, d_vocab) with BOS = 0: swap the roles of 0 and bos
        body = tokens[:, 1:]
        tokens[:, 1:] = torch.where(body == bos, torch.zeros_like(body), body)
        tokens[:, 0] = bos
    return tokens


# --- detection patterns as index pairs ------------------------------------------------------
# Built-in patterns are sparse 0/1 matrices, so they are kept as (batch, q, k) index
# triples: the score numerator is then a gather of a few entries of each pattern.


def _duplicate_pairs(
    tokens: torch.Tensor, lengths: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, q, k) with k < q < lengths[b] and tokens[b, k] == tokens[b, q]; built in query
    chunks so memory stays ``chunk * pos`` booleans even for long contexts."""
    B, P = tokens.shape
    out = []
    keys = torch.arange(P, device=tokens.device)
    lengths = lengths.to(tokens.device)
    for q0 in range(0, P, chunk):
        q = torch.arange(q0, min(P, q0 + chunk), device=tokens.device)
        eq = (tokens[:, q, None] == tokens[:, None, :]) & (keys[None, None, :] < q[None, :, None])
        eq &= (q[None, :] < lengths[:, None])[:, :, None]
        b, qi, k = eq.nonzero(as_tuple=True)
        out.append((b, qi + q0, k))
    return tuple(torch.cat(parts) for parts in zip(*out))  # type: ignore[return-value]


def _has_repeats(tokens: torch.Tensor, lengths: torch.Tensor) -> bool:
    """Whether some real token occurs twice in its sequence; ``[batch, pos]`` memory (sorted),
    unlike :func:`_duplicate_pairs`, so a whole batch can be checked up front."""
    P = tokens.shape[1]
    pos = torch.arange(P, device=tokens.device)
    padded = pos[None] >= lengths.to(tokens.device)[:, None]
    ids = torch.where(padded, -1 - pos[None], tokens)  # padding: distinct negative ids
    ids = ids.sort(dim=1).values
    return bool((ids[:, 1:] == ids[:, :-1]).any())


def _index_patterns(
    tokens: torch.Tensor, kinds: Sequence[str], lengths: torch.Tensor
) -> dict[str, tuple[torch.Tensor, ...]]:
    B, P = tokens.shape
    out: dict[str, tuple[torch.Tensor, ...]] = {}
    if "previous_token" in kinds:
        q = torch.arange(1, P, device=tokens.device).repeat(B)
        b = torch.arange(B, device=tokens.device).repeat_interleave(P - 1)
        inside = q < lengths.to(tokens.device)[b]
        out["previous_token"] = (b[inside], q[inside], q[inside] - 1)
    if {"duplicate_token", "induction", "prefix_matching"} & set(kinds):
        b, q, k = _duplicate_pairs(tokens, lengths)
        out["duplicate_token"] = (b, q, k)
        # induction = duplicate pattern shifted one column right (TL): attend to the token
        # after an earlier copy of the current token; k + 1 <= q always holds
        out["induction"] = (b, q, k + 1)
    return out


def _check_kinds(kinds: Sequence[str] | str | None, patterns: Mapping[str, PatternFn] | None) -> list[str]:
    patterns = dict(patterns or {})
    clash = set(patterns) & set(KINDS)
    if clash:
        raise InputError(f"custom pattern names {sorted(clash)} clash with built-in kinds; rename them")
    valid = list(KINDS) + list(patterns)
    if kinds is None:
        return valid
    if isinstance(kinds, str):
        kinds = [kinds]
    bad = [k for k in kinds if k not in valid]
    if bad:
        raise InputError(
            f"unknown head kind(s) {bad}; valid kinds: {valid} "
            "(custom kinds come from patterns={name: fn(tokens) -> [pos, pos] pattern})"
        )
    if not kinds:
        raise InputError(f"no kinds asked for; valid kinds: {valid}")
    return list(dict.fromkeys(kinds))


def _custom_pattern(fn: PatternFn, name: str, row: torch.Tensor) -> torch.Tensor:
    P = row.shape[0]
    pat = torch.as_tensor(fn(row.cpu())).to(row.device, torch.float32)
    if pat.shape != (P, P):
        raise InputError(f"pattern {name!r} must return a [pos, pos] = [{P}, {P}] matrix, got {tuple(pat.shape)}")
    if torch.triu(pat, 1).abs().sum() > 0:
        raise InputError(f"pattern {name!r} is not lower triangular: a query cannot attend to later positions")
    return pat


# --- pattern scores -------------------------------------------------------------------------


@analysis("head_scores", figure="interp.plots.heads.head_heatmap")
def scores(
    model: Model,
    tokens: torch.Tensor | TokenBatch | TaskBatch | None = None,
    kinds: Sequence[str] | str | None = None,
    *,
    patterns: Mapping[str, PatternFn] | None = None,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    executor: str | Executor | None = None,
) -> pd.DataFrame:
    """Head scores ``DataFrame[layer, head, kind, score]`` (one row per head and kind).

    tokens: ``[batch, pos]``, a padded :class:`~interp.tokens.TokenBatch` (each row scored
    on its real tokens only) or a TaskBatch; default :func:`default_tokens` ([BOS] r r).
    kinds: any of ``KINDS`` plus the names in ``patterns`` (default: all of them).

    - previous_token / duplicate_token / induction: TransformerLens ``detect_head``
      patterns and "mul" score sum(A*P)/sum(A) per sequence, averaged over the batch
      (equal to ``detect_head`` on the same tokens).  ``exclude_bos`` /
      ``exclude_current_token`` drop column 0 / the diagonal from A as detect_head does.
    - prefix_matching (Olsson et al. 2022): mean over the query positions whose token
      occurred before of the attention to the positions right after those earlier
      occurrences (1.0 = perfect); needs repeated tokens.
    - sink: mean attention to position 0 over query positions 1.. (position 0 can only
      attend to itself); a sink head has >= ``SINK_THRESHOLD``.
    - copying: :func:`interp.heads.copying_scores` (from the weights, in [-1, 1]; needs no tokens).
    - a custom kind: ``patterns[name](tokens[pos]) -> [pos, pos]`` lower-triangular
      detection pattern, scored like the TL kinds.

    Pattern scores are fractions of attention (unitless, in [0, 1]).  One forward per chunk
    of ``batch_size`` sequences (default: as many as fit the memory budget, see
    :mod:`interp.memory`); active hooks (ablations...) apply.

    executor: ``"local"`` (default) or ``"ray"``: the chunks of sequences are scored on a Ray
    cluster's workers (:mod:`interp.executor`; the model loaded by name or path, no active
    hooks) and their sums added in the chunks' order, so the scores equal the local run's with
    the same ``batch_size`` (by default a Ray run uses chunks small enough to keep every worker
    busy, which changes only the float rounding).
    """
    from interp.heads.composition import copying_scores
    from interp.memory import rows_per_chunk

    model.require_attention("head scores")
    kinds = _check_kinds(kinds, patterns)
    patterns = dict(patterns or {})
    copying = copying_scores(model).assign(kind="copying") if "copying" in kinds else None
    kinds = [k for k in kinds if k != "copying"]
    if not kinds:
        assert copying is not None  # _check_kinds never returns an empty list, so "copying" was asked for
        return copying[["layer", "head", "kind", "score"]]
    if tokens is None:
        tokens = default_tokens(model)
    if isinstance(tokens, TaskBatch):
        tokens = tokens.tokens
    batch = model.tokenize(tokens)
    B, P = batch.tokens.shape
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if int(batch.lengths.min()) < 2:
        raise InputError(f"head scores need sequences of at least 2 positions, got {int(batch.lengths.min())}")
    if "prefix_matching" in kinds and not _has_repeats(batch.tokens, batch.lengths):
        raise InputError(
            "prefix_matching needs repeated tokens (a token that occurs twice in a sequence); "
            "these sequences have none: use e.g. interp.heads.default_tokens(model) ([BOS] r r)"
        )
    sums = {k: torch.zeros(L, H, dtype=torch.float64) for k in kinds}
    counts = {k: 0 for k in kinds}
    # one layer's pattern and its softmax temporaries: ~4 [heads, pos, pos] float32 arrays per row
    step = rows_per_chunk(4 * H * P * P * 4, "head scores", given=batch_size, device=model.device)
    ex = executors.get(executor)
    if not isinstance(ex, executors.Local) and batch_size is None:  # enough chunks to keep every worker busy
        step = max(1, min(step, -(-B // ex.n_chunks(B))))
    jobs = [
        dict(
            batch=batch.select(torch.arange(start, min(B, start + step))),
            kinds=kinds,
            patterns=patterns,
            exclude_bos=exclude_bos,
            exclude_current_token=exclude_current_token,
        )
        for start in range(0, B, step)
    ]
    if isinstance(ex, executors.Local):
        n_attn = len(model.cfg.attn_layers or ())
        with tqdm(total=len(jobs) * n_attn, desc="head scores", unit="layer", disable=not progress, leave=False) as bar:
            parts = [_chunk_sums(model, job, bar) for job in jobs]
    else:
        if patterns:
            raise InputError(
                f"executor={ex.name!r} ships the built-in kinds to its workers; custom patterns run locally"
            )
        jobs = [{**job, "batch": _cpu(cast(TokenBatch, job["batch"]))} for job in jobs]
        parts = ex.map(
            _chunk_sums, model, jobs, desc=f"head scores ({ex.name})", progress=progress, size=lambda j: len(j["batch"])
        )
    for part_sums, part_counts in parts:  # in the chunks' order, whichever executor ran them
        for k in kinds:
            sums[k] += part_sums[k]
            counts[k] += part_counts[k]
    rows = []
    for kind in kinds:
        if counts[kind] == 0:  # only prefix_matching can lack rows; it was checked above
            raise InputError(f"no sequence has positions that {kind} can score")
        mean = sums[kind] / counts[kind]
        rows += [{"layer": l, "head": h, "kind": kind, "score": float(mean[l, h])} for l, h in model.heads()]
    frame = pd.DataFrame(rows)
    if copying is not None:
        frame = pd.concat([frame, copying[["layer", "head", "kind", "score"]]], ignore_index=True)
    return frame


def _cpu(batch: TokenBatch) -> TokenBatch:
    return TokenBatch(batch.tokens.cpu(), batch.lengths.cpu(), batch.pad_id)


def _chunk_sums(model: Model, job: dict, bar=None) -> tuple[dict, dict]:
    """The score sums ``{kind: [layers, heads] float64}`` (on the CPU) and row counts of one chunk
    of sequences (``job``: ``batch``, ``kinds``, ``patterns``, ``exclude_bos``,
    ``exclude_current_token``); an executor's task."""
    batch = model.tokenize(job["batch"])
    L, H = model.cfg.n_layers, model.cfg.n_heads
    sums = {k: torch.zeros(L, H, dtype=torch.float64, device=batch.tokens.device) for k in job["kinds"]}
    counts = {k: 0 for k in job["kinds"]}
    _score_chunk(
        model,
        batch,
        job["kinds"],
        job["patterns"],
        sums,
        counts,
        job["exclude_bos"],
        job["exclude_current_token"],
        bar,
    )
    return {k: v.cpu() for k, v in sums.items()}, counts


def _score_chunk(
    model: Model,
    batch: TokenBatch,
    kinds: list[str],
    patterns: dict,
    sums: dict,
    counts: dict,
    exclude_bos: bool,
    exclude_current: bool,
    bar,
) -> None:
    tokens, lengths = batch.tokens, batch.lengths.to(batch.tokens.device)
    B, P = tokens.shape
    real = torch.arange(P, device=tokens.device)[None] < lengths[:, None]  # [B, P] real query rows
    index = _index_patterns(tokens, kinds, lengths)
    mul_kinds = [k for k in kinds if k in TL_KINDS or k in patterns]

    def keep(b, q, k):  # detect_head zeroes column 0 / the diagonal of A before scoring
        m = torch.ones_like(q, dtype=torch.bool)
        if exclude_bos:
            m &= k != 0
        if exclude_current:
            m &= k != q
        return b[m], q[m], k[m]

    mul_index = {k: keep(*index[k]) for k in mul_kinds if k in index}
    dense = {}
    for name in mul_kinds:
        if name in patterns:
            pat = torch.zeros(B, P, P, device=tokens.device)
            for i, row in enumerate(batch.rows()):
                n = len(row)
                pat[i, :n, :n] = _custom_pattern(patterns[name], name, row)
            if exclude_bos:
                pat[:, :, 0] = 0
            if exclude_current:
                pat.diagonal(dim1=-2, dim2=-1).zero_()
            dense[name] = pat
    if "prefix_matching" in kinds:
        b, q, k = index["induction"]
        has_target = torch.zeros(B, P, dtype=torch.bool, device=tokens.device)
        has_target[b, q] = True
        n_rows = has_target.sum(-1)  # [B] query positions with an earlier occurrence
        counts["prefix_matching"] += int((n_rows > 0).sum())
    for kind in kinds:
        if kind != "prefix_matching":
            counts[kind] += B
    sink_rows = (real[:, 1:]).sum(-1).clamp(min=1).double()  # [B] query rows 1..len-1

    def reduce(layer: int):
        def fn(pattern: torch.Tensor, hook) -> None:
            # pattern [batch, head, q, k]: reduce to [batch, head] per kind, keep nothing
            # half-precision models: accumulate in float32 (sums over pos^2 entries)
            acc = torch.float32 if pattern.dtype in (torch.float16, torch.bfloat16) else pattern.dtype
            A = pattern.detach().to(acc) * real[:, None, :, None]  # padding rows count for nothing
            if mul_kinds:
                denom = A.sum((-1, -2))
                if exclude_bos:
                    denom = denom - A[..., 0].sum(-1)
                if exclude_current:
                    denom = denom - A.diagonal(dim1=-2, dim2=-1).sum(-1)
                if exclude_bos and exclude_current:
                    denom = denom + A[..., 0, 0]  # counted in both
                for kind in mul_kinds:
                    if kind in dense:
                        num = torch.bmm(A.reshape(B, A.shape[1], P * P), dense[kind].reshape(B, P * P, 1).to(acc))[
                            ..., 0
                        ]
                    else:
                        b, q, k = mul_index[kind]
                        num = torch.zeros(B, A.shape[1], dtype=acc, device=A.device).index_add_(0, b, A[b, :, q, k])
                    sums[kind][layer] += (num.double() / denom.double()).sum(0)
            if "prefix_matching" in kinds:
                b, q, k = index["induction"]
                vals = A[b, :, q, k].double()  # [nnz, head]
                # sum of the per-row masses over rows, divided by the number of rows with a target
                total = torch.zeros(B, A.shape[1], dtype=torch.float64, device=A.device).index_add_(0, b, vals)
                per_row = total / n_rows.clamp(min=1)[:, None]  # [B, head]
                sums["prefix_matching"][layer] += per_row.sum(0)
            if "sink" in kinds:
                sums["sink"][layer] += (A[:, :, 1:, 0].double().sum(-1) / sink_rows[:, None]).sum(0)
            if bar is not None:
                bar.update()
            return None

        return fn

    with torch.no_grad():
        model.run_with_hooks(batch, [(model.site("pattern", l), reduce(l)) for l in model.cfg.attn_layers or ()])


def top_heads(frame: pd.DataFrame, kind: str | None = None, k: int = 3) -> pd.DataFrame:
    """The ``k`` highest-scoring heads of each kind in a :func:`scores` frame."""
    if kind is not None:
        if kind not in set(frame["kind"]):
            raise InputError(f"kind {kind!r} is not in this frame; it has {sorted(set(frame['kind']))}")
        frame = frame[frame["kind"] == kind]
    return (
        frame.sort_values("score", ascending=False)
        .groupby("kind", sort=False)
        .head(k)
        .sort_values(["kind", "score"], ascending=[True, False])
        .reset_index(drop=True)
    )
