"""Attention-head analysis: which heads are previous-token, duplicate-token, induction,
prefix-matching, sink or copying heads, how heads compose, and how much a model learns
in context.

- :func:`scores`: pattern-based scores from one forward per batch.  Every score is
  reduced inside a hook on ``blocks.{l}.attn.hook_pattern`` as the layer runs and the
  pattern is dropped, so no ``[batch, head, pos, pos]`` cache is ever kept: memory stays
  at one layer's pattern, which the forward makes anyway.
- :func:`copying_scores`, :func:`composition_scores`: weight-based (no tokens).
- :func:`loss_by_position`, :func:`icl_score`: in-context learning.

Definitions follow ``shared/DESIGN.md``: previous-token / duplicate-token / induction are
TransformerLens ``head_detector`` patterns with its "mul" score sum(A*P)/sum(A) (so a
perfect induction head on [BOS] r r scores about 0.5), averaged over the sequences of the
batch exactly as ``detect_head`` averages over a list of prompts.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from interp.model import Model
from interp.tasks import TaskBatch, repeated_tokens
from interp.tasks import loss_by_position as _loss_by_position

TL_KINDS = ("previous_token", "duplicate_token", "induction")
PATTERN_KINDS = TL_KINDS + ("prefix_matching", "sink")
KINDS = PATTERN_KINDS + ("copying",)  # copying is read from the weights, not the tokens
SINK_THRESHOLD = 0.3  # DESIGN.md: a sink head pays >= 0.3 of its attention to position 0

PatternFn = Callable[[torch.Tensor], torch.Tensor]  # tokens [pos] -> detection pattern [pos, pos]


# --- tokens ---------------------------------------------------------------------------------

def bos_id(model: Model) -> int:
    """The token the model's sequences start with (tokenizer / vocab BOS, else 0)."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None and getattr(tok, "bos_token_id", None) is not None:
        return int(tok.bos_token_id)
    vocab = getattr(model, "vocab", None)
    if vocab is not None and vocab.bos is not None:
        return int(vocab.bos)
    return 0


def default_tokens(model: Model, n: int = 8, length: int | None = None, seed: int = 0) -> torch.Tensor:
    """``[n, length]`` tokens ``[BOS] r r`` with ``r`` random (uniform over the vocabulary
    except BOS): the standard probe for previous-token, induction and prefix-matching heads.
    ``length`` defaults to ``min(n_ctx, 128)``.
    """
    length = min(model.cfg.n_ctx, 128) if length is None else int(length)
    if not 5 <= length <= model.cfg.n_ctx:
        raise ValueError(f"length must be in [5, n_ctx={model.cfg.n_ctx}] so that a segment repeats, got {length}")
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

