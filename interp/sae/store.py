"""A chunked activation store on disk: token batches streamed through the model, stopped at
the site's layer, written in safetensors shards; resumable, shuffled across shards for
training, bounded by the memory budget (``INTERP_MEMORY_MB``).

Layout of a store folder::

    store.json                    the manifest: model, sites, widths, token fingerprint, shards
    tokens.safetensors            "tokens" [rows, seq_len]: the text harvested (for contexts)
    shard-00000.safetensors       "acts" [n, d_in] (and "acts_out" [n, d_out] for a transcoder),
                                  "row" / "pos" [n]: where each activation comes from

Shard ``i`` holds the activations of token rows ``[i * rows_per_shard, (i + 1) *
rows_per_shard)`` (position 0, the BOS, left out unless ``skip_bos=False``).  Each shard is
written to a temporary file and renamed into place, then recorded in the manifest (also
renamed into place), so a killed harvest leaves whole shards only; :func:`harvest` on the
same folder continues with the first shard the manifest lacks: no token is lost or stored
twice.  Every forward stops with a private exception once the last site it needs has been
read, so later layers and the unembedding never run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp import executor as executors
from interp.errors import InputError
from interp.executor import Executor
from interp.memory import budget_bytes, rows_per_chunk

FORMAT = "interp.activation_store"
MANIFEST = "store.json"
TOKENS = "tokens.safetensors"


class _Stop(Exception):
    """Raised by the last reading hook: the rest of the forward is not needed."""


def read_sites(model, tokens: torch.Tensor, sites: list[str]) -> dict[str, torch.Tensor]:
    """The activations ``[batch, pos, ...]`` of ``sites`` on ``tokens``, running the forward
    only up to the last of them (the hook that reads it stops the run)."""
    got: dict[str, torch.Tensor] = {}
    wanted = list(dict.fromkeys(sites))

    def reader(name: str):
        def read(x: torch.Tensor, hook) -> None:
            got[name] = x.detach()
            if len(got) == len(wanted):
                raise _Stop

        return read

    try:
        with torch.inference_mode():
            model.run_with_hooks(tokens, [(n, reader(n)) for n in wanted])
    except _Stop:
        pass
    missing = [n for n in wanted if n not in got]
    if missing:
        raise InputError(f"sites {missing} were not reached in the forward pass")
    return got


def _fingerprint(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.contiguous().numpy().tobytes()).hexdigest()


def _bytes_per_row(model, seq_len: int) -> float:
    """A forward's working memory per sequence (activations of one layer at a time, the
    attention scores, float32), with headroom."""
    c = model.cfg
    per_pos = 4 * (8 * c.d_model + 3 * max(c.d_mlp, 4 * c.d_model))
    attn = 4 * 3 * max(c.n_heads, 1) * seq_len * seq_len
    return 2.0 * (seq_len * per_pos + attn)


@dataclass
class ActivationStore:
    """A harvested store (see the module docstring).  ``meta`` is the manifest."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        path = Path(path)
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"no activation store at {path} (no {MANIFEST}; make one with interp.sae.harvest)")
        try:
            meta = json.loads(manifest.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
            raise InputError(f"the activation store manifest {manifest} is unreadable ({e})") from None
        if meta.get("format") != FORMAT:
            raise InputError(f"{manifest} is not an activation store manifest")
        return cls(path, meta)

    # --- facts ------------------------------------------------------------------------------
    @property
    def site(self) -> str:
        return self.meta["site"]

    @property
    def out_site(self) -> str | None:
        return self.meta.get("out_site")

    @property
    def d_in(self) -> int:
        return int(self.meta["d_in"])

    @property
    def d_out(self) -> int:
        return int(self.meta.get("d_out") or self.meta["d_in"])

    @property
    def complete(self) -> bool:
        return len(self.meta["shards"]) == self.meta["n_shards"]

    @property
    def n_tokens(self) -> int:
        """Activations stored (one per token position kept)."""
        return sum(int(s["n"]) for s in self.meta["shards"])

    def tokens(self) -> torch.Tensor:
        """The harvested token rows ``[rows, seq_len]``."""
        return _load(self.path / TOKENS)["tokens"]

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(self.meta['shards'])}/{self.meta['n_shards']} shards"
        return (
            f"ActivationStore({str(self.path)!r}, {self.meta['model']}, {self.site}, {self.n_tokens} tokens, {state})"
        )

    # --- reading ------------------------------------------------------------------------------
    def shard(self, i: int) -> dict[str, torch.Tensor]:
        """Shard ``i``'s tensors (``acts``, ``row``, ``pos``, maybe ``acts_out``), checked."""
        entry = self.meta["shards"][i]
        out = _load(self.path / entry["file"])
        if "acts" not in out or out["acts"].shape != (int(entry["n"]), self.d_in):
            raise InputError(
                f"activation shard {self.path / entry['file']} does not match the manifest (corrupt shard: delete it "
                "and its manifest entry, or harvest into a new folder)"
            )
        return out

    def _check_complete(self) -> None:
        if not self.meta["shards"]:
            raise InputError(f"the activation store at {self.path} holds no shards yet: run harvest on it")

    def load(self, max_tokens: int | None = None, *, out: bool = False) -> torch.Tensor:
        """Up to ``max_tokens`` activations ``[n, d]`` in store order (``out``: the transcoder
        targets), refusing more than 4x the memory budget at once."""
        self._check_complete()
        key = "acts_out" if out else "acts"
        n = self.n_tokens if max_tokens is None else min(int(max_tokens), self.n_tokens)
        from interp.memory import check_total

        check_total(n * (self.d_out if out else self.d_in) * 4, f"loading {n} activations", factor=4.0)
        parts, have = [], 0
        for i in range(len(self.meta["shards"])):
            if have >= n:
                break
            t = self.shard(i)[key].float()
            parts.append(t[: n - have])
            have += len(parts[-1])
        return torch.cat(parts)

    def batches(
        self, batch_size: int, *, seed: int = 0, epochs: float = 1.0, buffer_tokens: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled training batches ``(x [batch, d_in], y [batch, d_out])`` (``y`` is ``x`` for
        an autoencoder) for ``epochs`` passes.  Shards are read in a seeded random order into a
        buffer of up to ``buffer_tokens`` (default: half the memory budget), whose rows are
        shuffled together, so a batch mixes tokens of several shards (and of all of them when
        the store fits the buffer)."""
        self._check_complete()
        width = self.d_in + (self.d_out if self.out_site else 0)
        if buffer_tokens is None:
            buffer_tokens = max(batch_size, budget_bytes() // 2 // (4 * width))
        g = torch.Generator().manual_seed(int(seed))
        n_shards = len(self.meta["shards"])
        total = int(self.n_tokens * epochs)
        served = 0
        while served < total:
            order = torch.randperm(n_shards, generator=g).tolist()
            while order and served < total:
                xs, ys, held = [], [], 0
                while order and held < buffer_tokens:
                    t = self.shard(order.pop())
                    xs.append(t["acts"].float())
                    if self.out_site:
                        ys.append(t["acts_out"].float())
                    held += len(xs[-1])
                x = torch.cat(xs)
                y = torch.cat(ys) if ys else x
                perm = torch.randperm(len(x), generator=g)
                for start in range(0, len(x) - batch_size + 1, batch_size):
                    idx = perm[start : start + batch_size]
                    yield x[idx], y[idx]
                    served += batch_size
                    if served >= total:
                        return


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(f"activation shard {path} is missing: harvest again into this folder to refill it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(
            f"activation shard {path} is corrupt ({str(e).splitlines()[0]}): delete it and its manifest "
            "entry, or harvest into a new folder"
        ) from None


@dataclass
class _ShardJob:
    """One shard's work: token rows ``[lo, hi)`` (``tokens``), read ``chunk`` rows per forward."""

    index: int
    lo: int
    hi: int
    sites: list[str]
    chunk: int
    skip_bos: bool
    dtype: torch.dtype
    tokens: torch.Tensor | None = None


def _rows(i: int, rows_per_shard: int, rows: int) -> tuple[int, int]:
    return i * rows_per_shard, min(rows, (i + 1) * rows_per_shard)


def _harvest_shard(model, job: _ShardJob, bar=None) -> dict[str, torch.Tensor]:
    """A shard's tensors (``acts``, ``row``, ``pos``, maybe ``acts_out``; on the CPU); an
    executor's task.  ``bar`` (in this process) counts tokens per forward."""
    tokens = job.tokens
    assert tokens is not None
    seq_len = tokens.shape[1]
    keep = seq_len - 1 if job.skip_bos else seq_len
    parts: dict[str, list[torch.Tensor]] = {s: [] for s in job.sites}
    for start in range(0, len(tokens), job.chunk):
        batch = tokens[start : start + job.chunk]
        got = read_sites(model, batch, job.sites)
        for s in job.sites:
            a = got[s][:, 1:] if job.skip_bos else got[s]
            parts[s].append(a.reshape(-1, a.shape[-1]).to("cpu", job.dtype))
        if bar is not None:
            bar.update(len(batch) * keep)
    n_rows = job.hi - job.lo
    shard = {
        "acts": torch.cat(parts[job.sites[0]]).contiguous(),
        "row": torch.arange(job.lo, job.hi).repeat_interleave(keep),
        "pos": torch.arange(seq_len - keep, seq_len).repeat(n_rows),
    }
    if len(job.sites) > 1:
        shard["acts_out"] = torch.cat(parts[job.sites[1]]).contiguous()
    return shard


def _write_manifest(path: Path, meta: dict) -> None:
    from interp.checkpoint import _atomic_write

    _atomic_write(path / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1) + "\n"))


