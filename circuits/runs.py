"""A clean / corrupt pair with its metric: the shared set-up of every causal analysis."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits import metrics as M
from circuits.corrupt import Corruption, symmetric
from interp.errors import InputError

DIRECTIONS = ("denoise", "noise")


@dataclass
class Runs:
    """Clean and corrupt inputs, the metric, and the metric's value on each unpatched run.

    clean / corrupt: ``[batch, pos]`` tokens (``batch`` includes noise samples).
    corrupt_hooks: hooks of every corrupt run (Gaussian-noise corruption).  metric: checked and
    resolved to absolute positions.  clean_value / corrupt_value: batch means.
    """

    clean: torch.Tensor
    corrupt: torch.Tensor
    corrupt_hooks: list
    metric: M.Metric
    clean_logits: torch.Tensor
    corrupt_logits: torch.Tensor
    clean_value: float
    corrupt_value: float
    description: str = ""
    lengths: torch.Tensor | None = None

    def sides(self, direction: str) -> tuple:
        """``(base tokens, base hooks, source tokens, source hooks)`` (see :func:`sides`)."""
        return sides(Corruption(self.corrupt, self.clean, list(self.corrupt_hooks), lengths=self.lengths), direction)

    def baseline(self, direction: str) -> float:
        """The metric of the unpatched run that is patched into."""
        return self.corrupt_value if check_direction(direction) == "denoise" else self.clean_value

    def normalise(self, value):
        """``(value - corrupt) / (clean - corrupt)`` (see :func:`circuits.metrics.normalise`)."""
        return M.normalise(value, self.clean_value, self.corrupt_value)


def sides(c: Corruption, direction: str) -> tuple:
    """``(base tokens, base hooks, source tokens, source hooks)``: denoising patches clean
    activations into the corrupt run, noising corrupt activations into the clean run (token
    batches when pairs differ in length)."""
    check_direction(direction)
    corrupt, clean = c.batches()
    if direction == "denoise":
        return corrupt, list(c.hooks), clean, []
    return clean, [], corrupt, list(c.hooks)


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise InputError(
            f"direction must be one of {DIRECTIONS} (denoise: clean into corrupt; noise: corrupt into "
            f"clean), got {direction!r}"
        )
    return direction


def inputs(model, clean, corrupt) -> Corruption:
    """Validated clean / corrupt tokens as a :class:`~circuits.corrupt.Corruption` (see :func:`prepare`)."""
    if isinstance(corrupt, Corruption):
        c = corrupt
        clean_t = model.tokenize(clean).tokens
        base = c.clean[: c.clean.shape[0] // c.repeat]
        if clean_t.shape != base.shape or not torch.equal(clean_t.cpu(), base.cpu()):
            raise InputError("the Corruption was made for other clean prompts than the ones given")
    else:
        clean_b, corrupt_b = model.tokenize(clean), model.tokenize(corrupt)
        if len(clean_b) != len(corrupt_b):
            raise InputError(
                f"{len(clean_b)} clean prompts but {len(corrupt_b)} corrupt ones: pass one corrupt "
                "prompt per clean prompt"
            )
        if not torch.equal(clean_b.lengths, corrupt_b.lengths):
            bad = int((clean_b.lengths != corrupt_b.lengths).nonzero()[0])
            raise InputError(
                f"clean prompt {bad} has {int(clean_b.lengths[bad])} tokens but its corrupt prompt "
                f"{int(corrupt_b.lengths[bad])}: patching needs each pair aligned position by position "
                "(same length); pairs may differ from each other"
            )
        c = symmetric(clean_b.tokens, corrupt_b.tokens)
        if clean_b.padded:
            c.lengths = clean_b.lengths
    return Corruption(
        model.validate_tokens(c.tokens),
        model.validate_tokens(c.clean),
        list(c.hooks),
        c.repeat,
        c.description,
        c.lengths,
    )


def finish(
    model, c: Corruption, metric: M.Metric | str, clean_logits: torch.Tensor, corrupt_logits: torch.Tensor
) -> Runs:
    """The :class:`Runs` of inputs ``c`` given the logits of the unpatched clean and corrupt runs."""
    if isinstance(metric, str):
        if c.repeat > 1 and metric == "logit_diff":
            raise InputError(
                "noise corruption has no corrupt prompt to take a wrong token from: pass a Metric "
                "(e.g. metrics.logit_diff(answer, wrong)) or use metric='logprob'/'prob'/'kl'"
            )
        metric = M.default_metric(metric, clean_logits, corrupt_logits, lengths=c.lengths)
    elif isinstance(metric, M.Metric):
        metric = metric.tile(c.repeat)
    else:
        raise InputError(f"metric must be a circuits.metrics.Metric or one of {M.KINDS}, got {type(metric).__name__}")
    batch, seq_len = c.clean.shape
    metric = metric.check(batch, seq_len, model.cfg.d_vocab).resolve(seq_len, c.lengths)
    with torch.no_grad():
        clean_value, corrupt_value = float(metric(clean_logits)), float(metric(corrupt_logits))
    return Runs(
        c.clean,
        c.tokens,
        list(c.hooks),
        metric,
        clean_logits.detach(),
        corrupt_logits.detach(),
        clean_value,
        corrupt_value,
        c.description,
        c.lengths,
    )


def prepare(model, clean, corrupt, metric: M.Metric | str = "logit_diff") -> Runs:
    """Validates the inputs, runs clean and corrupt once and evaluates the metric on both.

    clean: tokens / text.  corrupt: a :class:`~circuits.corrupt.Corruption`, or corrupt tokens /
    text aligned with the clean ones.  metric: a :class:`~circuits.metrics.Metric` or one of
    :data:`~circuits.metrics.KINDS` (answers default to the clean run's prediction at the last
    position; ``logit_diff``'s wrong token to the corrupt run's).
    """
    c = inputs(model, clean, corrupt)
    corrupt_b, clean_b = c.batches()
    with torch.no_grad():
        clean_logits = model(clean_b)
        corrupt_logits = model.run_with_hooks(corrupt_b, c.hooks)
    return finish(model, c, metric, clean_logits, corrupt_logits)