def _duplicate_pairs(tokens: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, q, k) with k < q and tokens[b, k] == tokens[b, q]; built in query chunks so memory
    stays ``chunk * pos`` booleans even for long contexts."""
    B, P = tokens.shape
    out = []
    keys = torch.arange(P, device=tokens.device)
    for q0 in range(0, P, chunk):
        q = torch.arange(q0, min(P, q0 + chunk), device=tokens.device)
        eq = (tokens[:, q, None] == tokens[:, None, :]) & (keys[None, None, :] < q[None, :, None])
        b, qi, k = eq.nonzero(as_tuple=True)
        out.append((b, qi + q0, k))
    return tuple(torch.cat(parts) for parts in zip(*out))  # type: ignore[return-value]


def _index_patterns(tokens: torch.Tensor, kinds: Sequence[str]) -> dict[str, tuple[torch.Tensor, ...]]:
    B, P = tokens.shape
    out = {}
    if "previous_token" in kinds:
        q = torch.arange(1, P, device=tokens.device).repeat(B)
        b = torch.arange(B, device=tokens.device).repeat_interleave(P - 1)
        out["previous_token"] = (b, q, q - 1)
    if {"duplicate_token", "induction", "prefix_matching"} & set(kinds):
        b, q, k = _duplicate_pairs(tokens)
        out["duplicate_token"] = (b, q, k)
        # induction = duplicate pattern shifted one column right (TL): attend to the token
        # after an earlier copy of the current token; k + 1 <= q always holds
        out["induction"] = (b, q, k + 1)
    return out


def _check_kinds(kinds: Sequence[str] | str | None, patterns: Mapping[str, PatternFn] | None) -> list[str]:
    patterns = dict(patterns or {})
    clash = set(patterns) & set(KINDS)
    if clash:
        raise ValueError(f"custom pattern names {sorted(clash)} clash with built-in kinds; rename them")
    valid = list(KINDS) + list(patterns)
    if kinds is None:
        return valid
    if isinstance(kinds, str):
        kinds = [kinds]
    bad = [k for k in kinds if k not in valid]
    if bad:
        raise ValueError(f"unknown head kind(s) {bad}; valid kinds: {valid} "
                         "(custom kinds come from patterns={name: fn(tokens) -> [pos, pos] pattern})")
    if not kinds:
        raise ValueError(f"no kinds asked for; valid kinds: {valid}")
    return list(dict.fromkeys(kinds))


def _custom_pattern(fn: PatternFn, name: str, row: torch.Tensor) -> torch.Tensor:
    P = row.shape[0]
    pat = torch.as_tensor(fn(row.cpu())).to(row.device, torch.float32)
    if pat.shape != (P, P):
        raise ValueError(f"pattern {name!r} must return a [pos, pos] = [{P}, {P}] matrix, got {tuple(pat.shape)}")
    if torch.triu(pat, 1).abs().sum() > 0:
        raise ValueError(f"pattern {name!r} is not lower triangular: a query cannot attend to later positions")
    return pat


# --- pattern scores -------------------------------------------------------------------------

def scores(model: Model, tokens: torch.Tensor | TaskBatch | None = None, kinds: Sequence[str] | str | None = None, *,
           patterns: Mapping[str, PatternFn] | None = None, exclude_bos: bool = False,
           exclude_current_token: bool = False, batch_size: int | None = None) -> pd.DataFrame:
    """Head scores ``DataFrame[layer, head, kind, score]`` (one row per head and kind).

    tokens: ``[batch, pos]`` (or a TaskBatch); default :func:`default_tokens` ([BOS] r r).
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
    - copying: :func:`copying_scores` (from the weights, in [-1, 1]; needs no tokens).
    - a custom kind: ``patterns[name](tokens[pos]) -> [pos, pos]`` lower-triangular
      detection pattern, scored like the TL kinds.

    Pattern scores are fractions of attention (unitless, in [0, 1]).  One forward per batch of
    ``batch_size`` sequences (default: all at once); active hooks (ablations...) apply.
    """
    model.require_attention("head scores")
    kinds = _check_kinds(kinds, patterns)
    patterns = dict(patterns or {})
    copying = copying_scores(model).assign(kind="copying") if "copying" in kinds else None
    kinds = [k for k in kinds if k != "copying"]
    if not kinds:
        return copying[["layer", "head", "kind", "score"]]
    if tokens is None:
        tokens = default_tokens(model)
    if isinstance(tokens, TaskBatch):
        tokens = tokens.tokens
    tokens = model.validate_tokens(tokens)
    B, P = tokens.shape
    if P < 2:
        raise ValueError(f"head scores need sequences of at least 2 positions, got {P}")
    if "prefix_matching" in kinds and len(_duplicate_pairs(tokens)[0]) == 0:
        raise ValueError("prefix_matching needs repeated tokens (a token that occurs twice in a sequence); "
                         "these sequences have none: use e.g. interp.heads.default_tokens(model) ([BOS] r r)")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    dev = tokens.device
    sums = {k: torch.zeros(L, H, dtype=torch.float64, device=dev) for k in kinds}
    counts = {k: 0 for k in kinds}
    step = B if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, B, step):
        chunk = tokens[start:start + step]
        _score_chunk(model, chunk, kinds, patterns, sums, counts, exclude_bos, exclude_current_token)
    rows = []
    for kind in kinds:
        if counts[kind] == 0:  # only prefix_matching can lack rows; it was checked above
            raise ValueError(f"no sequence has positions that {kind} can score")
        mean = (sums[kind] / counts[kind]).cpu()
        rows += [{"layer": l, "head": h, "kind": kind, "score": float(mean[l, h])} for l in range(L) for h in range(H)]
    frame = pd.DataFrame(rows)
    if copying is not None:
        frame = pd.concat([frame, copying[["layer", "head", "kind", "score"]]], ignore_index=True)
    return frame


def _score_chunk(model: Model, tokens: torch.Tensor, kinds: list[str], patterns: dict, sums: dict, counts: dict,
                 exclude_bos: bool, exclude_current: bool) -> None:
    B, P = tokens.shape
    index = _index_patterns(tokens, kinds)
    mul_kinds = [k for k in kinds if k in TL_KINDS or k in patterns]

    def keep(b, q, k):  # detect_head zeroes column 0 / the diagonal of A before scoring
        m = torch.ones_like(q, dtype=torch.bool)
        if exclude_bos:
            m &= k != 0
        if exclude_current:
            m &= k != q
        return b[m], q[m], k[m]

    mul_index = {k: keep(*index[k]) for k in mul_kinds if k in index}
    dense = {name: torch.stack([_custom_pattern(patterns[name], name, row) for row in tokens])
             for name in mul_kinds if name in patterns}
    for name in dense:
        if exclude_bos:
            dense[name][:, :, 0] = 0
        if exclude_current:
            dense[name].diagonal(dim1=-2, dim2=-1).zero_()
    if "prefix_matching" in kinds:
        b, q, k = index["induction"]
        has_target = torch.zeros(B, P, dtype=torch.bool, device=tokens.device)
        has_target[b, q] = True
        n_rows = has_target.sum(-1)  # [B] query positions with an earlier occurrence
        counts["prefix_matching"] += int((n_rows > 0).sum())
    for kind in kinds:
        if kind != "prefix_matching":
            counts[kind] += B

    def reduce(pattern: torch.Tensor, hook) -> None:
        # pattern [batch, head, q, k]: reduce to [batch, head] per kind, keep nothing
        layer = int(hook.name.split(".")[1])
        A = pattern.detach()
        # half-precision models: accumulate in float32 (sums over pos^2 entries)
        acc = torch.float32 if A.dtype in (torch.float16, torch.bfloat16) else A.dtype
        if mul_kinds:
            denom = A.sum((-1, -2), dtype=acc)
            if exclude_bos:
                denom = denom - A[..., 0].sum(-1, dtype=acc)
            if exclude_current:
                denom = denom - A.diagonal(dim1=-2, dim2=-1).sum(-1, dtype=acc)
            if exclude_bos and exclude_current:
                denom = denom + A[..., 0, 0]  # counted in both
            for kind in mul_kinds:
                if kind in dense:
                    num = torch.bmm(A.reshape(B, A.shape[1], P * P).to(acc), dense[kind].reshape(B, P * P, 1).to(acc))[..., 0]
                else:
                    b, q, k = mul_index[kind]
                    num = torch.zeros(B, A.shape[1], dtype=acc, device=A.device).index_add_(0, b, A[b, :, q, k].to(acc))
                sums[kind][layer] += (num.double() / denom.double()).sum(0)
        if "prefix_matching" in kinds:
            b, q, k = index["induction"]
            vals = A[b, :, q, k].double()                                       # [nnz, head]
            # sum of the per-row masses over rows, divided by the number of rows with a target
            total = torch.zeros(B, A.shape[1], dtype=torch.float64, device=A.device).index_add_(0, b, vals)
            per_row = total / n_rows.clamp(min=1)[:, None]                       # [B, head]
            sums["prefix_matching"][layer] += per_row.sum(0)
        if "sink" in kinds:
            sums["sink"][layer] += A[:, :, 1:, 0].double().mean(-1).sum(0)
        return None

    with torch.no_grad():
        model.run_with_hooks(tokens, [(f"blocks.{l}.attn.hook_pattern", reduce) for l in range(model.cfg.n_layers)])


def top_heads(frame: pd.DataFrame, kind: str | None = None, k: int = 3) -> pd.DataFrame:
    """The ``k`` highest-scoring heads of each kind in a :func:`scores` frame."""
    if kind is not None:
        if kind not in set(frame["kind"]):
            raise ValueError(f"kind {kind!r} is not in this frame; it has {sorted(set(frame['kind']))}")
        frame = frame[frame["kind"] == kind]
    return (frame.sort_values("score", ascending=False).groupby("kind", sort=False).head(k)
            .sort_values(["kind", "score"], ascending=[True, False]).reset_index(drop=True))


# --- weight-based scores --------------------------------------------------------------------

def _ln_gain(norm) -> tuple[torch.Tensor | None, bool]:
    """(gain [d_model] or None, centers?) of a normalisation bridge (LN centers, RMS does not)."""
    if norm is None or getattr(norm, "w", None) is None:
        return None, False
    w = norm.w.detach().double()
    if getattr(norm, "uses_weight_offset", False):  # Gemma-style: scale is 1 + w
        w = w + 1.0
    return w, not bool(getattr(norm, "uses_rms_norm", False))


def _fold(w: torch.Tensor, norm, fold_ln: bool) -> torch.Tensor:
    """Reading weights ``[..., d_model, x]`` with the preceding norm's gain folded in and,
    for LayerNorm, centred over d_model (the norm removes the mean of its input)."""
    if not fold_ln:
        return w
    gain, center = _ln_gain(norm)
    if gain is None:
        return w
    w = w * gain[:, None]
    return w - w.mean(-2, keepdim=True) if center else w


def _expand_kv(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[L, n_kv, d_model, d_head] -> [L, n_heads, ...] (grouped-query attention: head h reads kv h // group)."""
    return w if w.shape[1] == n_heads else w.repeat_interleave(n_heads // w.shape[1], dim=1)


def _weights(model: Model, fold_ln: bool) -> dict[str, torch.Tensor]:
    """W_Q, W_K, W_V [L, H, d_model, d_head] (folded with ln1), W_O [L, H, d_head, d_model]
    (float64); W_E [d_vocab, d_model], W_U [d_model, d_vocab] (folded with ln_final)."""
    model.require_attention("weight-based head scores")
    bridge = model.module
    if not all(hasattr(bridge, a) for a in ("W_Q", "W_K", "W_V", "W_O", "blocks")):
        raise ValueError("weight-based head scores need a TransformerLens bridge model (W_Q, W_K, W_V, W_O)")
    H = model.cfg.n_heads
    with torch.no_grad():
        out = {"W_O": bridge.W_O.detach().double()}
        for name in ("W_Q", "W_K", "W_V"):
            w = _expand_kv(getattr(bridge, name).detach().double(), H)
            out[name] = torch.stack([_fold(w[l], getattr(bridge.blocks[l], "ln1", None), fold_ln)
                                     for l in range(model.cfg.n_layers)])
        if hasattr(bridge, "W_E") and hasattr(bridge, "W_U"):
            out["W_E"] = bridge.W_E.detach().double()
            out["W_U"] = _fold(bridge.W_U.detach().double(), getattr(bridge, "ln_final", None), fold_ln)
    return out


def copying_scores(model: Model, *, fold_ln: bool = True) -> pd.DataFrame:
    """OV-circuit copying score per head, ``DataFrame[layer, head, score]`` in [-1, 1].

    Eigenvalue positivity sum(l) / sum(|l|) of the direct-path OV circuit
    ``W_E W_V W_O W_U`` (TransformerLens convention, [d_vocab, d_vocab]); 1 means the head
    raises the logit of the tokens it attends to.  Computed from the [d_head, d_head]
    matrix ``W_O W_U W_E W_V``, which has the same non-zero eigenvalues.

    fold_ln: fold the gains of ``blocks.{l}.ln1`` into W_V and of ``ln_final`` into W_U and
    centre them over d_model (LayerNorm removes the mean), as TransformerLens's
    ``fold_ln`` does.  Ignored: the normalisation scale (a positive per-token factor),
    biases, positional embeddings, MLPs and other heads (the direct path only).
    """
    w = _weights(model, fold_ln)
    if "W_E" not in w:
        raise ValueError("copying scores need the embedding and unembedding matrices (W_E, W_U)")
    UE = w["W_U"] @ w["W_E"]                                              # [d_model, d_model]
    small = w["W_O"] @ UE @ w["W_V"]                                      # [L, H, d_head, d_head]
    lam = torch.linalg.eigvals(small)
    score = lam.real.sum(-1) / lam.abs().sum(-1).clamp(min=1e-30)
    return pd.DataFrame([{"layer": l, "head": h, "score": float(score[l, h])}
                         for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)])


