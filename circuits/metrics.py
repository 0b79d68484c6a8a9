"""Patching metrics: functions of the logits that read only the positions they need.

A :class:`Metric` reads logits at a few positions per row (``pos`` ``[batch, k]``,
absolute or negative from the end) and returns one number per row, the mean over its
``k`` read positions.  ``metric(logits)`` is the batch mean (a scalar, what
TransformerLens's ``patching_metric`` expects); :meth:`Metric.values` keeps the rows.

Every metric works on logits with extra leading dimensions (``[..., batch, pos, vocab]``)
and on *compact* logits that hold only the positions the metric reads
(``[..., batch, len(read_positions), vocab]``, see :meth:`Metric.read_positions`): the
fast patching engine unembeds only those positions.

Kinds (units):

- ``logit_diff``: logit(answer) - logit(wrong), in logits (nats of odds);
- ``logit``: logit(answer);
- ``prob``: softmax probability of the answer, in [0, 1];
- ``logprob``: log-probability of the answer, in nats (<= 0);
- ``accuracy``: 1 where the arg-max is the answer, else 0;
- ``kl``: KL(clean || patched) of the next-token distributions, in nats (>= 0; lower is
  closer to the clean run).

Normalised effect (Zhang & Nanda 2023): ``(patched - corrupt) / (clean - corrupt)``, see
:func:`normalise`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from interp.tasks import IGNORE

KINDS = ("logit_diff", "logit", "prob", "logprob", "accuracy", "kl")

IntLike = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor


def _as_2d(x: IntLike | None, what: str) -> torch.Tensor | None:
    """``[b, k]`` int64 from an int, a list, a ``[b]`` or ``[b, k]`` tensor (b may be 1 = broadcast)."""
    if x is None:
        return None
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.tensor(x)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{what} must be integers, got {t.dtype}")
    t = t.long()
    if t.ndim == 0:
        return t.view(1, 1)
    if t.ndim == 1:
        return t.view(-1, 1)
    if t.ndim == 2:
        return t
    raise ValueError(f"{what} must be an int, a [batch] or a [batch, k] tensor, got shape {tuple(t.shape)}")


@dataclass(frozen=True, eq=False)
class Metric:
    """A metric over logits.  Build one with :func:`logit_diff`, :func:`prob`, ... or :func:`from_labels`.

    kind: one of :data:`KINDS`.  pos: ``[b, k]`` positions read (negative = from the end).
    answer / wrong: ``[b, k]`` token ids (wrong only for ``logit_diff``).  mask: ``[b, k]``
    which read entries count (label metrics read a different number of positions per row).
    reference: ``[b, k, vocab]`` clean log-probabilities (``kl`` only).  b may be 1 (broadcast
    over the batch).
    """

    kind: str
    pos: torch.Tensor
    answer: torch.Tensor | None = None
    wrong: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    name: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "kl":
            if self.reference is None:
                raise ValueError("the kl metric needs the clean logits: metrics.kl(clean_logits, pos=...)")
        elif self.answer is None:
            raise ValueError(f"the {self.kind} metric needs answer tokens (answer=...), e.g. the correct next token")
        if self.kind == "logit_diff" and self.wrong is None:
            raise ValueError("the logit_diff metric needs wrong tokens too (wrong=...): logit(answer) - logit(wrong)")
        shapes = [t.shape for t in (self.pos, self.answer, self.wrong, self.mask) if t is not None]
        try:
            torch.broadcast_shapes(*shapes)
        except RuntimeError:
            raise ValueError(f"metric positions / answers / mask do not broadcast: shapes {[tuple(s) for s in shapes]}") from None

    # --- positions -----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "kl"

    def _abs_pos(self, seq_len: int) -> torch.Tensor:
        pos = torch.where(self.pos < 0, self.pos + seq_len, self.pos)
        if (pos < 0).any() or (pos >= seq_len).any():
            bad = self.pos[(pos < 0) | (pos >= seq_len)][:5].tolist()
            raise ValueError(f"metric reads positions {bad}, outside a sequence of {seq_len} tokens")
        return pos

    def read_positions(self, seq_len: int) -> list[int]:
        """Sorted absolute positions the metric reads (the union over rows)."""
        pos = self._abs_pos(seq_len)
        if self.mask is not None:
            pos = pos.expand(torch.broadcast_shapes(pos.shape, self.mask.shape))[
                self.mask.expand(torch.broadcast_shapes(pos.shape, self.mask.shape))]
        return sorted(set(pos.flatten().tolist()))

    def check(self, batch: int, seq_len: int, d_vocab: int) -> "Metric":
        """Validates the metric against a batch of ``[batch, seq_len]`` tokens and a vocabulary."""
        for what, t in (("pos", self.pos), ("answer", self.answer), ("wrong", self.wrong), ("mask", self.mask)):
            if t is not None and t.shape[0] not in (1, batch):
                raise ValueError(f"metric {what} has {t.shape[0]} rows but the prompts have {batch}")
        self._abs_pos(seq_len)
        for what, t in (("answer", self.answer), ("wrong", self.wrong)):
            if t is not None and ((t < 0) | (t >= d_vocab)).any():
                raise ValueError(f"metric {what} tokens must be in [0, {d_vocab}); got {t.min().item()}..{t.max().item()}")
        if self.reference is not None and self.reference.shape[-1] != d_vocab:
            raise ValueError(f"kl reference has vocabulary {self.reference.shape[-1]}, the model {d_vocab}")
        if self.mask is not None and not self.mask.any(-1).all():
            raise ValueError("some rows have no scored position (all labels IGNORE)")
        return self

    # --- evaluation ----------------------------------------------------------------------
    def vocab_needed(self) -> list[int] | None:
        """The token ids whose logits the metric reads, or None when it needs the whole
        distribution (probabilities, KL, arg-max)."""
        if self.kind not in ("logit", "logit_diff"):
            return None
        toks = self.answer.flatten().tolist() + (self.wrong.flatten().tolist() if self.wrong is not None else [])
        return sorted(set(toks))

    def values(self, logits: torch.Tensor, positions: Sequence[int] | None = None,
               vocab: Sequence[int] | None = None) -> torch.Tensor:
        """Per-row metric ``[..., batch]`` from logits ``[..., batch, pos, vocab]``.

        positions: when given, ``logits`` are compact: position axis ``i`` holds absolute
        position ``positions[i]`` (as from :meth:`read_positions`; the metric must have been
        resolved to absolute positions with :meth:`resolve`).  vocab: when given, the last
        axis holds only these token ids (as from :meth:`vocab_needed`).
        """
        if vocab is not None:
            return self._remapped(vocab).values(logits, positions)
        batch, n_pos = logits.shape[-3], logits.shape[-2]
        if positions is None:
            pos = self._abs_pos(n_pos)
        else:
            if (self.pos < 0).any():
                raise ValueError("resolve negative metric positions (metric.resolve(seq_len)) before compact use")
            top = max(max(positions), int(self.pos.max()))
            lookup = torch.full((top + 1,), -1, dtype=torch.long)
            lookup[torch.tensor(list(positions))] = torch.arange(len(positions))
            pos = lookup[self.pos]
            missing = pos < 0
            if self.mask is not None:          # unscored entries may point anywhere
                missing = missing & self.mask.expand(torch.broadcast_shapes(pos.shape, self.mask.shape))
            if missing.any():
                raise ValueError("compact logits do not hold every position the metric reads")
            pos = pos.clamp(min=0)
        shape = torch.broadcast_shapes(pos.shape, *(t.shape for t in (self.answer, self.wrong, self.mask)
                                                    if t is not None))
        k = shape[1]
        pos = pos.expand(batch, k).to(logits.device)
        lead = logits.shape[:-3]
        idx = pos.view(*([1] * len(lead)), batch, k, 1).expand(*lead, batch, k, logits.shape[-1])
        at = logits.gather(-2, idx).float()                                       # [..., batch, k, vocab]
        out = self._score(at, batch, k)                                           # [..., batch, k]
        if self.mask is None:
            return out.mean(-1)
        m = self.mask.expand(batch, k).to(out.device).float()
        return (out * m).sum(-1) / m.sum(-1)

    def _remapped(self, vocab: Sequence[int]) -> "Metric":
        if self.kind not in ("logit", "logit_diff"):
            raise ValueError(f"the {self.kind} metric needs the whole vocabulary, not {len(vocab)} logits")
        lookup = torch.full((max(vocab) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(list(vocab))] = torch.arange(len(vocab))
        new = {k: lookup[getattr(self, k).clamp(max=max(vocab))] for k in ("answer", "wrong") if getattr(self, k) is not None}
        if any(((t < 0).any() for t in new.values())) or any((getattr(self, k) > max(vocab)).any() for k in new):
            raise ValueError("the compact vocabulary lacks tokens the metric reads")
        return replace(self, **new)

    def _tokens(self, t: torch.Tensor, batch: int, k: int, like: torch.Tensor) -> torch.Tensor:
        t = t.expand(batch, k).to(like.device)
        return t.view(*([1] * (like.ndim - 3)), batch, k, 1).expand(*like.shape[:-1], 1)

    def _score(self, at: torch.Tensor, batch: int, k: int) -> torch.Tensor:
        if self.kind == "kl":
            ref = self.reference.to(at.device)
            if ref.shape[0] == 1:
                ref = ref.expand(batch, *ref.shape[1:])
            ref = ref.expand(*at.shape[:-3], *ref.shape)
            logp = at.log_softmax(-1)
            return (ref.exp() * (ref - logp)).sum(-1)
        ans = self._tokens(self.answer, batch, k, at)
        if self.kind == "logit_diff":
            return (at.gather(-1, ans) - at.gather(-1, self._tokens(self.wrong, batch, k, at)))[..., 0]
        if self.kind == "logit":
            return at.gather(-1, ans)[..., 0]
        if self.kind == "prob":
            return at.softmax(-1).gather(-1, ans)[..., 0]
        if self.kind == "logprob":
            return at.log_softmax(-1).gather(-1, ans)[..., 0]
        return (at.argmax(-1, keepdim=True) == ans).float()[..., 0]                # accuracy

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Batch mean of :meth:`values` (a scalar for ``[batch, pos, vocab]`` logits)."""
        return self.values(logits).mean(-1)

    def tile(self, n: int) -> "Metric":
        """The metric for a batch made of ``n`` copies of the prompts (sample-major, as ``tokens.repeat(n, 1)``)."""
        if n == 1:
            return self

        def rep(t):
            return t if t is None or t.shape[0] == 1 else t.repeat(n, *([1] * (t.ndim - 1)))
        return replace(self, pos=rep(self.pos), answer=rep(self.answer), wrong=rep(self.wrong), mask=rep(self.mask),
                       reference=rep(self.reference))

    def resolve(self, seq_len: int) -> "Metric":
        """The same metric with negative positions made absolute for sequences of ``seq_len``."""
        return replace(self, pos=self._abs_pos(seq_len))