def harvest(
    model,
    site: str,
    tokens: torch.Tensor,
    path: str | Path,
    *,
    out_site: str | None = None,
    rows_per_shard: int | None = None,
    batch_size: int | None = None,
    skip_bos: bool = True,
    dtype: torch.dtype = torch.float32,
    max_shards: int | None = None,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> ActivationStore:
    """Streams ``tokens [rows, seq_len]`` through ``model`` and stores the activations of
    ``site`` (and ``out_site``, for a transcoder) in shards under ``path``.

    Resumes a harvest of the same tokens and sites found at ``path`` (a different one there is
    refused); ``max_shards`` writes at most that many new shards and returns (the rest on a
    later call).  ``batch_size`` rows per forward (default: as many as the memory budget
    allows); ``rows_per_shard`` (default: ~64k activations, under a quarter of the budget);
    ``skip_bos`` leaves position 0 out; ``dtype`` of the stored activations.  A progress bar
    shows tokens/s; the manifest records the harvest's tokens/s.

    executor: ``"local"`` (default, this process) or ``"ray"``: the shards are harvested on a Ray
    cluster's workers (:mod:`interp.executor`; the model loaded by name or path, no active hooks),
    a few per worker at a time, and written here in order: the same store as one process."""
    model.check_site(site)
    sites = [site] + ([model.check_site(out_site)] if out_site and out_site != site else [])
    tokens = model.validate_tokens(tokens).cpu()
    rows, seq_len = tokens.shape
    keep = seq_len - 1 if skip_bos else seq_len
    if keep < 1:
        raise InputError("sequences of one token with skip_bos=True leave nothing to harvest")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    ex = executors.get(executor)
    local = isinstance(ex, executors.Local)
    if not local:
        executors.spec_of(model)  # a model the workers cannot load is refused before anything is written
    probe = read_sites(model, tokens[:1, : min(seq_len, 4)], sites)
    widths = [int(probe[s].shape[-1]) for s in sites]
    for s in sites:
        if probe[s].ndim != 3:
            raise InputError(f"site {s} has shape {tuple(probe[s].shape)}: a dictionary reads [batch, pos, d] sites")
    width_total = sum(widths)
    if rows_per_shard is None:
        per_shard_tokens = min(65536, budget_bytes() // 4 // (4 * width_total))
        rows_per_shard = max(1, per_shard_tokens // keep)
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise InputError(f"rows_per_shard must be a positive int, got {rows_per_shard!r}")
    chunk = rows_per_chunk(_bytes_per_row(model, seq_len), f"harvesting {site}", batch_size)
    path = Path(path)
    fingerprint = _fingerprint(tokens)
    n_shards = -(-rows // rows_per_shard)
    want = {
        "format": FORMAT,
        "model": model.cfg.name,
        "site": site,
        "out_site": out_site if len(sites) > 1 else None,
        "d_in": widths[0],
        "d_out": widths[-1],
        "rows": rows,
        "seq_len": seq_len,
        "skip_bos": bool(skip_bos),
        "dtype": str(dtype).removeprefix("torch."),
        "rows_per_shard": rows_per_shard,
        "n_shards": n_shards,
        "tokens_sha256": fingerprint,
    }
    if (path / MANIFEST).is_file():
        store = ActivationStore.open(path)
        differs = {k: (store.meta.get(k), v) for k, v in want.items() if store.meta.get(k) != v}
        if differs:
            raise InputError(
                f"{path} holds another harvest (differs in {sorted(differs)}): use another folder or delete it"
            )
        meta = store.meta
    else:
        path.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        from interp.checkpoint import _atomic_write

        _atomic_write(path / TOKENS, lambda tmp: save_file({"tokens": tokens.contiguous()}, tmp))
        meta = {**want, "shards": [], "seconds": 0.0}
        _write_manifest(path, meta)
    for stale in path.glob(".shard-*.tmp"):  # a shard being written when a harvest was killed
        stale.unlink(missing_ok=True)
    done = len(meta["shards"])
    todo = list(range(done, n_shards if max_shards is None else min(n_shards, done + int(max_shards))))
    total = sum(min(rows, (i + 1) * rows_per_shard) - i * rows_per_shard for i in todo) * keep
    bar = tqdm(total=total, desc=f"harvest {site}", unit="tok", unit_scale=True, disable=not progress, mininterval=1.0)
    from safetensors.torch import save_file

    from interp.checkpoint import _atomic_write

    jobs = [_ShardJob(i, *_rows(i, rows_per_shard, rows), sites, chunk, skip_bos, dtype) for i in todo]
    for job in jobs:  # a worker gets its rows only (a view would ship the whole storage)
        job.tokens = tokens[job.lo : job.hi] if local else tokens[job.lo : job.hi].clone()
    # shards are computed a wave at a time (one here; a few per worker on a cluster) and written
    # in order as each wave returns: the memory held is a wave's shards, and a killed harvest
    # still leaves whole shards recorded in the manifest
    waves = [
        jobs[k : k + (1 if local else 2 * ex.workers)] for k in range(0, len(jobs), 1 if local else 2 * ex.workers)
    ]
    started = time.perf_counter()
    try:
        for wave in waves:
            if local:
                shards = [_harvest_shard(model, job, bar) for job in wave]
            else:
                shards = ex.map(_harvest_shard, model, wave, desc=f"harvest {site}")
                bar.update(sum(job.hi - job.lo for job in wave) * keep)
            for job, shard in zip(wave, shards, strict=True):
                name = f"shard-{job.index:05d}.safetensors"
                _atomic_write(path / name, lambda tmp, shard=shard: save_file(shard, tmp))
                meta["shards"].append({"file": name, "rows": [job.lo, job.hi], "n": (job.hi - job.lo) * keep})
                meta["seconds"] = round(float(meta.get("seconds", 0.0)) + time.perf_counter() - started, 3)
                started = time.perf_counter()
                meta["tokens_per_second"] = round(sum(s["n"] for s in meta["shards"]) / max(meta["seconds"], 1e-9), 1)
                _write_manifest(path, meta)
    finally:
        bar.close()
    return ActivationStore(path, meta)


def write_store(
    path: str | Path,
    acts: torch.Tensor,
    *,
    site: str,
    model_name: str = "",
    acts_out: torch.Tensor | None = None,
    out_site: str | None = None,
    tokens_per_shard: int = 65536,
) -> ActivationStore:
    """A store made from activations already in memory (``acts [n, d_in]``, and ``acts_out [n,
    d_out]`` for a transcoder): the same format :func:`harvest` writes, without token rows
    (``row`` / ``pos`` are the activation's index / 0).  Used for synthetic data and to hand
    the same activations to another trainer."""
    from safetensors.torch import save_file

    from interp.checkpoint import _atomic_write

    path = Path(path)
    if (path / MANIFEST).exists():
        raise InputError(f"{path} already holds an activation store: use another folder")
    if acts.ndim != 2 or (acts_out is not None and (acts_out.ndim != 2 or len(acts_out) != len(acts))):
        raise InputError("acts must be [n, d_in] (and acts_out [n, d_out] with the same n)")
    path.mkdir(parents=True, exist_ok=True)
    n = len(acts)
    n_shards = max(1, -(-n // tokens_per_shard))
    meta: dict = {
        "format": FORMAT,
        "model": model_name,
        "site": site,
        "out_site": out_site if acts_out is not None else None,
        "d_in": int(acts.shape[1]),
        "d_out": int((acts_out if acts_out is not None else acts).shape[1]),
        "rows": n,
        "seq_len": 1,
        "skip_bos": False,
        "dtype": str(acts.dtype).removeprefix("torch."),
        "rows_per_shard": tokens_per_shard,
        "n_shards": n_shards,
        "tokens_sha256": None,
        "shards": [],
    }
    for i in range(n_shards):
        lo, hi = i * tokens_per_shard, min(n, (i + 1) * tokens_per_shard)
        shard = {
            "acts": acts[lo:hi].contiguous(),
            "row": torch.arange(lo, hi),
            "pos": torch.zeros(hi - lo, dtype=torch.long),
        }
        if acts_out is not None:
            shard["acts_out"] = acts_out[lo:hi].contiguous()
        name = f"shard-{i:05d}.safetensors"
        _atomic_write(path / name, lambda tmp, shard=shard: save_file(shard, tmp))
        meta["shards"].append({"file": name, "rows": [lo, hi], "n": hi - lo})
    _write_manifest(path, meta)
    return ActivationStore(path, meta)
