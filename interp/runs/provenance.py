"""Where a result came from: the analysis and its arguments, the model (name, source, sha256 of
its weights, architecture), the prompts, the seeds, the library and dependency versions, the
git commit of a checkout, device, dtype, wall time and date.

Everything is JSON-safe: tensors are recorded as shape, dtype and sha256 (token prompts also
by their ids, up to :data:`MAX_IDS`); objects the workbench does not know by their type and repr.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: dependencies whose versions every run records
PACKAGES = (
    "torch",
    "transformers",
    "transformer-lens",
    "nnsight",
    "pandas",
    "numpy",
    "pyarrow",
    "duckdb",
    "plotly",
    "safetensors",
)
#: parameter / field names that hold prompts (text or token ids)
PROMPT_NAMES = frozenset(
    {
        "tokens",
        "clean",
        "corrupt",
        "prompt",
        "prompts",
        "text",
        "texts",
        "batch",
        "task",
        "eval_prompts",
        "evals",
        "neutral_prompts",
        "positive",
        "negative",
        "pairs",
        "train",
        "test",
        "zero_shot",
    }
)
MAX_IDS = 50_000  # token ids stored verbatim per prompt argument; beyond that, shape and hash only
MAX_ITEMS = 1_000  # list items described one by one; a longer list is summarised by its length and hash


@dataclass
class Provenance:
    """What produced a :class:`~interp.runs.Result` (see the module docstring for each field)."""

    analysis: str
    function: str
    arguments: dict = field(default_factory=dict)
    model: dict | None = None
    prompts: list = field(default_factory=list)
    seeds: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    git: dict | None = None
    device: str | None = None
    dtype: str | None = None
    wall_seconds: float | None = None
    started: str | None = None

    @classmethod
    def capture(
        cls,
        fn,
        args: tuple = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        started: dt.datetime | None = None,
        wall_seconds: float | None = None,
    ) -> Provenance:
        """The provenance of the call ``fn(*args, **kwargs)`` (which began at ``started`` and
        took ``wall_seconds``)."""
        from interp.runs.capture import analysis_name

        bound = _bind(fn, args, dict(kwargs or {}))
        model = next((v for v in bound.values() if _is_model(v)), None)
        prompts: list = []
        for name, value in bound.items():
            _collect_prompts(name, value, prompts, depth=0)
        seeds = {k: _describe(v) for k, v in bound.items() if "seed" in k.lower() and v is not None}
        try:
            import torch

            seeds["torch_initial_seed"] = int(torch.initial_seed())
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        device = dtype = None
        if model is not None:
            device = str(model.device)
            p = next(model.module.parameters(), None)
            dtype = str(p.dtype).replace("torch.", "") if p is not None else None
        made = cls(
            analysis=analysis_name(fn),
            function=f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}",
            arguments={k: _describe(v) for k, v in bound.items()},
            model=describe_model(model) if model is not None else None,
            prompts=prompts,
            seeds=seeds,
            versions=versions(),
            git=git_commit(),
            device=device,
            dtype=dtype,
            wall_seconds=None if wall_seconds is None else float(wall_seconds),
            started=(started or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        )
        # as JSON has it (tuples as lists ...): a fresh provenance equals the same one reloaded
        return cls.from_dict(json.loads(json.dumps(made.to_dict(), default=str))) or made

    def missing(self) -> list[str]:
        """The parts a complete provenance has and this one lacks (empty: complete).  A run
        without a model, prompts or seeds lacks nothing for them; outside a git checkout the
        commit is not required."""
        out = [k for k in ("analysis", "function", "versions", "wall_seconds", "started") if not getattr(self, k)]
        if self.model is not None:
            out += [f"model.{k}" for k in ("name", "sha256", "family", "config", "source") if not self.model.get(k)]
            out += [k for k in ("device", "dtype") if not getattr(self, k)]
        out += [
            f"versions.{p}"
            for p in ("interp", "torch", "transformers", "transformer-lens", "nnsight")
            if p not in self.versions
        ]
        out += [f"prompts[{i}].sha256" for i, p in enumerate(self.prompts) if not p.get("sha256")]
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Provenance | None:
        if not d:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --- arguments ---------------------------------------------------------------------------


def _bind(fn, args: tuple, kwargs: dict) -> dict:
    try:
        sig = inspect.signature(fn)
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        out = {}
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                out.update({f"{name}[{i}]": v for i, v in enumerate(value)})
            else:
                out[name] = value
        return out
    except (TypeError, ValueError):  # no signature (a builtin) or it does not bind: positions and names
        return {**{f"args[{i}]": v for i, v in enumerate(args)}, **kwargs}


def _is_model(value) -> bool:
    from interp.model import Model

    return isinstance(value, Model)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_sha256(t) -> str:
    """sha256 of a tensor's dtype, shape and bytes (any dtype, any device)."""
    import torch

    x = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    if x.numel():
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _json_sha256(value) -> str:
    return _sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _describe(value, depth: int = 0):
    """A JSON-safe description of an argument."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else repr(v)
    if _is_model(value):
        return {"model": value.cfg.name}
    if hasattr(value, "detach") and hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor
        return {
            "tensor": list(value.shape),
            "dtype": str(value.dtype).replace("torch.", ""),
            "sha256": tensor_sha256(value),
        }
    if isinstance(value, np.ndarray):
        return {
            "array": list(value.shape),
            "dtype": str(value.dtype),
            "sha256": _sha256_bytes(np.ascontiguousarray(value).tobytes()),
        }
    if isinstance(value, pd.DataFrame):
        return {
            "frame": list(value.shape),
            "columns": [str(c) for c in value.columns][:100],
            "sha256": _sha256_bytes(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes()),
        }
    if depth > 4:
        return {"type": type(value).__qualname__, "repr": repr(value)[:200]}
    if isinstance(value, (list, tuple)):
        items = [_describe(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            return {"items": len(value), "first": items[:10], "sha256": _json_sha256(items)}
        return items
    if isinstance(value, Mapping):
        return {str(k): _describe(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__qualname__}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            out[f.name] = _describe(v, depth + 1) if not callable(v) else _callable_name(v)
        return out
    if callable(value):
        return {"function": _callable_name(value)}
    return {"type": type(value).__qualname__, "repr": repr(value)[:200]}


def _callable_name(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _token_content(value):
    """A prompt value as ``{"ids" | "text": ...}`` (JSON), or for a tensor of more than
    :data:`MAX_IDS` tokens ``{"shape", "sha256"}`` (the ids are never copied into Python lists);
    None if it is not a prompt."""
    from interp.tokens import TokenBatch

    if isinstance(value, TokenBatch):
        if value.tokens.numel() > MAX_IDS:
            return {"shape": list(value.tokens.shape), "sha256": tensor_sha256(value.tokens)}
        return {"ids": [row[: int(n)] for row, n in zip(value.tokens.tolist(), value.lengths.tolist())]}
    if hasattr(value, "detach") and hasattr(value, "dtype") and not value.is_floating_point() and value.ndim in (1, 2):
        if value.numel() > MAX_IDS:
            return {"shape": list(value.shape), "sha256": tensor_sha256(value)}
        return {"ids": value.detach().cpu().tolist()}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, str) for v in value):
            return {"text": list(value)}
        if all(isinstance(v, (list, tuple)) and all(isinstance(x, (int, np.integer)) for x in v) for v in value):
            return {"ids": [[int(x) for x in v] for v in value]}
        if all(hasattr(v, "tolist") and not isinstance(v, str) for v in value):
            try:
                return {"ids": [v.tolist() for v in value]}
            except (TypeError, ValueError):
                return None
    return None


def _collect_prompts(name: str, value, out: list, depth: int) -> None:
    """Adds ``{argument, text | ids, shape, sha256}`` for each prompt in ``value`` (recursing into
    dataclasses such as a task batch or a corruption through their prompt-named fields)."""
    from interp.tokens import TokenBatch

    leaf = name.rsplit(".", 1)[-1]
    if leaf in PROMPT_NAMES or isinstance(value, TokenBatch):
        content = _token_content(value)
        if content is not None and "shape" in content:  # too many tokens to keep: shape and hash
            shape = content["shape"]
            out.append(
                {
                    "argument": name,
                    "sha256": content["sha256"],
                    "rows": shape[0] if len(shape) == 2 else 1,
                    "n_tokens": int(np.prod(shape)),
                }
            )
            return
        if content is not None:
            entry: dict[str, Any] = {"argument": name, "sha256": _json_sha256(content)}
            if "ids" in content:
                ids = content["ids"]
                entry["rows"] = len(ids) if ids and isinstance(ids[0], list) else 1
                n = sum(len(r) for r in ids) if ids and isinstance(ids[0], list) else len(ids)
                entry["n_tokens"] = n
                if n <= MAX_IDS:
                    entry["ids"] = ids
            else:
                entry["text"] = content["text"]
            out.append(entry)
            return
    if depth < 2 and dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _collect_prompts(f"{name}.{f.name}", getattr(value, f.name), out, depth + 1)


# --- the model ---------------------------------------------------------------------------


def describe_model(model) -> dict:
    """Name, source, class, family and configuration of ``model`` with the sha256 of its weights
    (``weights``: per file, or of the state dict in memory; ``sha256``: one digest of them)."""
    card = model.card or {}
    weights, hash_of = weights_sha256(model)
    return {
        "name": model.cfg.name,
        "source": _source(card),
        "path": card.get("path"),
        "class": type(model.module).__qualname__,
        "family": model.cfg.family,
        "config": model.cfg.to_dict(),
        "weights": weights,
        "sha256": combined_sha256(weights),
        "hash_of": hash_of,
    }


def _source(card: Mapping) -> str:
    if card.get("kind") == "real":
        return f"registry {card.get('package')}=={card.get('version')} ({card.get('source', '')})".strip()
    if card.get("recipe"):
        return f"trained checkpoint (recipe {card['recipe'].get('name', card.get('name', '?'))})"
    if card.get("source") == "huggingface":
        return "huggingface folder" if card.get("path") else "huggingface model (in memory)"
    if card.get("source"):
        return str(card["source"])
    if card.get("arch"):
        return f"{card['arch']} built from a config"
    return "unknown"


def combined_sha256(weights: Mapping[str, str]) -> str:
    if len(weights) == 1:
        return next(iter(weights.values()))
    return _sha256_bytes("".join(f"{k} {v}\n" for k, v in sorted(weights.items())).encode())


def weights_sha256(model) -> tuple[dict[str, str], str]:
    """``({file or "state_dict": sha256}, how)``: a real zoo model's hashes from its card (checked
    against the files at load), a folder's safetensors files hashed once (cached by path, size
    and modification time), else the parameters and buffers in memory."""
    card = model.card or {}
    if card.get("kind") == "real" and isinstance(card.get("weights"), dict) and card["weights"]:
        return dict(card["weights"]), "files (the real-model card, checked at load)"
    path = card.get("path")
    if path and Path(path).is_dir():
        files = sorted(Path(path).glob("*.safetensors"))
        if files:
            return {f.name: file_sha256(f) for f in files}, "files"
    return {"state_dict": state_dict_sha256(model.module)}, "state_dict"


_STATE_CACHE: dict[int, tuple[tuple, str]] = {}


def state_dict_sha256(module) -> str:
    """sha256 over the module's named parameters and buffers (names, dtypes, shapes, bytes);
    cached per module until a parameter changes (torch bumps a tensor's version on every
    in-place update, e.g. an optimiser step)."""
    tensors = list(module.state_dict(keep_vars=True).items())
    key = tuple((n, t.data_ptr(), t._version) for n, t in tensors)
    hit = _STATE_CACHE.get(id(module))
    if hit is not None and hit[0] == key:
        return hit[1]
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(tensor_sha256(t).encode())
    digest = h.hexdigest()
    _STATE_CACHE[id(module)] = (key, digest)
    return digest


def _hash_cache_path() -> Path:
    from interp.paths import cache_dir

    return cache_dir() / "hashes.json"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, cached in ``$INTERP_CACHE/hashes.json`` by resolved path, size and
    modification time (a weights folder is hashed once, not at every run)."""
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    stamp = [st.st_size, st.st_mtime_ns]
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    cache = {k: v for k, v in cache.items() if Path(k).exists()}  # forget files that are gone (temporary folders)
    cache[key] = {"stamp": stamp, "sha256": digest}
    try:  # best effort: a cache that cannot be written only costs a re-hash next time
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return digest