# --- constructors ---------------------------------------------------------------------------
def _metric(kind: str, pos: IntLike, answer=None, wrong=None, name: str = "", **kw) -> Metric:
    return Metric(kind, _as_2d(pos, "pos"), _as_2d(answer, "answer"), _as_2d(wrong, "wrong"), name=name, **kw)


def logit_diff(answer: IntLike, wrong: IntLike, pos: IntLike = -1) -> Metric:
    """logit(answer) - logit(wrong) at ``pos`` (default the last position), per row."""
    return _metric("logit_diff", pos, answer, wrong)


def logit(answer: IntLike, pos: IntLike = -1) -> Metric:
    """The answer's logit at ``pos``."""
    return _metric("logit", pos, answer)


def prob(answer: IntLike, pos: IntLike = -1) -> Metric:
    """The answer's probability at ``pos``."""
    return _metric("prob", pos, answer)


def logprob(answer: IntLike, pos: IntLike = -1) -> Metric:
    """The answer's log-probability (nats) at ``pos``."""
    return _metric("logprob", pos, answer)


def accuracy(answer: IntLike, pos: IntLike = -1) -> Metric:
    """1 where the arg-max at ``pos`` is the answer, else 0 (mean over rows = task accuracy)."""
    return _metric("accuracy", pos, answer)


