"""Greedy decoding, from a key-value cache where the model has one.

:func:`greedy` is the one decoding loop of the library (generation, retrieval scores,
answer accuracy, steering generations).  Rows are grouped by length (each group decodes
unpadded, so every row's tokens equal decoding it alone) and chunked.  With a cache the
prompt runs once and each later step feeds only the new token; without one (zoo
transformers, recurrent models, custom modules) every step recomputes the sequence.
Either way the model's active hooks run at every step, and :attr:`interp.Model.context`
tells position-aware hooks the absolute position of what they see (a cached step sees one
position, ``offset`` = its index).  Hooks passed in ``hooks`` also run at every step; a
hook reading the last query row (``x[..., -1, :]`` of a pattern, ``x[:, -1]`` of a vector
site) sees the row that produced the step's token in both modes, and :class:`Step` says
which step and rows it is looking at.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interp.backends import Hooks
from interp.errors import InputError
from interp.model import reshaping


@dataclass
class Step:
    """The decoding position a hook is called at: ``index`` (0 = the forward over the prompt,
    whose last row yields the first new token) and ``rows`` (batch indices of the rows
    being decoded together)."""

    index: int = 0
    rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


@reshaping
def _last_row(x: torch.Tensor, hook) -> torch.Tensor:
    return x[:, -1:]


def greedy(
    model,
    tokens,
    n_steps: int,
    *,
    use_cache: bool = True,
    hooks: Hooks = (),
    step: Step | None = None,
    batch_size: int = 8,
    progress: bool = False,
    prefixes: dict | None = None,
) -> torch.Tensor:
    """Greedy continuation of each prompt: ``[batch, n_steps]`` new token ids.

    tokens: a tensor, a :class:`TokenBatch` or texts.  use_cache: continue from the
    key-value cache where the model has one (same tokens as recomputing).  hooks: extra
    ``(site, fn)`` hooks for every step; ``step`` (if given) is updated before each forward.
    prefixes: see :func:`decode`.
    """
    return decode(
        model,
        tokens,
        n_steps,
        lambda logits: logits.argmax(-1),
        use_cache=use_cache,
        hooks=hooks,
        step=step,
        batch_size=batch_size,
        prefixes=prefixes,
        progress=progress,
    )


def sample(
    model,
    tokens,
    n_steps: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Sampled continuation (softmax of logits / ``temperature``, optionally the ``top_k`` most
    probable tokens only), seeded: ``[batch, n_steps]`` new token ids."""
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    g = torch.Generator().manual_seed(int(seed))

    def choose(logits: torch.Tensor) -> torch.Tensor:
        # drawn on the CPU with a CPU generator: the same seed gives the same tokens on every device
        z = logits.float().cpu() / temperature
        if top_k is not None:
            kth = z.topk(min(int(top_k), z.shape[-1]), dim=-1).values[..., -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        return torch.multinomial(z.softmax(-1), 1, generator=g)[..., 0].to(logits.device)

    return decode(model, tokens, n_steps, choose, use_cache=use_cache, batch_size=batch_size, progress=progress)


@torch.no_grad()
def decode(
    model,
    tokens,
    n_steps: int,
    choose,
    *,
    use_cache: bool = True,
    hooks: Hooks = (),
    step: Step | None = None,
    batch_size: int = 8,
    progress: bool = False,
    prefixes: dict | None = None,
) -> torch.Tensor:
    """The decoding loop: ``choose(logits [rows, d_vocab]) -> [rows]`` picks each next token.

    prefixes: a dict kept by the caller across calls on the same prompts whose hooks change
    nothing before each prompt's last token (query masking "from the last token on", as in
    Wu et al.'s experiment).  The key-value cache of each prompt minus its last token is then
    computed once, stored there, and copied for every later call, so each call runs only
    the last prompt token and the new ones.  Needs a model with a cache."""
    batch = model.tokenize(tokens)
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise InputError(f"the number of new tokens must be an int >= 0, got {n_steps!r}")
    longest = int(batch.lengths.max())
    if longest + max(n_steps - 1, 0) > model.cfg.n_ctx:
        raise InputError(f"prompt ({longest} tokens) + {n_steps} new tokens exceed n_ctx={model.cfg.n_ctx}")
    out = torch.zeros(len(batch), n_steps, dtype=torch.long)
    if n_steps == 0:
        return out
    step = step if step is not None else Step()
    cached = use_cache and model.supports_cache
    # unembed only the row that is decoded, not [pos, d_vocab]
    trim = [(model.site("unembed_in"), _last_row)] if "unembed_in" in model.site_kinds() else []
    hooks = list(hooks) + trim
    chunks = [
        g[i : i + max(1, int(batch_size))] for g in batch.by_length() for i in range(0, len(g), max(1, int(batch_size)))
    ]
    bar = tqdm(total=len(chunks) * n_steps, desc="decoding", disable=not progress, leave=False)
    for rows in chunks:
        seq = batch.select(rows).tokens
        step.rows = rows
        cache, nxt, first = None, seq[:, -1], seq  # nxt: the token chosen last (the prompt's own at first)
        if cached and prefixes is not None and seq.shape[1] > 1:
            key = (tuple(seq.shape), seq.cpu().numpy().tobytes())
            if key not in prefixes:
                with model.running(rows=rows):
                    prefixes[key] = model.step(seq[:, :-1], None, trim)[1]  # the caller's hooks read decoding
            cache, first = copy.deepcopy(prefixes[key]), seq[:, -1:]
        for t in range(n_steps):
            step.index = t
            with model.running(rows=rows):
                if cached:
                    logits, cache = model.step(first if t == 0 else nxt[:, None], cache, hooks)
                else:
                    logits = model.run_with_hooks(seq, hooks)
            nxt = choose(logits[:, -1])
            out[rows, t] = nxt.cpu()
            if not cached and t < n_steps - 1:
                seq = torch.cat([seq, nxt[:, None]], dim=1)
            bar.update()
    bar.close()
    return out
