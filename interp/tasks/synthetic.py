"""Synthetic tasks with known ground truth.

Every generator returns a :class:`TaskBatch`: integer tokens ``[batch, pos]``, task labels
``[batch, pos]`` (the token the logits *at that position* should predict; ``IGNORE`` where
the task does not score) and ``info``, the ground truth the analyses need (label
positions, answers, needle spans, stored bits).  Generators are seeded and pure: the same
arguments give the same batch.

Shared token conventions for the zoo: token 0 is BOS in every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from interp.errors import InputError
from interp.metrics import IGNORE
from interp.tasks.contrast import ContrastPairs
from interp.tokens import TokenBatch

BOS = 0


@dataclass
class TaskBatch:
    """A batch of a synthetic task.

    tokens: ``[batch, pos]`` int64 (right-padded when ``lengths`` is given).  labels:
    ``[batch, pos]`` int64, target of the logits at each position, ``IGNORE`` (-100) where
    unscored.  info: task ground truth (tensors with a leading batch dimension, or plain
    ints).  lengths: ``[batch]`` real tokens per row (None: no padding).
    """

    tokens: torch.Tensor
    labels: torch.Tensor
    info: dict = field(default_factory=dict)
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self) -> TokenBatch:
        """The prompts as a :class:`~interp.tokens.TokenBatch` (``lengths``: real tokens per
        row of a right-padded task; None = every row is full)."""
        if self.lengths is None:
            return TokenBatch.full(self.tokens)
        return TokenBatch(self.tokens, self.lengths)

    def next_token_labels(self) -> torch.Tensor:
        """Language-modelling labels: the next token at every position, IGNORE at the last."""
        labels = torch.full_like(self.tokens, IGNORE)
        labels[:, :-1] = self.tokens[:, 1:]
        return labels

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats) of ``logits`` [batch, pos, vocab] on the task labels."""
        return masked_loss(logits, self.labels)

    def accuracy(self, logits: torch.Tensor) -> float:
        """Fraction of labelled positions where the arg-max of ``logits`` is the label."""
        return masked_accuracy(logits, self.labels)


def masked_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not IGNORE."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE)


def masked_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    mask = labels != IGNORE
    if not mask.any():
        raise InputError("no labelled positions to score")
    return (logits.argmax(-1)[mask] == labels[mask]).float().mean().item()


def loss_by_position(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per position, ``[batch, pos-1]`` (position p predicts p+1)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0]


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value is None or int(value) < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


# --- induction: repeated random tokens ------------------------------------------------


