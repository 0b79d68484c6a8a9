"""Corruptions for patching experiments (Zhang & Nanda 2023; Meng et al. 2022).

- :func:`symmetric`: user-given corrupt prompts aligned token by token with the clean ones
  (symmetric token replacement, the preferred corruption).
- :func:`replace_tokens`: the clean prompts with tokens at chosen positions replaced
  (random other tokens, or given ones).
- :func:`recall_key_swap`: associative recall with the key the last query asks for replaced,
  in the context, by a key the row does not contain.
- :func:`gaussian_noise`: the clean prompts with Gaussian noise of ``scale`` x the
  embedding standard deviation (default 3, as in ROME) added to the token embeddings at
  chosen positions, in ``n_samples`` noise draws whose metrics are averaged.

Each returns a :class:`Corruption`, which :func:`circuits.patching.patch` and the other
analyses accept in place of corrupt tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from interp.backends import HookFn
from interp.errors import InputError
from interp.tokens import TokenBatch


@dataclass
class Corruption:
    """Corrupt inputs for a batch of clean prompts.

    tokens: ``[batch * repeat, pos]`` corrupt tokens.  clean: ``[batch * repeat, pos]`` the
    clean tokens, repeated to match (``repeat`` > 1 for several noise samples per prompt,
    whose metrics are averaged).  hooks: ``(site, fn)`` applied on every corrupt run (noise);
    the functions accept activations whose batch is any multiple of ``tokens``' batch.
    lengths: ``[batch * repeat]`` real tokens per row when pairs differ in length (rows are
    right-padded; each clean row and its corrupt row have the same length); None = all full.
    """

    tokens: torch.Tensor
    clean: torch.Tensor
    hooks: list[tuple[str, HookFn]] = field(default_factory=list)
    repeat: int = 1
    description: str = ""
    lengths: torch.Tensor | None = None

    def __post_init__(self):
        check_aligned(self.clean, self.tokens)

    def batches(self) -> tuple:
        """(corrupt, clean) as token batches (tensors when no row is padded)."""
        if self.lengths is None:
            return self.tokens, self.clean
        return TokenBatch(self.tokens, self.lengths), TokenBatch(self.clean, self.lengths)


def check_aligned(clean: torch.Tensor, corrupt: torch.Tensor) -> None:
    """Clean and corrupt tokens must have the same shape: patching swaps activations position by position."""
    if clean.ndim != 2 or corrupt.ndim != 2:
        raise InputError(
            f"clean and corrupt tokens must be [batch, pos], got {tuple(clean.shape)} and {tuple(corrupt.shape)}"
        )
    if clean.shape[1] != corrupt.shape[1]:
        raise InputError(
            f"clean prompts have {clean.shape[1]} tokens but corrupt ones {corrupt.shape[1]}: patching "
            "needs them aligned position by position (same length); pad or re-word the corrupt prompt"
        )
    if clean.shape[0] != corrupt.shape[0]:
        raise InputError(
            f"{clean.shape[0]} clean prompts but {corrupt.shape[0]} corrupt ones: pass one corrupt "
            "prompt per clean prompt"
        )


def _2d(tokens: torch.Tensor) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    return tokens[None] if tokens.ndim == 1 else tokens


def symmetric(clean: torch.Tensor, corrupt: torch.Tensor) -> Corruption:
    """User-given corrupt prompts, aligned with the clean ones (same shape)."""
    clean, corrupt = _2d(clean), _2d(corrupt)
    check_aligned(clean, corrupt)
    if torch.equal(clean.cpu(), corrupt.cpu()):
        raise InputError("the corrupt prompts equal the clean ones: nothing to patch")
    return Corruption(corrupt, clean, description="symmetric token replacement")


def replace_tokens(
    tokens: torch.Tensor,
    positions: int | Iterable[int],
    *,
    d_vocab: int,
    replacement: int | Sequence[int] | torch.Tensor | None = None,
    low: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """``tokens`` with the tokens at ``positions`` replaced: corrupt tokens ``[batch, pos]``.

    replacement: token id(s) to put there (an int, one per position, or a
    ``[batch, n_positions]`` tensor); by default random tokens from ``[low, d_vocab)``, each
    different from the token it replaces.  Negative positions count from the end.
    """
    tokens = _2d(tokens).clone()
    n = tokens.shape[1]
    pos = [positions] if isinstance(positions, int) else list(positions)
    if not pos:
        raise InputError("no positions to replace")
    pos = [p + n if p < 0 else p for p in pos]
    bad = [p for p in pos if not 0 <= p < n]
    if bad:
        raise InputError(f"positions {bad} are outside the {n} tokens (valid 0..{n - 1})")
    if not 0 <= low < d_vocab - 1:
        raise InputError(f"low must be in [0, d_vocab-1={d_vocab - 1}), got {low}")
    idx = torch.tensor(pos)
    if replacement is None:
        g = torch.Generator().manual_seed(seed)
        old = tokens[:, idx].cpu()
        # uniform over [low, d_vocab) minus the old token: draw from one fewer and skip it
        new = torch.randint(low, d_vocab - 1, old.shape, generator=g)
        new = new + (new >= old).long() * (old >= low).long()
        tokens[:, idx] = new.to(tokens.device)
    else:
        rep = torch.as_tensor(replacement, dtype=torch.long)
        if ((rep < 0) | (rep >= d_vocab)).any():
            raise InputError(f"replacement tokens must be in [0, {d_vocab})")
        tokens[:, idx] = rep.to(tokens.device).expand(tokens.shape[0], len(pos))
    return tokens


def recall_key_swap(batch, *, d_vocab: int, seed: int = 3) -> torch.Tensor:
    """Corrupt tokens ``[batch, pos]`` for an :func:`interp.tasks.associative_recall` batch of
    vocabulary ``d_vocab``: the context key that the last query asks for is replaced by a key
    (from ``[2, d_vocab/2)``) absent from its row, so the query no longer finds its value."""
    clean = batch.tokens
    key_pos = batch.info["value_pos"][:, -1] - 1
    corrupted = clean.clone()
    g = torch.Generator().manual_seed(seed)
    for i in range(len(clean)):
        present = set(clean[i].tolist())
        unused = [t for t in range(2, d_vocab // 2) if t not in present]
        corrupted[i, key_pos[i]] = unused[int(torch.randint(len(unused), (1,), generator=g))]
    return corrupted


def replaced(clean: torch.Tensor, positions: int | Iterable[int], *, d_vocab: int, **kw) -> Corruption:
    """A :class:`Corruption` made by :func:`replace_tokens` on the clean prompts."""
    clean = _2d(clean)
    return Corruption(
        replace_tokens(clean, positions, d_vocab=d_vocab, **kw), clean, description=f"token replacement at {positions}"
    )


def gaussian_noise(
    model,
    clean: torch.Tensor,
    positions: int | Iterable[int],
    *,
    scale: float = 3.0,
    n_samples: int = 10,
    seed: int = 0,
    site: str = "hook_embed",
) -> Corruption:
    """Noise of ``scale`` x the embedding std added at ``positions`` of ``site`` (ROME's corruption).

    The std is that of the site's activations (every position and unit) on the clean
    prompts.  ``n_samples`` noise draws per prompt: the Corruption's batch is
    ``n_samples * batch`` (sample-major), and every metric is averaged over them.
    """
    if scale <= 0:
        raise InputError(f"scale must be > 0, got {scale}")
    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    clean = model.validate_tokens(_2d(clean))
    model.check_site(site)
    b, n = clean.shape
    pos = [positions] if isinstance(positions, int) else list(positions)
    pos = [p + n if p < 0 else p for p in pos]
    if not pos or any(not 0 <= p < n for p in pos):
        raise InputError(f"noise positions {positions} must be non-empty and inside the {n} tokens")
    _, cache = model.run_with_cache(clean, names=[site])
    act = cache[site]
    std = float(act.float().std())
    g = torch.Generator().manual_seed(seed)
    noise = torch.zeros((n_samples * b,) + tuple(act.shape[1:]))
    noise[:, pos] = torch.randn((n_samples * b, len(pos)) + tuple(act.shape[2:]), generator=g) * (scale * std)
    noise = noise.to(act.device, act.dtype)

    def add_noise(x: torch.Tensor, hook) -> torch.Tensor:
        reps = x.shape[0] // noise.shape[0]
        if reps * noise.shape[0] != x.shape[0]:
            raise InputError(f"noise for batch {noise.shape[0]} applied to batch {x.shape[0]}")
        at = model.context.positions_of(x.shape[1], noise.device)  # a cached step runs later positions only
        return x + noise[:, at].repeat(reps, *([1] * (noise.ndim - 1)))

    tiled = clean.repeat(n_samples, 1)
    return Corruption(
        tiled,
        tiled,
        hooks=[(site, add_noise)],
        repeat=n_samples,
        description=f"gaussian noise {scale:g}x std ({std:.3g}) at {pos}, {n_samples} samples",
    )