# --- the environment ---------------------------------------------------------------------

_VERSIONS: dict[str, str] | None = None


def versions() -> dict[str, str]:
    """interp, Python, the platform and :data:`PACKAGES` (installed ones)."""
    global _VERSIONS
    if _VERSIONS is None:
        import interp

        out = {"interp": interp.__version__, "python": sys.version.split()[0], "platform": platform.platform()}
        for p in PACKAGES:
            try:
                out[p] = metadata.version(p)
            except metadata.PackageNotFoundError:
                pass
        _VERSIONS = out
    return dict(_VERSIONS)


def checkout_root() -> Path | None:
    """The git checkout holding this interp (None when installed elsewhere)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / ".git").exists() else None


def git_commit(root: Path | None = None) -> dict | None:
    """``{commit, branch}`` of the checkout at ``root`` (default: the one holding interp), read
    from ``.git`` without running git (worktrees and packed refs included); None outside a
    checkout or when ``.git`` cannot be read."""
    root = root if root is not None else checkout_root()
    if root is None:
        return None
    try:
        gitdir = root / ".git"
        if gitdir.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = gitdir.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (root / text.split(":", 1)[1].strip()).resolve()
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return {"commit": head, "branch": None}
        ref = head.split(":", 1)[1].strip()
        for base in (gitdir, common):
            if (base / ref).is_file():
                return {"commit": (base / ref).read_text().strip(), "branch": ref.removeprefix("refs/heads/")}
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return {"commit": parts[0], "branch": ref.removeprefix("refs/heads/")}
        return {"commit": None, "branch": ref.removeprefix("refs/heads/")}  # a branch without commits yet
    except OSError:
        return None
