"""Prompt sets for function vectors (:mod:`interp.function_vectors`): a task's clean few-shot
prompts, their corrupt twins and zero-shot queries (:class:`FunctionPrompts`), and the two zoo
demonstrations: :func:`mode_task_prompts` (``steer-2l``) and :func:`fixed_mapping_prompts`
(``recall-2l`` / ``induction-2l``).  Real-text tasks: :func:`interp.tasks.text.function_prompts`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp import metrics as M
from interp.errors import InputError
from interp.metrics import Metric
from interp.model import Tokens
from interp.tasks.synthetic import BOS


@dataclass
class FunctionPrompts:
    """Prompts of one task ("function").

    clean: prompts that demonstrate the task; corrupt: the same format with the
    demonstrations broken (shuffled labels); zero_shot: prompts without usable
    demonstrations, where the function vector is tested (tensors, or token batches whose rows
    differ in length, e.g. :func:`interp.tasks.text.function_prompts`).  The task's answer
    is ``answers`` ``[n]`` (one token per row, shared by the three prompt sets) or, for a
    task whose answer is a set of tokens, ``targets``.  info: the task's ground truth.
    """

    clean: Tokens
    corrupt: Tokens
    zero_shot: Tokens
    answers: torch.Tensor | None = None
    targets: list[int] | None = None
    info: dict = field(default_factory=dict)

    def metric(self, pos: int = -1) -> Metric:
        """Probability of the answer (or of the target set) at ``pos`` (a :class:`~interp.metrics.Metric`)."""
        if self.answers is not None:
            return M.prob(self.answers, pos)
        if self.targets is None:
            raise InputError("these prompts have neither answers nor targets: give one to build a metric")
        return M.set_prob(self.targets, pos)


def fixed_mapping_prompts(
    n: int, *, n_keys: int = 8, n_demos: int = 4, d_vocab: int = 128, seed: int = 0, mapping_seed: int = 0
) -> FunctionPrompts:
    """One fixed key -> value mapping ``f`` as the function, in the associative-recall format
    ``[BOS] k1 f(k1) .. kn f(kn) q`` (keys in [2, d_vocab/2), values in [d_vocab/2, d_vocab):
    the format of ``recall-2l``, and a repeated-token pattern for ``induction-2l``).

    The mapping (drawn with ``mapping_seed``) sends ``n_keys`` distinct keys to distinct
    values; each clean prompt shows ``n_demos`` of its pairs and queries one of the shown
    keys; answers = ``f(q)``.  The corrupt twin cycles the labels by one demonstration, so
    ``f(q)`` is still present but bound to another key.  zero_shot = ``[BOS, q]``.
    ``targets`` = the range of ``f``; ``info["mapping"]`` = ``{key: value}``.

    These models answer by retrieving the value bound to the query in the context; their
    weights store no ``f``.  A vector averaged over prompts can carry ``f``'s output space
    (its range) but not which value belongs to which key.
    """
    half = d_vocab // 2
    if not 2 <= n_demos <= n_keys <= min(half - 2, d_vocab - half):
        raise InputError(f"need 2 <= n_demos ({n_demos}) <= n_keys ({n_keys}) <= {min(half - 2, d_vocab - half)}")
    g = torch.Generator().manual_seed(int(mapping_seed))
    keys = torch.randperm(half - 2, generator=g)[:n_keys] + 2
    values = torch.randperm(d_vocab - half, generator=g)[:n_keys] + half
    g = torch.Generator().manual_seed(int(seed))
    demo = torch.stack([torch.randperm(n_keys, generator=g)[:n_demos] for _ in range(n)])  # [n, n_demos]
    q = torch.randint(0, n_demos, (n,), generator=g)
    k, v = keys[demo], values[demo]
    clean = torch.full((n, 2 * n_demos + 2), BOS, dtype=torch.long)
    clean[:, 1:-1:2], clean[:, 2:-1:2] = k, v
    clean[:, -1] = k.gather(1, q[:, None])[:, 0]
    corrupt = clean.clone()
    corrupt[:, 2:-1:2] = v.roll(1, dims=1)
    zero_shot = torch.stack([torch.full((n,), BOS), clean[:, -1]], 1)
    return FunctionPrompts(
        clean,
        corrupt,
        zero_shot,
        answers=v.gather(1, q[:, None])[:, 0],
        targets=sorted(values.tolist()),
        info={"mapping": dict(zip(keys.tolist(), values.tolist())), "query_index": q, "value_pos": 2 + 2 * q},
    )


def mode_task_prompts(n: int, *, d_vocab: int = 64, n_ctx: int = 16, seed: int = 0) -> FunctionPrompts:
    """The ``steer-2l`` task as a function: "continue from the vocabulary half that the
    context demonstrates".  The model reads the half from the mode token *and* from the
    tokens already seen (an A cue followed by B tokens is continued in B), so the tokens
    act as demonstrations of the task.

    clean: mode-B sequences (task B demonstrated); corrupt: cue A and every later token from
    a random half (the demonstrations scrambled, format kept); zero_shot: held-out
    scrambled prompts of the same kind (no consistent demonstrations; seed + 1).  targets:
    the B half (:func:`interp.tasks.mode_halves`).
    """
    from interp.tasks import mode_halves, mode_sequences

    def scrambled(s: int) -> torch.Tensor:
        b = mode_sequences(n, d_vocab=d_vocab, n_ctx=n_ctx, mode=1, seed=s).tokens
        a = mode_sequences(n, d_vocab=d_vocab, n_ctx=n_ctx, mode=0, seed=s + 7919).tokens
        pick = torch.rand(n, n_ctx, generator=torch.Generator().manual_seed(s + 104729)) < 0.5
        out = torch.where(pick, b, a)
        out[:, 0] = 0  # cue A
        return out

    clean = mode_sequences(n, d_vocab=d_vocab, n_ctx=n_ctx, mode=1, seed=seed).tokens
    _, half_b = mode_halves(d_vocab)
    return FunctionPrompts(
        clean,
        scrambled(seed + 1),
        scrambled(seed + 2),
        targets=list(half_b),
        info={"task": "continue in vocabulary half B"},
    )