def kl(clean_logits: torch.Tensor, pos: IntLike = -1) -> Metric:
    """KL(clean || patched) in nats at ``pos``; ``clean_logits`` ``[batch, pos, vocab]`` of the clean run."""
    p = _as_2d(pos, "pos")
    n = clean_logits.shape[-2]
    absolute = torch.where(p < 0, p + n, p).expand(clean_logits.shape[0], p.shape[1])
    if (absolute < 0).any() or (absolute >= n).any():
        raise ValueError(f"kl positions {p.flatten().tolist()} are outside the {n} clean positions")
    ref = clean_logits.detach().float().cpu().log_softmax(-1)
    ref = ref.gather(1, absolute[..., None].expand(-1, -1, ref.shape[-1]))
    return Metric("kl", absolute, reference=ref)


def from_labels(labels: torch.Tensor, kind: str = "logprob", wrong: torch.Tensor | None = None) -> Metric:
    """A metric read at every position whose label is not ``IGNORE`` (-100), e.g. a TaskBatch's labels.

    labels: ``[batch, pos]`` target token of the logits at each position.  kind:
    ``logprob`` (default), ``prob``, ``logit``, ``accuracy`` or ``logit_diff`` (then
    ``wrong`` ``[batch, pos]`` gives the competing token at the same positions).
    """
    if kind == "kl":
        raise ValueError("kl compares distributions, not labels: use metrics.kl(clean_logits, pos)")
    labels = labels.detach().cpu().long()
    if labels.ndim != 2:
        raise ValueError(f"labels must be [batch, pos], got shape {tuple(labels.shape)}")
    keep = labels != IGNORE
    if not keep.any(-1).all():
        raise ValueError("every row needs at least one labelled position (labels != IGNORE)")
    k = int(keep.sum(-1).max())
    order = torch.argsort((~keep).int(), dim=1, stable=True)[:, :k]   # labelled positions first
    mask = keep.gather(1, order)
    answer = labels.gather(1, order).clamp(min=0)
    w = None
    if kind == "logit_diff":
        if wrong is None:
            raise ValueError("from_labels(kind='logit_diff') needs wrong=[batch, pos] competing tokens")
        w = wrong.detach().cpu().long().gather(1, order).clamp(min=0)
    return Metric(kind, order, answer, w, mask=mask, name=f"{kind} (labels)")