COMPOSITION_KINDS = ("Q", "K", "V")


def composition_scores(model: Model, kinds: Sequence[str] | str = COMPOSITION_KINDS, *,
                       fold_ln: bool = True) -> pd.DataFrame:
    """Q/K/V composition between every head pair of different layers (Elhage et al. 2021).

    ``DataFrame[kind, src_layer, src_head, dst_layer, dst_head, score]`` for src_layer <
    dst_layer: ``||OV_src R_dst||_F / (||OV_src||_F ||R_dst||_F)`` with OV = W_V W_O and R =
    W_Q W_K^T (Q), W_K W_Q^T (K), W_V W_O (V), as TransformerLens's
    ``all_composition_scores`` (equal to it with ``fold_ln=False``).  Norms are computed
    from [d_head, d_head] Gram matrices, never the [d_model, d_model] products.

    fold_ln: fold each destination layer's ln1 gain into its W_Q / W_K / W_V and centre
    them (see :func:`copying_scores`); the source's W_V is folded with its own ln1.
    Unrelated heads already score well above 0 (about 1/sqrt(d_model) for random
    weights: 0.125 at d_model 64), so compare pairs within one model and to that baseline.
    """
    if isinstance(kinds, str):
        kinds = [kinds]
    bad = [k for k in kinds if k not in COMPOSITION_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown composition kind(s) {bad or kinds}; valid: {list(COMPOSITION_KINDS)}")
    w = _weights(model, fold_ln)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    # left factor of OV_src = A1 B1 with A1 = W_V [d_model, d_head], B1 = W_O [d_head, d_model]
    G1 = w["W_V"].transpose(-1, -2) @ w["W_V"]                            # A1^T A1 [L, H, dh, dh]
    left_norm = (G1 * (w["W_O"] @ w["W_O"].transpose(-1, -2))).sum((-1, -2)).sqrt()
    rights = {"Q": (w["W_Q"], w["W_K"].transpose(-1, -2)), "K": (w["W_K"], w["W_Q"].transpose(-1, -2)),
              "V": (w["W_V"], w["W_O"])}
    rows = []
    for kind in kinds:
        A2, B2 = rights[kind]
        H2 = B2 @ B2.transpose(-1, -2)                                    # [L, H, dh, dh]
        right_norm = ((A2.transpose(-1, -2) @ A2) * H2).sum((-1, -2)).sqrt()
        for dst in range(1, L):
            # ||A1 B1 A2 B2||^2 = tr(M^T G1 M H2) with M = B1 A2 [dh, dh], per (src, dst) pair
            M = torch.einsum("shij,gjk->shgik", w["W_O"][:dst], A2[dst])    # [src_l, src_h, dst_h, dh, dh]
            inner = M.transpose(-1, -2) @ G1[:dst, :, None] @ M
            norm = (inner * H2[dst][None, None]).sum((-1, -2)).clamp(min=0).sqrt()
            score = norm / left_norm[:dst, :, None] / right_norm[dst][None, None]
            for sl in range(dst):
                for sh in range(H):
                    for dh in range(H):
                        rows.append({"kind": kind, "src_layer": sl, "src_head": sh, "dst_layer": dst,
                                     "dst_head": dh, "score": float(score[sl, sh, dh])})
    return pd.DataFrame(rows, columns=["kind", "src_layer", "src_head", "dst_layer", "dst_head", "score"])


# --- in-context learning --------------------------------------------------------------------

def loss_by_position(model: Model, tokens: torch.Tensor | TaskBatch, *, batch_size: int | None = None) -> pd.DataFrame:
    """Next-token loss per position, ``DataFrame[pos, loss, sem, n]``: ``loss`` (nats) is the
    mean over the batch of the cross-entropy of the logits at ``pos`` on token ``pos + 1``;
    ``sem`` its standard error over the ``n`` sequences.  Active hooks apply."""
    if isinstance(tokens, TaskBatch):
        tokens = tokens.tokens
    tokens = model.validate_tokens(tokens)
    if tokens.shape[1] < 2:
        raise ValueError("loss by position needs sequences of at least 2 tokens")
    step = tokens.shape[0] if batch_size is None else int(batch_size)
    with torch.no_grad():
        losses = torch.cat([_loss_by_position(model(tokens[i:i + step]), tokens[i:i + step])
                            for i in range(0, tokens.shape[0], step)])          # [batch, pos-1]
    n = losses.shape[0]
    sem = losses.std(0) / n ** 0.5 if n > 1 else torch.full((losses.shape[1],), float("nan"))
    return pd.DataFrame({"pos": range(losses.shape[1]), "loss": losses.mean(0).cpu().numpy(),
                         "sem": sem.cpu().numpy(), "n": n})


def icl_score(model: Model, tokens: torch.Tensor | TaskBatch, *, early: int | None = None,
              late: int | None = None) -> float:
    """In-context-learning score (Olsson et al. 2022): mean loss at position ``late`` minus
    mean loss at position ``early`` (nats; negative = the model predicts better with more
    context).  Defaults: ``early`` = 10% into the sequence, ``late`` = the last predicting
    position (Olsson et al. use tokens 50 and 500 of 512)."""
    frame = loss_by_position(model, tokens)
    last = int(frame["pos"].max())
    early = max(1, round(0.1 * (last + 1))) if early is None else int(early)
    late = last if late is None else int(late)
    for name, p in (("early", early), ("late", late)):
        if not 0 <= p <= last:
            raise ValueError(f"{name}={p} is outside the predicting positions [0, {last}]")
    if early >= late:
        raise ValueError(f"early ({early}) must come before late ({late})")
    return float(frame.loc[late, "loss"] - frame.loc[early, "loss"])
