"""The one metric type: differentiable, batched functions of the logits that read only the
positions they need.  Patching, attribution, circuits, ablation, steering, function vectors
and lenses all measure with a :class:`Metric`.

A :class:`Metric` reads logits at a few positions per row (``pos`` ``[batch, k]``; negative
positions count from each row's end, so ``-1`` is each row's last real token also in a
padded batch once :meth:`Metric.resolve` is given the lengths) and returns one number per
row, the mean over its ``k`` read positions (``mask`` drops unscored entries).
``metric(logits)`` is the batch mean (a scalar tensor, differentiable; what TransformerLens's
``patching_metric`` expects); :meth:`Metric.values` keeps the rows.

Every metric works on logits with extra leading dimensions (``[..., batch, pos, vocab]``)
and on *compact* logits that hold only the positions the metric reads (see
:meth:`Metric.read_positions`), and, for logit metrics, only the vocabulary columns it reads.

Kinds (units):

- ``logit_diff``: logit(answer) - logit(wrong), in logits;
- ``logit``: logit(answer);
- ``prob``: softmax probability of the answer, in [0, 1];
- ``logprob``: log-probability of the answer, in nats (<= 0);
- ``loss``: cross-entropy of the answer, in nats (= -logprob; lower is better);
- ``accuracy``: 1 where the arg-max is the answer, else 0;
- ``set_prob``: probability mass on a token set ``targets``, in [0, 1];
- ``set_logodds``: log P(targets) - log P(contrast) of two token sets, in nats;
- ``kl``: KL(reference || run) of the next-token distributions, in nats (>= 0; lower is
  closer to the reference run).

Normalised effect (Zhang & Nanda 2023): ``(value - corrupt) / (clean - corrupt)``, defined
once in :func:`normalise` (NaN, with a warning, where clean and corrupt agree).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import overload

import torch

from interp.errors import InputError

IGNORE = -100
KINDS = ("logit_diff", "logit", "prob", "logprob", "loss", "accuracy", "set_prob", "set_logodds", "kl")
LOWER_IS_BETTER = ("kl", "loss")

IntLike = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor


@overload
def _as_2d(x: IntLike, what: str) -> torch.Tensor: ...
@overload
def _as_2d(x: None, what: str) -> None: ...
@overload
def _as_2d(x: IntLike | None, what: str) -> torch.Tensor | None: ...
def _as_2d(x: IntLike | None, what: str) -> torch.Tensor | None:
    """``[b, k]`` int64 from an int, a list, a ``[b]`` or ``[b, k]`` tensor (b may be 1 = broadcast)."""
    if x is None:
        return None
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.tensor(x)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise InputError(f"{what} must be integers, got {t.dtype}")
    t = t.long()
    if t.ndim == 0:
        return t.view(1, 1)
    if t.ndim == 1:
        return t.view(-1, 1)
    if t.ndim == 2:
        return t
    raise InputError(f"{what} must be an int, a [batch] or a [batch, k] tensor, got shape {tuple(t.shape)}")


def _ids(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(list(x) if not isinstance(x, torch.Tensor) else x).long().reshape(-1).cpu()
    if t.numel() == 0:
        raise InputError(f"{what} needs at least one token id")
    return torch.unique(t)


@dataclass(frozen=True, eq=False)
class Metric:
    """A metric over logits.  Build one with :func:`logit_diff`, :func:`prob`, ... or :func:`from_labels`.

    kind: one of :data:`KINDS`.  pos: ``[b, k]`` positions read.  answer / wrong: ``[b, k]``
    token ids.  targets / contrast: token sets ``[m]`` (set metrics).  mask: ``[b, k]`` which
    read entries count.  reference: ``[b, k, vocab]`` reference log-probabilities (``kl``).
    b may be 1 (broadcast over the batch).
    """

    kind: str
    pos: torch.Tensor
    answer: torch.Tensor | None = None
    wrong: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    name: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"metric kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "kl":
            if self.reference is None:
                raise InputError("the kl metric needs the reference logits: metrics.kl(reference_logits, pos=...)")
        elif self.kind.startswith("set_"):
            if self.targets is None or (self.kind == "set_logodds" and self.contrast is None):
                raise InputError(
                    f"the {self.kind} metric needs token sets (targets=..."
                    + (", contrast=...)" if self.kind == "set_logodds" else ")")
                )
        elif self.answer is None:
            raise InputError(f"the {self.kind} metric needs answer tokens (answer=...), e.g. the correct next token")
        if self.kind == "logit_diff" and self.wrong is None:
            raise InputError("the logit_diff metric needs wrong tokens too (wrong=...): logit(answer) - logit(wrong)")
        shapes = [t.shape for t in (self.pos, self.answer, self.wrong, self.mask) if t is not None]
        try:
            torch.broadcast_shapes(*shapes)
        except RuntimeError:
            raise InputError(
                f"metric positions / answers / mask do not broadcast: shapes {[tuple(s) for s in shapes]}"
            ) from None

    # --- positions -----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def higher_is_better(self) -> bool:
        return self.kind not in LOWER_IS_BETTER

    def _abs_pos(self, seq_len: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            end = torch.tensor(seq_len)
        else:
            end = lengths.detach().cpu().long().view(-1, 1)
            if self.pos.shape[0] not in (1, end.shape[0]):
                raise InputError(f"metric positions have {self.pos.shape[0]} rows but the batch {end.shape[0]}")
        pos = torch.where(self.pos < 0, self.pos + end, self.pos)
        limit = end if lengths is not None else torch.tensor(seq_len)
        bad = (pos < 0) | (pos >= limit)
        if self.mask is not None:
            bad = bad & self.mask.expand(torch.broadcast_shapes(bad.shape, self.mask.shape))
        if bad.any():
            raw = self.pos.expand(torch.broadcast_shapes(self.pos.shape, bad.shape))[bad][:5].tolist()
            raise InputError(
                f"metric reads positions {raw}, outside sequences of "
                f"{seq_len if lengths is None else sorted(set(lengths.tolist()))} tokens"
            )
        return pos.clamp(min=0)

    def read_positions(self, seq_len: int) -> list[int]:
        """Sorted absolute positions the metric reads (the union over rows; resolve first)."""
        pos = self._abs_pos(seq_len)
        if self.mask is not None:
            pos = pos.expand(torch.broadcast_shapes(pos.shape, self.mask.shape))[
                self.mask.expand(torch.broadcast_shapes(pos.shape, self.mask.shape))
            ]
        return sorted(set(pos.flatten().tolist()))

    def check(self, batch: int, seq_len: int, d_vocab: int) -> Metric:
        """Validates the metric against a batch of ``[batch, seq_len]`` tokens and a vocabulary."""
        for what, t in (("pos", self.pos), ("answer", self.answer), ("wrong", self.wrong), ("mask", self.mask)):
            if t is not None and t.shape[0] not in (1, batch):
                raise InputError(f"metric {what} has {t.shape[0]} rows but the prompts have {batch}")
        self._abs_pos(seq_len)
        for what, t in (
            ("answer", self.answer),
            ("wrong", self.wrong),
            ("targets", self.targets),
            ("contrast", self.contrast),
        ):
            if t is not None and ((t < 0) | (t >= d_vocab)).any():
                raise InputError(
                    f"metric {what} tokens must be in the vocabulary [0, {d_vocab}); got {t.min().item()}..{t.max().item()}"
                )
        if self.reference is not None and self.reference.shape[-1] != d_vocab:
            raise InputError(f"kl reference has vocabulary {self.reference.shape[-1]}, the model {d_vocab}")
        if self.mask is not None and not self.mask.any(-1).all():
            raise InputError("some rows have no scored position (all labels IGNORE)")
        return self

    def resolve(self, seq_len: int, lengths: torch.Tensor | None = None) -> Metric:
        """The same metric with negative positions made absolute: for sequences of ``seq_len``
        or, in a padded batch, counted from each row's ``lengths``."""
        return replace(self, pos=self._abs_pos(seq_len, lengths))

    # --- evaluation ----------------------------------------------------------------------
    def vocab_needed(self) -> list[int] | None:
        """The token ids whose logits the metric reads, or None when it needs the whole
        distribution (probabilities, KL, arg-max)."""
        if self.kind not in ("logit", "logit_diff"):
            return None
        assert self.answer is not None  # __post_init__: logit metrics have answers
        toks = self.answer.flatten().tolist() + (self.wrong.flatten().tolist() if self.wrong is not None else [])
        return sorted(set(toks))

    def values(
        self, logits: torch.Tensor, positions: Sequence[int] | None = None, vocab: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Per-row metric ``[..., batch]`` from logits ``[..., batch, pos, vocab]``.

        positions: when given, ``logits`` are compact: position axis ``i`` holds absolute
        position ``positions[i]`` (the metric must be resolved).  vocab: when given, the last
        axis holds only these token ids (as from :meth:`vocab_needed`).
        """
        if vocab is not None:
            return self._remapped(vocab).values(logits, positions)
        batch, n_pos = logits.shape[-3], logits.shape[-2]
        if positions is None:
            pos = self._abs_pos(n_pos)
        else:
            if (self.pos < 0).any():
                raise RuntimeError("resolve negative metric positions (metric.resolve(seq_len)) before compact use")
            top = max(max(positions), int(self.pos.max()))
            lookup = torch.full((top + 1,), -1, dtype=torch.long)
            lookup[torch.tensor(list(positions))] = torch.arange(len(positions))
            pos = lookup[self.pos]
            missing = pos < 0
            if self.mask is not None:  # unscored entries may point anywhere
                missing = missing & self.mask.expand(torch.broadcast_shapes(pos.shape, self.mask.shape))
            if missing.any():
                raise RuntimeError("compact logits do not hold every position the metric reads")
            pos = pos.clamp(min=0)
        shape = torch.broadcast_shapes(
            pos.shape, *(t.shape for t in (self.answer, self.wrong, self.mask) if t is not None)
        )
        k = shape[1]
        pos = pos.expand(batch, k).to(logits.device)
        lead = logits.shape[:-3]
        idx = pos.view(*([1] * len(lead)), batch, k, 1).expand(*lead, batch, k, logits.shape[-1])
        at = logits.gather(-2, idx).float()  # [..., batch, k, vocab]
        out = self._score(at, batch, k)  # [..., batch, k]
        if self.mask is None:
            return out.mean(-1)
        m = self.mask.expand(batch, k).to(out.device).float()
        return (out * m).sum(-1) / m.sum(-1)

    def _remapped(self, vocab: Sequence[int]) -> Metric:
        if self.kind not in ("logit", "logit_diff"):
            raise RuntimeError(f"the {self.kind} metric needs the whole vocabulary, not {len(vocab)} logits")
        lookup = torch.full((max(vocab) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(list(vocab))] = torch.arange(len(vocab))
        given = {k: t for k, t in (("answer", self.answer), ("wrong", self.wrong)) if t is not None}
        new = {k: lookup[t.clamp(max=max(vocab))] for k, t in given.items()}
        if any((t < 0).any() for t in new.values()) or any((t > max(vocab)).any() for t in given.values()):
            raise RuntimeError("the compact vocabulary lacks tokens the metric reads")
        return replace(self, answer=new.get("answer"), wrong=new.get("wrong"))

    def _tokens(self, t: torch.Tensor, batch: int, k: int, like: torch.Tensor) -> torch.Tensor:
        t = t.expand(batch, k).to(like.device)
        return t.view(*([1] * (like.ndim - 3)), batch, k, 1).expand(*like.shape[:-1], 1)

    def _score(self, at: torch.Tensor, batch: int, k: int) -> torch.Tensor:
        # __post_init__ guarantees the fields each kind reads
        if self.kind == "kl":
            assert self.reference is not None
            ref = self.reference.to(at.device)
            if ref.shape[0] == 1:
                ref = ref.expand(batch, *ref.shape[1:])
            ref = ref.expand(*at.shape[:-3], *ref.shape)
            logp = at.log_softmax(-1)
            return (ref.exp() * (ref - logp)).sum(-1)
        if self.kind.startswith("set_"):
            assert self.targets is not None
            logp = at.log_softmax(-1)
            mass = logp[..., self.targets.to(at.device)].logsumexp(-1)
            if self.kind == "set_prob":
                return mass.exp()
            assert self.contrast is not None
            return mass - logp[..., self.contrast.to(at.device)].logsumexp(-1)
        assert self.answer is not None
        ans = self._tokens(self.answer, batch, k, at)
        if self.kind == "logit_diff":
            assert self.wrong is not None
            return (at.gather(-1, ans) - at.gather(-1, self._tokens(self.wrong, batch, k, at)))[..., 0]
        if self.kind == "logit":
            return at.gather(-1, ans)[..., 0]
        if self.kind == "prob":
            return at.softmax(-1).gather(-1, ans)[..., 0]
        if self.kind in ("logprob", "loss"):
            lp = at.log_softmax(-1).gather(-1, ans)[..., 0]
            return lp if self.kind == "logprob" else -lp
        return (at.argmax(-1, keepdim=True) == ans).float()[..., 0]  # accuracy

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Batch mean of :meth:`values` (a scalar for ``[batch, pos, vocab]`` logits)."""
        return self.values(logits).mean(-1)

    def tile(self, n: int) -> Metric:
        """The metric for a batch made of ``n`` copies of the prompts (sample-major, as ``tokens.repeat(n, 1)``)."""
        if n == 1:
            return self

        def rep(t):
            return t if t is None or t.shape[0] == 1 else t.repeat(n, *([1] * (t.ndim - 1)))

        return replace(
            self,
            pos=rep(self.pos),
            answer=rep(self.answer),
            wrong=rep(self.wrong),
            mask=rep(self.mask),
            reference=rep(self.reference),
        )

    def rows(self, index: torch.Tensor) -> Metric:
        """The metric of a subset of the batch's rows (row-broadcast fields stay as they are)."""
        index = torch.as_tensor(index).long().cpu()

        def sub(t):
            return t if t is None or t.shape[0] == 1 else t[index]

        return replace(
            self,
            pos=sub(self.pos),
            answer=sub(self.answer),
            wrong=sub(self.wrong),
            mask=sub(self.mask),
            reference=sub(self.reference),
        )


# --- constructors ---------------------------------------------------------------------------
def _metric(kind: str, pos: IntLike, answer=None, wrong=None, name: str = "", **kw) -> Metric:
    return Metric(kind, _as_2d(pos, "pos"), _as_2d(answer, "answer"), _as_2d(wrong, "wrong"), name=name, **kw)


def logit_diff(answer: IntLike, wrong: IntLike, pos: IntLike = -1) -> Metric:
    """logit(answer) - logit(wrong) at ``pos`` (default each row's last position), per row."""
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


def loss(answer: IntLike, pos: IntLike = -1) -> Metric:
    """Cross-entropy (nats) of the answer at ``pos``."""
    return _metric("loss", pos, answer)


def accuracy(answer: IntLike, pos: IntLike = -1) -> Metric:
    """1 where the arg-max at ``pos`` is the answer, else 0 (mean over rows = task accuracy)."""
    return _metric("accuracy", pos, answer)


def set_prob(targets: Sequence[int] | torch.Tensor, pos: IntLike = -1) -> Metric:
    """Probability mass on the token set ``targets`` at ``pos`` (e.g. a concept's words)."""
    return Metric("set_prob", _as_2d(pos, "pos"), targets=_ids(targets, "set_prob"))


def set_logodds(
    targets: Sequence[int] | torch.Tensor, contrast: Sequence[int] | torch.Tensor, pos: IntLike = -1
) -> Metric:
    """log P(targets) - log P(contrast) at ``pos``, in nats: a behaviour measure that does not
    saturate at small probabilities (positive vs negative words, say)."""
    return Metric(
        "set_logodds",
        _as_2d(pos, "pos"),
        targets=_ids(targets, "set_logodds targets"),
        contrast=_ids(contrast, "set_logodds contrast"),
    )


def kl(reference_logits: torch.Tensor, pos: IntLike | None = -1, lengths: torch.Tensor | None = None) -> Metric:
    """KL(reference || run) in nats at ``pos``; ``reference_logits`` ``[batch, pos, vocab]`` of
    the reference (clean, or unsteered) run.  ``pos=None`` reads every position (each row's
    real ones, given ``lengths``)."""
    n = reference_logits.shape[-2]
    b = reference_logits.shape[0]
    mask = None
    if pos is None:
        absolute = torch.arange(n)[None].expand(b, n)
        if lengths is not None:
            mask = absolute < lengths.detach().cpu()[:, None]
    else:
        p = _as_2d(pos, "pos")
        end = lengths.detach().cpu().view(-1, 1) if lengths is not None else torch.tensor(n)
        absolute = torch.where(p < 0, p + end, p).expand(b, p.shape[1])
        if (absolute < 0).any() or (absolute >= n).any():
            raise InputError(f"kl positions {p.flatten().tolist()} are outside the {n} reference positions")
    # only the read positions go to the CPU (not a whole [batch, pos, vocab] copy)
    at = absolute.to(reference_logits.device)[..., None].expand(-1, -1, reference_logits.shape[-1])
    ref = reference_logits.detach().gather(1, at).float().log_softmax(-1).cpu()
    return Metric("kl", absolute, reference=ref, mask=mask)


def from_labels(labels: torch.Tensor, kind: str = "logprob", wrong: torch.Tensor | None = None) -> Metric:
    """A metric read at every position whose label is not ``IGNORE`` (-100), e.g. a TaskBatch's labels.

    labels: ``[batch, pos]``, the token the logits at each position should predict.  kind:
    ``logprob`` (default), ``loss``, ``prob``, ``accuracy``, ``logit`` or ``logit_diff`` (needs
    ``wrong`` ``[batch, pos]``).  Rows may score different numbers of positions.
    """
    if kind in ("kl", "set_prob", "set_logodds"):
        raise InputError(f"from_labels builds answer metrics; {kind} has no labels")
    labels = labels.detach().cpu().long()
    if labels.ndim != 2:
        raise InputError(f"labels must be [batch, pos], got shape {tuple(labels.shape)}")
    keep = labels != IGNORE
    if not keep.any(-1).all():
        raise InputError("some rows have no labelled position")
    k = int(keep.sum(-1).max())
    order = torch.argsort((~keep).int(), dim=1, stable=True)[:, :k]  # labelled positions first
    mask = keep.gather(1, order)
    answer = labels.gather(1, order).clamp(min=0)
    w = None
    if kind == "logit_diff":
        if wrong is None:
            raise InputError("from_labels(kind='logit_diff') needs wrong=[batch, pos] competing tokens")
        w = wrong.detach().cpu().long().gather(1, order).clamp(min=0)
    return Metric(kind, order, answer, w, mask=mask, name=f"{kind} (labels)")


def normalise(value, clean: float, corrupt: float):
    """``(value - corrupt) / (clean - corrupt)``: 0 = the corrupt run's value, 1 = the clean
    run's; NaN (with a warning) where clean and corrupt agree, since nothing is to be restored."""
    gap = float(clean) - float(corrupt)
    if abs(gap) < 1e-12:
        warnings.warn(
            f"clean and corrupt runs give the same metric value ({float(clean):.6g}): normalised "
            "effects are undefined (NaN); pick a corruption or metric that changes the answer",
            stacklevel=2,
        )
        return value * float("nan")
    return (value - corrupt) / gap


def default_metric(
    kind: str,
    clean_logits: torch.Tensor,
    corrupt_logits: torch.Tensor,
    pos: IntLike = -1,
    answer: IntLike | None = None,
    wrong: IntLike | None = None,
    lengths: torch.Tensor | None = None,
) -> Metric:
    """A metric from its name alone (for the command line and the app): answers default to
    the clean run's arg-max at ``pos`` and, for ``logit_diff``, ``wrong`` to the corrupt run's
    arg-max there."""
    if kind not in KINDS or kind.startswith("set_"):
        raise InputError(f"unknown metric {kind!r}; choose one of {[k for k in KINDS if not k.startswith('set_')]}")
    if clean_logits.shape != corrupt_logits.shape:
        raise InputError(
            f"clean and corrupt logits differ in shape: {tuple(clean_logits.shape)} vs "
            f"{tuple(corrupt_logits.shape)} (the prompts must be aligned)"
        )
    if kind == "kl":
        return kl(clean_logits, pos, lengths)
    p = _as_2d(pos, "pos")
    n = clean_logits.shape[-2]
    end = lengths.detach().cpu().view(-1, 1) if lengths is not None else torch.tensor(n)
    p_abs = torch.where(p < 0, p + end, p).expand(clean_logits.shape[0], p.shape[1])
    if (p_abs < 0).any() or (p_abs >= n).any():
        raise InputError(f"metric position {p.flatten().tolist()} is outside the {n} positions")

    def argmax_at(logits):
        at = p_abs.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1])
        return logits.detach().gather(1, at).argmax(-1).cpu()  # the read positions only, argmax on the device

    if answer is None:
        answer = argmax_at(clean_logits)
    if kind != "logit_diff":
        return _metric(kind, p_abs, answer)
    if wrong is None:
        wrong = argmax_at(corrupt_logits)
        if (_as_2d(wrong, "wrong") == _as_2d(answer, "answer")).all():
            raise InputError(
                "clean and corrupt runs predict the same token, so logit_diff has no default wrong "
                "token: pass wrong=... explicitly"
            )
    return _metric("logit_diff", p_abs, answer, wrong)