def normalise(value: float | torch.Tensor, clean: float, corrupt: float) -> float | torch.Tensor:
    """``(value - corrupt) / (clean - corrupt)``: 0 = the corrupt run's value, 1 = the clean run's."""
    gap = clean - corrupt
    if abs(float(gap)) < 1e-12:
        raise ValueError(f"clean and corrupt runs give the same metric value ({float(clean):.6g}): "
                         "nothing to normalise; pick a corruption or metric that changes the answer")
    return (value - corrupt) / gap


def token_id(model, token: str | int) -> int:
    """The id of one token given as an id or as text (the text must be a single token)."""
    if isinstance(token, int) or (isinstance(token, str) and token.strip().lstrip("-").isdigit() and model.vocab is None
                                  and model.tokenizer is None):
        tid = int(token)
    else:
        ids = model.to_tokens(str(token), prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens, not one: {model.to_str_tokens(torch.tensor(ids))}")
        tid = ids[0]
    if not 0 <= tid < model.cfg.d_vocab:
        raise ValueError(f"token id {tid} is outside the vocabulary [0, {model.cfg.d_vocab})")
    return tid


def default_metric(kind: str, clean_logits: torch.Tensor, corrupt_logits: torch.Tensor,
                   pos: IntLike = -1, answer: IntLike | None = None, wrong: IntLike | None = None) -> Metric:
    """A metric from its name alone (for the command line): answers default to the clean run's arg-max
    at ``pos`` and, for ``logit_diff``, ``wrong`` to the corrupt run's arg-max there."""
    if kind not in KINDS:
        raise ValueError(f"unknown metric {kind!r}; choose one of {KINDS}")
    if clean_logits.shape != corrupt_logits.shape:
        raise ValueError(f"clean and corrupt logits differ in shape: {tuple(clean_logits.shape)} vs "
                         f"{tuple(corrupt_logits.shape)} (the prompts must be aligned)")
    if kind == "kl":
        return kl(clean_logits, pos)
    p = _as_2d(pos, "pos")
    n = clean_logits.shape[-2]
    p_abs = torch.where(p < 0, p + n, p).expand(clean_logits.shape[0], p.shape[1])
    if answer is None:
        answer = clean_logits.detach().cpu().gather(1, p_abs[..., None].expand(-1, -1, clean_logits.shape[-1])).argmax(-1)
    if kind != "logit_diff":
        return _metric(kind, p_abs, answer)
    if wrong is None:
        wrong = corrupt_logits.detach().cpu().gather(1, p_abs[..., None].expand(-1, -1, corrupt_logits.shape[-1])).argmax(-1)
        if (_as_2d(wrong, "wrong") == _as_2d(answer, "answer")).all():
            raise ValueError("clean and corrupt runs predict the same token, so logit_diff has no default wrong "
                             "token: pass wrong=... explicitly")
    return _metric("logit_diff", p_abs, answer, wrong)
