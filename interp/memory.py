"""Bounded memory for every operation whose size the user chooses.

Work is chunked so that a chunk's temporaries stay under a budget: on the CPU
``INTERP_MEMORY_MB`` (default 2048 MB); on a GPU the memory free on that device (70% of it, and
no more than ``INTERP_MEMORY_MB`` where that is set).  Each analysis estimates its peak from the
model's shapes (:func:`forward_bytes_per_token`) and splits into micro-batches that fit; a single
row that does not fit is refused up front with the estimate, instead of letting the kernel (or
CUDA) kill the process.
"""

from __future__ import annotations

import os

import torch

from interp.errors import InputError, MemoryBudgetError

DEFAULT_MB = 2048
GPU_SHARE = 0.7  # of the memory free on a GPU: the rest is left to the allocator's fragmentation
#: tokens per forward of a patching sweep at most: on the CPU larger chunks are no faster
MAX_BATCH_TOKENS = {"cpu": 16384, "cuda": 1 << 18}


def budget_bytes(device: str | torch.device | None = None) -> int:
    """The memory budget of one chunk of work, in bytes (see the module docstring)."""
    raw = os.environ.get("INTERP_MEMORY_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MB
    except ValueError:
        raise InputError(f"INTERP_MEMORY_MB must be a number of megabytes, got {raw!r}") from None
    if mb <= 0:
        raise InputError(f"INTERP_MEMORY_MB must be positive, got {raw!r}")
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        gpu = int(GPU_SHARE * free)
        return min(gpu, int(mb * 2**20)) if raw else gpu
    return int(mb * 2**20)


def forward_bytes_per_token(model, seq_len: int, *, grad: bool = False) -> int:
    """Peak bytes one token adds to a forward of ``model`` over sequences of ``seq_len`` (estimated
    from its shapes): without gradients one layer's temporaries (residual copies, queries, keys,
    values and head outputs, the MLP's hidden units, the attention scores and pattern in float32)
    and its logits; with gradients (``grad``) every layer's, kept for the backward pass."""
    c = model.cfg
    el = max(1, torch.finfo(model.dtype).bits // 8) if model.dtype.is_floating_point else 4
    d_mlp = c.d_mlp or 4 * c.d_model
    heads = c.n_heads * (c.d_head or c.d_model // max(1, c.n_heads)) if c.n_heads else 2 * c.d_model
    layer = el * (6 * c.d_model + 4 * heads + 3 * d_mlp) + 4 * 3 * c.n_heads * seq_len
    logits = 4 * 3 * c.d_vocab  # the logits and their log-softmax, in float32
    return int(layer * (max(1, c.n_layers) if grad else 1) + logits)


def batch_tokens(model, shape: tuple[int, ...], given: int | None = None, *, what: str = "this sweep") -> int:
    """Tokens per forward of a sweep that runs ``shape = [batch, pos]`` prompts once per cell
    (cells batched along the rows): ``given`` if set (checked), else as many as the budget holds
    on the model's device, at most :data:`MAX_BATCH_TOKENS`.  A single cell (all the prompts at
    once) that does not fit is refused with the estimate."""
    B, P = int(shape[0]), int(shape[-1])
    per_token = forward_bytes_per_token(model, P)
    budget = budget_bytes(model.device)
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise InputError(f"batch_tokens must be a positive int, got {given!r}")
        if given * per_token > 4 * budget:
            raise MemoryBudgetError(
                f"{what}: batch_tokens={given} needs about {given * per_token / 2**20:.0f} MB at once, over 4x "
                f"the budget of {budget / 2**20:.0f} MB (INTERP_MEMORY_MB); use fewer"
            )
        return given
    if B * P * per_token > budget:
        raise MemoryBudgetError(
            f"{what}: one cell runs the {B} prompts of {P} tokens at once, about {B * P * per_token / 2**20:.0f} MB, "
            f"over the budget of {budget / 2**20:.0f} MB (INTERP_MEMORY_MB); use fewer prompts or a higher budget"
        )
    cap = MAX_BATCH_TOKENS.get(model.device.type, MAX_BATCH_TOKENS["cpu"])
    return max(B * P, min(cap, int(budget // per_token)))


def rows_per_chunk(
    bytes_per_row: float, what: str, given: int | None = None, device: str | torch.device | None = None
) -> int:
    """How many rows of ``bytes_per_row`` to process at once (``given`` if set, checked) under the
    budget of ``device`` (default: the CPU's)."""
    budget = budget_bytes(device)
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise InputError(f"batch_size must be a positive int, got {given!r}")
        if given * bytes_per_row > 4 * budget:
            raise MemoryBudgetError(
                f"{what}: batch_size={given} needs about {given * bytes_per_row / 2**20:.0f} MB at "
                f"once, over 4x the budget of {budget / 2**20:.0f} MB (INTERP_MEMORY_MB); use fewer"
            )
        return given
    if bytes_per_row > budget:
        raise MemoryBudgetError(
            f"{what}: one sequence needs about {bytes_per_row / 2**20:.0f} MB at once, over the budget "
            f"of {budget / 2**20:.0f} MB (set INTERP_MEMORY_MB higher, or use shorter sequences)"
        )
    return max(1, int(budget // max(bytes_per_row, 1)))


def check_total(n_bytes: float, what: str, factor: float = 8.0, device: str | torch.device | None = None) -> None:
    """Refuses a result that would not fit in ``factor`` budgets (results that are kept, not chunked)."""
    budget = budget_bytes(device)
    if n_bytes > factor * budget:
        raise MemoryBudgetError(
            f"{what} would hold about {n_bytes / 2**20:.0f} MB, over {factor:g}x the memory budget "
            f"({budget / 2**20:.0f} MB, INTERP_MEMORY_MB); ask for less"
        )