def repeated_tokens(
    n: int,
    *,
    d_vocab: int,
    n_ctx: int,
    period: int | None = None,
    min_period: int = 4,
    max_period: int = 31,
    seed: int = 0,
) -> TaskBatch:
    """[BOS] + a random segment repeated to fill ``n_ctx`` tokens.

    ``period`` fixes the segment length (e.g. ``(n_ctx - 1) // 2`` for [BOS] r r); by
    default each row draws one from [min_period, max_period].  Tokens are drawn from
    [1, d_vocab).  Labels mark the positions whose next token repeats an earlier one (the
    ones an induction head can predict).  info: ``period`` [batch], ``repeat_start`` [batch]
    (first position of the second copy).
    """
    _check_positive(n=n, d_vocab=d_vocab, n_ctx=n_ctx)
    g = _rng(seed)
    if period is not None:
        if not 1 <= period <= n_ctx - 2:
            raise InputError(f"period must be in [1, n_ctx-2={n_ctx - 2}] so that a repeat fits, got {period}")
        periods = torch.full((n,), period)
    else:
        periods = torch.randint(min_period, max_period + 1, (n,), generator=g)
    tokens = torch.empty(n, n_ctx, dtype=torch.long)
    tokens[:, 0] = BOS
    labels = torch.full_like(tokens, IGNORE)
    for i, p in enumerate(periods.tolist()):
        seg = torch.randint(1, d_vocab, (p,), generator=g)
        body = seg.repeat((n_ctx - 1) // p + 1)[: n_ctx - 1]
        tokens[i, 1:] = body
        # position q (>= p) predicts tokens[q+1], which repeats tokens[q+1-p]
        labels[i, p:-1] = tokens[i, p + 1 :]
    return TaskBatch(tokens, labels, {"period": periods, "repeat_start": periods + 1})


# --- associative recall and needle retrieval ------------------------------------------


def associative_recall(
    n: int,
    *,
    n_pairs: int = 4,
    d_vocab: int = 128,
    n_queries: int | None = None,
    n_filler: int = 0,
    filler: int = 1,
    seed: int = 0,
) -> TaskBatch:
    """Key-value pairs, then queries: ``[BOS] k1 v1 .. kn vn [filler]*n_filler q1 v(q1) q2 ...``.

    Keys come from [2, d_vocab/2), values from [d_vocab/2, d_vocab); keys in a row are
    distinct.  Each query is one of the row's keys (drawn with replacement) followed by its value,
    so the model is scored at query positions only (label = the value).  info:
    ``query_pos`` / ``answer`` / ``value_pos`` [batch, n_queries] (``value_pos``: where the
    answer stands in the context, the retrieval target), ``needle_span`` [batch, 2] for the
    last query (start, end) = (value_pos, value_pos + 1).
    """
    _check_positive(n=n, n_pairs=n_pairs, d_vocab=d_vocab)
    n_queries = n_pairs if n_queries is None else n_queries
    half = d_vocab // 2
    if n_pairs > half - 2:
        raise InputError(f"n_pairs={n_pairs} needs at least {n_pairs} distinct keys in [2, {half})")
    if n_queries < 1:
        raise InputError(f"n_queries must be >= 1, got {n_queries}")
    g = _rng(seed)
    keys = torch.stack([torch.randperm(half - 2, generator=g)[:n_pairs] + 2 for _ in range(n)])
    values = torch.randint(half, d_vocab, (n, n_pairs), generator=g)
    # queries are drawn with replacement: with each key asked once, the last answers follow
    # by elimination, a shortcut a model learns instead of retrieval
    order = torch.randint(0, n_pairs, (n, n_queries), generator=g)
    ctx_len = 1 + 2 * n_pairs + n_filler
    length = ctx_len + 2 * n_queries - 1  # the last query's value is the answer, not shown
    tokens = torch.full((n, length), filler, dtype=torch.long)
    tokens[:, 0] = BOS
    tokens[:, 1 : 1 + 2 * n_pairs : 2] = keys
    tokens[:, 2 : 2 + 2 * n_pairs : 2] = values
    query_pos = ctx_len + 2 * torch.arange(n_queries)
    answer = values.gather(1, order)
    tokens[:, query_pos] = keys.gather(1, order)
    tokens[:, query_pos[:-1] + 1] = answer[:, :-1]
    labels = torch.full_like(tokens, IGNORE)
    labels[:, query_pos] = answer
    value_pos = 2 + 2 * order
    needle = torch.stack([value_pos[:, -1], value_pos[:, -1] + 1], dim=1)
    return TaskBatch(
        tokens,
        labels,
        {"query_pos": query_pos.expand(n, -1).clone(), "answer": answer, "value_pos": value_pos, "needle_span": needle},
    )


def needle_retrieval(
    n: int, *, n_ctx: int, needle_len: int = 4, d_vocab: int = 128, seed: int = 0, key: int = 1
) -> TaskBatch:
    """A needle ``key a1..aL`` planted in a haystack of random tokens; the prompt ends with ``key``.

    The answer ``a1..aL`` (info ``answer`` [batch, L]) is to be copied from the needle span
    (info ``needle_span`` [batch, 2] = start, end of a1..aL in the prompt).  ``key`` is a
    token that appears nowhere else.  The prompt has ``n_ctx`` tokens: [BOS], haystack,
    needle, haystack, key.  Labels: the first answer token at the last position.
    """
    _check_positive(n=n, n_ctx=n_ctx, needle_len=needle_len, d_vocab=d_vocab)
    if n_ctx < needle_len + 4:
        raise InputError(f"n_ctx={n_ctx} is too short for a needle of {needle_len} tokens")
    if not 0 <= key < d_vocab:
        raise InputError(f"key token {key} is outside the vocabulary [0, {d_vocab})")
    g = _rng(seed)
    pool = torch.tensor([t for t in range(1, d_vocab) if t != key])
    tokens = pool[torch.randint(len(pool), (n, n_ctx), generator=g)]
    tokens[:, 0] = BOS
    tokens[:, -1] = key
    start = torch.randint(1, n_ctx - needle_len - 1, (n,), generator=g)  # the key's position
    answer = pool[torch.randint(len(pool), (n, needle_len), generator=g)]
    for i, s in enumerate(start.tolist()):
        tokens[i, s] = key
        tokens[i, s + 1 : s + 1 + needle_len] = answer[i]
    labels = torch.full_like(tokens, IGNORE)
    labels[:, -1] = answer[:, 0]
    span = torch.stack([start + 1, start + 1 + needle_len], dim=1)
    return TaskBatch(tokens, labels, {"answer": answer, "needle_span": span})


# --- flip-flop ---------------------------------------------------------------------------

FLIPFLOP_VOCAB = ["BOS", "W0", "W1", "IGN", "READ", "0", "1"]


def flip_flop(n: int, *, length: int = 64, p_ignore: float = 0.8, seed: int = 0) -> TaskBatch:
    """Flip-flop language: write-0 / write-1 / ignore / read instructions.

    Tokens (see FLIPFLOP_VOCAB): 0 BOS, 1 W0, 2 W1, 3 IGN, 4 READ.  The first instruction
    is a write; later ones are IGN with probability ``p_ignore``, otherwise W0, W1 or READ
    equally.  The label at a READ is the token of the last written bit ("0"=5 / "1"=6).
    info: ``bit`` [batch, pos] the stored bit after each position (-1 before any write).
    """
    _check_positive(n=n, length=length)
    if not 0.0 <= p_ignore < 1.0:
        raise InputError(f"p_ignore must be in [0, 1), got {p_ignore}")
    g = _rng(seed)
    u = torch.rand(n, length, generator=g)
    choice = torch.randint(0, 3, (n, length), generator=g)  # 0 W0, 1 W1, 2 READ
    # choice 0, 1, 2 -> W0 (1), W1 (2), READ (4); IGN (3) sits between them in the vocab
    tokens = torch.where(u < p_ignore, torch.full_like(choice, 3), torch.where(choice == 2, 4, choice + 1))
    tokens[:, 0] = BOS
    tokens[:, 1] = torch.randint(1, 3, (n,), generator=g)
    bit = torch.full((n, length), -1, dtype=torch.long)
    state = torch.full((n,), -1, dtype=torch.long)
    labels = torch.full_like(tokens, IGNORE)
    for t in range(length):
        tok = tokens[:, t]
        state = torch.where(tok == 1, 0, torch.where(tok == 2, 1, state))
        bit[:, t] = state
        labels[:, t] = torch.where(tok == 4, state + 5, IGNORE)
    return TaskBatch(tokens, labels, {"bit": bit})


#: the token ids of the authors' data set (synthseq/flipflop on the Hugging Face hub: w 0, r 1, i 2, "0" 3, "1" 4)
FFL_VOCAB = ["w", "r", "i", "0", "1"]
FFL_W, FFL_R, FFL_I, FFL_BIT0 = 0, 1, 2, 3  # token ids of FFL_VOCAB; bit b is FFL_BIT0 + b


def flip_flop_ffl(n: int, *, length: int = 64, p_ignore: float = 0.8, seed: int = 0) -> TaskBatch:
    """Liu et al.'s flip-flop language FFL(p_ignore) (arXiv:2306.00946; their data set trains on
    FFL(0.8) with 256 instructions, 80% ignore, 10% read, 10% write): ``length / 2``
    instruction-bit pairs, no BOS.  Instructions are ``w`` (write the bit that follows), ``i``
    (ignore: the bit that follows is a random distractor) and ``r`` (read: the bit that follows is
    the last written bit), drawn i.i.d. with p(i) = ``p_ignore`` and p(w) = p(r) = (1 - p(i)) / 2,
    except that the first instruction is always ``w`` and the last always ``r``.  Bits after
    ``w`` and ``i`` are uniform.

    Tokens (see FFL_VOCAB, the authors' ids): 0 ``w``, 1 ``r``, 2 ``i``, 3 ``0``, 4 ``1``.  Labels: at each ``r``
    position, the bit token that follows it (the model's prediction there is the read; the only
    graded tokens, the others being random).  info: ``bit`` [batch, pos] the stored bit after each
    position (the write's bit counts from its bit token on; -1 before it).
    """
    _check_positive(n=n, length=length)
    if length < 4 or length % 2:
        raise InputError(f"an FFL sequence is instruction-bit pairs: length must be even and >= 4, got {length}")
    if not 0.0 <= p_ignore < 1.0:
        raise InputError(f"p_ignore must be in [0, 1), got {p_ignore}")
    g = _rng(seed)
    pairs = length // 2
    u = torch.rand(n, pairs, generator=g)
    half = (1.0 - p_ignore) / 2
    instr = torch.where(u < p_ignore, FFL_I, torch.where(u < p_ignore + half, FFL_W, FFL_R))
    instr[:, 0], instr[:, -1] = FFL_W, FFL_R
    bits = torch.randint(0, 2, (n, pairs), generator=g)
    state = torch.full((n,), -1, dtype=torch.long)
    for k in range(pairs):  # a read's bit is the last written one
        bits[:, k] = torch.where(instr[:, k] == FFL_R, state, bits[:, k])
        state = torch.where(instr[:, k] == FFL_W, bits[:, k], state)
    tokens = torch.stack([instr, bits + FFL_BIT0], dim=2).reshape(n, length)
    labels = torch.full_like(tokens, IGNORE)
    reads = tokens == FFL_R
    labels[:, :-1] = torch.where(reads[:, :-1], tokens[:, 1:], IGNORE)
    # the stored bit from each write's bit token on
    is_write_bit = torch.zeros_like(reads)
    is_write_bit[:, 1:] = tokens[:, :-1] == FFL_W
    pos = torch.arange(length).expand_as(tokens)
    last = torch.where(is_write_bit, pos, -1).cummax(dim=1).values
    bit = torch.where(last >= 0, tokens.gather(1, last.clamp(min=0)) - FFL_BIT0, -1)
    return TaskBatch(tokens, labels, {"bit": bit})


# --- steering: the mode-token language --------------------------------------------------


def mode_halves(d_vocab: int) -> tuple[range, range]:
    """Token ranges of the two halves picked by mode 0 ("A") and mode 1 ("B")."""
    mid = 2 + (d_vocab - 2) // 2
    return range(2, mid), range(mid, d_vocab)


def mode_sequences(n: int, *, d_vocab: int = 64, n_ctx: int = 32, mode: int | None = None, seed: int = 0) -> TaskBatch:
    """``[mode] t1 .. t_{n_ctx-1}``: mode token 0 ("A") or 1 ("B") at position 0 picks the
    vocabulary half all later tokens come from (see :func:`mode_halves`).  ``mode=None``
    draws one per row.  Labels: the next token everywhere.  info: ``mode`` [batch].
    """
    _check_positive(n=n, d_vocab=d_vocab, n_ctx=n_ctx)
    if mode not in (None, 0, 1):
        raise InputError(f"mode must be 0, 1 or None, got {mode!r}")
    g = _rng(seed)
    modes = torch.randint(0, 2, (n,), generator=g) if mode is None else torch.full((n,), mode)
    a, b = mode_halves(d_vocab)
    lo = torch.where(modes == 0, a.start, b.start)[:, None]
    width = torch.where(modes == 0, len(a), len(b))[:, None]
    body = lo + (torch.rand(n, n_ctx - 1, generator=g) * width).long()
    tokens = torch.cat([modes[:, None], body], dim=1)
    batch = TaskBatch(tokens, torch.empty(0), {"mode": modes})
    batch.labels = batch.next_token_labels()
    return batch


def mode_contrast_pairs(n: int, *, d_vocab: int = 64, n_ctx: int = 16, seed: int = 0) -> ContrastPairs:
    """Mode-B prompts (positive) against mode-A prompts (negative) of equal length."""
    pos = mode_sequences(n, d_vocab=d_vocab, n_ctx=n_ctx, mode=1, seed=seed).tokens
    neg = mode_sequences(n, d_vocab=d_vocab, n_ctx=n_ctx, mode=0, seed=seed + 1).tokens
    return ContrastPairs(pos, neg)  # same length, read at the last token


# --- subject-relation-object facts (causal tracing on trained models) ---------------------


@dataclass(frozen=True)
class FactWorld:
    """A fixed table of synthetic facts: ``n_first * n_second`` two-token subjects (``a_i b_j``),
    ``n_relations`` relations and ``n_objects`` objects; the object of (subject, relation) is drawn
    once from ``world_seed``.  A fact reads ``BOS a_i b_j r_k is`` and its answer is the object:
    the subject is two tokens so the model has to combine them (as a real subject's last token
    must be read with the ones before it), and the relation and ``is`` stand between the subject
    and the answer, as in "The Eiffel Tower is located in" -> " Paris"."""

    n_first: int = 8
    n_second: int = 8
    n_relations: int = 4
    n_objects: int = 16
    world_seed: int = 0

    @property
    def names(self) -> list[str]:
        """Token names by id: BOS, is, a0.., b0.., r0.., o0.."""
        return (
            ["BOS", "is"]
            + [f"a{i}" for i in range(self.n_first)]
            + [f"b{i}" for i in range(self.n_second)]
            + [f"r{i}" for i in range(self.n_relations)]
            + [f"o{i}" for i in range(self.n_objects)]
        )

    @property
    def d_vocab(self) -> int:
        return 2 + self.n_first + self.n_second + self.n_relations + self.n_objects

    def ids(self, kind: str) -> torch.Tensor:
        """Token ids of ``a`` (first subject tokens), ``b``, ``r`` or ``o``."""
        starts = {"a": 2, "b": 2 + self.n_first, "r": 2 + self.n_first + self.n_second}
        starts["o"] = starts["r"] + self.n_relations
        sizes = {"a": self.n_first, "b": self.n_second, "r": self.n_relations, "o": self.n_objects}
        if kind not in starts:
            raise InputError(f"token kind must be one of {sorted(starts)}, got {kind!r}")
        return torch.arange(starts[kind], starts[kind] + sizes[kind])

    def table(self) -> torch.Tensor:
        """``[n_first, n_second, n_relations]`` object index of every fact (fixed by ``world_seed``)."""
        g = _rng(self.world_seed)
        return torch.randint(0, self.n_objects, (self.n_first, self.n_second, self.n_relations), generator=g)

    @property
    def n_facts(self) -> int:
        return self.n_first * self.n_second * self.n_relations


#: the subject / relation / object position of a fact row: BOS a b r is
FACT_SUBJECT, FACT_RELATION, FACT_LAST = (1, 3), 3, 4


def sro_facts(n: int | None = None, *, world: FactWorld | None = None, seed: int = 0) -> TaskBatch:
    """Rows ``BOS a b r is`` of a :class:`FactWorld` (default world), labelled with the object at
    the last position.  ``n``: that many facts drawn uniformly (training batches); None: every
    fact once, in table order.  info: ``subject_span`` [batch, 2] (start, end) of the subject,
    ``answer`` [batch] the object token, ``fact`` [batch, 3] (i, j, k)."""
    world = world or FactWorld()
    table = world.table()
    if n is None:
        idx = torch.cartesian_prod(
            torch.arange(world.n_first), torch.arange(world.n_second), torch.arange(world.n_relations)
        )
    else:
        _check_positive(n=n)
        g = _rng(seed)
        idx = torch.stack(
            [
                torch.randint(0, world.n_first, (n,), generator=g),
                torch.randint(0, world.n_second, (n,), generator=g),
                torch.randint(0, world.n_relations, (n,), generator=g),
            ],
            1,
        )
    a, b, r, o = (world.ids(k) for k in "abro")
    obj = o[table[idx[:, 0], idx[:, 1], idx[:, 2]]]
    tokens = torch.stack(
        [torch.full_like(obj, BOS), a[idx[:, 0]], b[idx[:, 1]], r[idx[:, 2]], torch.full_like(obj, 1)], 1
    )
    labels = torch.full_like(tokens, IGNORE)
    labels[:, FACT_LAST] = obj
    span = torch.tensor(FACT_SUBJECT).expand(len(obj), 2).clone()
    return TaskBatch(tokens, labels, {"subject_span": span, "answer": obj, "fact": idx})
