"""Checkpoints: weights as safetensors plus a JSON card (never pickle).

A checkpoint is ``<stem>.safetensors`` beside ``<stem>.json``.  The card holds
``arch`` ("bridge" for native TransformerLens transformers, "recurrent" for
:mod:`interp.recurrent` models, "hf" for a Hugging Face architecture built from its config
class, e.g. the zoo's Mamba: ``config`` then holds ``model_type`` and the config's fields), ``config`` (the constructor arguments), ``vocab`` (token
names) and, for the zoo, the recipe, seed, metrics and training time.  Writes are atomic:
both files go to temporary names first and are renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from interp.errors import InputError

ARCHS = ("bridge", "recurrent", "hf")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(module: nn.Module, card: dict, stem: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Writes ``stem.safetensors`` and ``stem.json`` atomically; returns the weights path.

    dtype: store floating-point tensors in this type (e.g. ``torch.float16`` halves a series of
    training checkpoints); loading casts them back into the module's own dtype."""
    stem = Path(stem)
    if card.get("arch") not in ARCHS:
        raise InputError(f"card['arch'] must be one of {ARCHS}")
    weights = stem.with_suffix(".safetensors")
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    _atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    return weights


def read_card(stem: str | Path) -> dict:
    path = Path(stem).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no card {path} beside the weights (expected <name>.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"card {path} is not valid JSON: {e}") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Loads a safetensors file; a clear error for anything else (pickles are refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix != ".safetensors":
        raise InputError(f"{path} is not a .safetensors file; the workbench loads weights only as safetensors")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a valid safetensors file: {e}") from None


def build_module(card: dict) -> nn.Module:
    """An untrained module of the architecture and configuration the card describes."""
    arch = card.get("arch")
    if arch == "bridge":
        from transformer_lens import TransformerBridge, TransformerBridgeConfig

        module = TransformerBridge.boot_native(TransformerBridgeConfig(**card["config"]))
    elif arch == "recurrent":
        from interp.recurrent import HookedRecurrent, RecurrentConfig

        module = HookedRecurrent(RecurrentConfig.from_dict(card["config"]))
    elif arch == "hf":
        module = _build_hf(card["config"])
    else:
        raise InputError(f"card has unknown arch {arch!r}; expected one of {ARCHS}")
    return module.eval()


def _build_hf(config: dict) -> nn.Module:
    """A Hugging Face causal LM from a config dict (``model_type`` + the config class's fields;
    ``seed`` seeds the initialisation), e.g. ``MambaConfig``'s for the zoo's Mamba."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    fields = dict(config)
    model_type, seed = fields.pop("model_type", None), int(fields.pop("seed", 0))
    if model_type not in CONFIG_MAPPING:
        raise InputError(f"card config has unknown Hugging Face model_type {model_type!r}")
    gen = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        module = AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type](**fields))
    finally:
        torch.random.set_rng_state(gen)
    return module


def load_checkpoint(stem: str | Path) -> tuple[nn.Module, dict]:
    """The module (eval mode) and card of a checkpoint ``stem`` (with or without suffix)."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    elif stem.is_file():
        raise InputError(
            f"{stem} is not a .safetensors file; the workbench loads weights only as safetensors "
            "(with a <name>.json card beside them)"
        )
    card = read_card(stem)
    module = build_module(card)
    state = read_weights(stem.with_suffix(".safetensors"))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"weights of {stem} do not match the card's architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return module.eval(), card
