"""The ordinary text the entries measure loss on: the model's own generations
(:func:`interp.tasks.text.generated_text`: sampled from its BOS at temperature 1, top-k 50,
seeded), since no corpus ships with the package.  Sampling 512 tokens takes a while on a CPU,
so a generation is kept for the process (every entry of one run of the list reuses it) and
in the user cache (``$INTERP_CACHE/text/``), keyed by the model's name, a fingerprint of its
weights and the sampling arguments."""

from __future__ import annotations

import hashlib
import weakref
from pathlib import Path

import torch

from interp.model import Model
from interp.paths import cache_dir

_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fingerprint(model: Model) -> str:
    """A short hash of the model's name, geometry and a slice of every parameter tensor's values:
    text cached for one set of weights is never served to another."""
    h = hashlib.sha256(repr(sorted(model.cfg.to_dict().items())).encode())
    with torch.no_grad():
        for name, p in model.module.named_parameters():
            h.update(name.encode())
            h.update(p.detach().reshape(-1)[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


CANON_N, CANON_LENGTH = 8, 512


def own_text(model: Model, n: int, length: int, *, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """``[n, length]`` tokens the model wrote itself (see the module docstring).  One canonical
    generation of at least ``CANON_N`` x ``CANON_LENGTH`` tokens (within the context) serves every
    request: rows and lengths are cut from it, so a quick run and a full run read the same text."""
    from safetensors.torch import load_file, save_file

    from interp.errors import Unsupported
    from interp.tasks.text import generated_text

    if length > model.cfg.n_ctx:
        raise Unsupported(
            f"it reads {length} tokens of text, beyond {model.cfg.name or 'the model'}'s context of {model.cfg.n_ctx}"
        )
    want_n, want_length = n, length
    n, length = max(n, CANON_N), max(length, min(CANON_LENGTH, model.cfg.n_ctx))

    memo = _MEMO.setdefault(model, {})
    for (m, ln, s), tokens in memo.items():
        if m >= n and ln >= length and s == seed:
            return tokens[:want_n, :want_length].clone()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (model.cfg.name or "model"))
    stem = f"{safe}-{fingerprint(model)}"
    path = cache_dir() / "text" / f"{stem}-n{n}-len{length}-seed{seed}.safetensors"
    larger = [p for p in _cached(stem, seed) if p[0] >= n and p[1] >= length]
    if larger:
        tokens = load_file(str(min(larger)[2]))["tokens"]
    else:
        if progress:
            print(f"sampling {n} x {length} tokens of the model's own text (cached in {path.parent}) ...")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: the sampled text does not depend on the machine's thread count
        try:
            tokens = generated_text(model, n, length, seed=seed)
        finally:
            torch.set_num_threads(threads)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"tokens": tokens.contiguous()}, str(path))
        except OSError:  # a read-only cache costs a re-sample next time, nothing else
            pass
    memo[tuple(tokens.shape) + (seed,)] = tokens
    return tokens[:want_n, :want_length].clone()


def _cached(stem: str, seed: int) -> list[tuple[int, int, Path]]:
    """(n, length, path) of the generations saved for a model (``stem``: name and fingerprint)."""
    out: list[tuple[int, int, Path]] = []
    for p in (cache_dir() / "text").glob(f"{stem}-n*-len*-seed{seed}.safetensors"):
        try:
            n_part, len_part = p.name[len(stem) + 1 :].split("-")[:2]
            out.append((int(n_part[1:]), int(len_part[3:]), p))
        except ValueError:
            continue
    return out


def long_rows(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Rows of ``k`` consecutive generations each, joined (the BOS of each joined generation
    dropped): ``[n // k, k * (length - 1) + 1]``, for measurements that need long text."""
    n, length = tokens.shape
    rows = []
    for i in range(0, n - k + 1, k):
        parts = [tokens[i]] + [tokens[j, 1:] for j in range(i + 1, i + k)]
        rows.append(torch.cat(parts))
    return torch.stack(rows)
