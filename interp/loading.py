"""``interp.load``: one entry point from any model source to an :class:`interp.Model`.

Sources: a zoo name; a ``TransformerBridgeConfig`` / ``RecurrentConfig`` or a dict of one
(random init); a checkpoint (``<stem>.safetensors`` + ``<stem>.json``); a local Hugging
Face model directory; an in-memory HF model with its tokenizer; a HF hub id (needs the
hub); any ``torch.nn.Module`` with ``sites=`` mapping site names to submodule paths.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from interp.backends import HookPointBackend, NNsightBackend, logits_of
from interp.model import Model, ModelConfig
from interp.vocab import WordVocab, default_names


def load(source: Any, *, tokenizer=None, sites: Mapping[str, str] | None = None, name: str | None = None,
         n_ctx: int | None = None, trust_remote_code: bool = False, family: str = "custom") -> Model:
    """Loads ``source`` as a hooked :class:`Model` (eval mode).

    tokenizer: for an in-memory HF model (or to override a directory's).  sites: for a
    custom ``nn.Module``, ``{site name: submodule path}``.  n_ctx: context length of a
    custom module (default 1024).  trust_remote_code: passed to Hugging Face; off unless
    you turn it on.  family: the family reported for a custom module ("custom", "rnn",
    "ssm" or "transformer").
    """
    from transformer_lens import TransformerBridgeConfig

    from interp import zoo

    if isinstance(source, nn.Module) and sites is not None:
        return _from_custom(source, sites, name=name or type(source).__name__, n_ctx=n_ctx or 1024,
                            family=family)
    if _is_hf_model(source):
        if tokenizer is None:
            raise ValueError("an in-memory Hugging Face model needs its tokenizer: load(model, tokenizer=tok)")
        return _from_hf(source, tokenizer=tokenizer, name=name, trust_remote_code=trust_remote_code)
    if isinstance(source, nn.Module):
        raise ValueError("a plain nn.Module needs sites={site name: submodule path}, e.g. "
                         "{'blocks.0.hook_resid_post': 'layers.0'}")
    if isinstance(source, TransformerBridgeConfig):
        from transformer_lens import TransformerBridge

        module = TransformerBridge.boot_native(source)
        return from_module(module, {"arch": "bridge", "name": name or "random"})
    if hasattr(source, "cell") and hasattr(source, "to_dict"):  # an interp.recurrent.RecurrentConfig
        source = source.to_dict()
    if isinstance(source, dict):
        from interp.checkpoint import build_module

        arch = "recurrent" if "cell" in source else "bridge"
        card = {"arch": arch, "config": dict(source), "name": name or source.get("model_name", "random")}
        return from_module(build_module(card), card)
    if isinstance(source, (str, Path)):
        text = str(source)
        if text in zoo.names():
            return zoo.load(text)
        path = Path(text).expanduser()
        if path.is_dir():
            if (path / "config.json").is_file():
                return _from_hf(str(path), tokenizer=tokenizer, name=name or path.name,
                                trust_remote_code=trust_remote_code)
            raise FileNotFoundError(f"{path} is a directory without config.json: not a Hugging Face model folder")
        if path.is_file() or path.with_suffix(".json").is_file():
            from interp.checkpoint import load_checkpoint

            module, card = load_checkpoint(path)
            return from_module(module, card)
        if path.suffix or text.startswith((".", "/", "~")) or path.parent != Path("."):
            if not _looks_like_hub_id(text):
                raise FileNotFoundError(f"no model at {text!r}: not a directory, checkpoint or zoo name "
                                        f"(zoo: {zoo.names()})")
        near = difflib.get_close_matches(text, zoo.names(), n=3, cutoff=0.6)
        if near:
            raise ValueError(f"unknown zoo model {text!r}; did you mean {near}? available: {zoo.names()}")
        return _from_hub(text, tokenizer=tokenizer, name=name, trust_remote_code=trust_remote_code)
    raise TypeError(f"cannot load a model from {type(source).__name__}; pass a zoo name ({zoo.names()}), a config, "
                    "a checkpoint or HF directory path, a HF model with tokenizer=, or an nn.Module with sites=")


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def _is_hf_model(obj) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency of transformer-lens
        return False
    return isinstance(obj, PreTrainedModel)


def _probe(n_ctx: int) -> torch.Tensor:
    return torch.zeros(1, min(4, n_ctx), dtype=torch.long)


def from_module(module: nn.Module, card: dict) -> Model:
    """A Model around a module built from a checkpoint card (native bridge or recurrent)."""
    module.eval()
    vocab = WordVocab.from_dict(card["vocab"]) if card.get("vocab") else None
    if card["arch"] == "recurrent":
        c = module.cfg
        cfg = ModelConfig(n_layers=c.n_layers, n_heads=0, d_model=c.d_model, d_vocab=c.d_vocab, n_ctx=c.n_ctx,
                          family=c.family, name=card.get("name", ""))
    else:
        cfg = _bridge_config(module, card.get("name", ""))
        vocab = vocab or WordVocab(default_names(cfg.d_vocab))
    return Model(HookPointBackend(module, _probe(cfg.n_ctx)), cfg, vocab=vocab, card=card)


def _bridge_config(bridge, name: str) -> ModelConfig:
    c = bridge.cfg
    attn_only = bool(getattr(c, "attn_only", False))
    return ModelConfig(n_layers=c.n_layers, n_heads=c.n_heads, d_model=c.d_model, d_vocab=c.d_vocab,
                       n_ctx=c.n_ctx, family="transformer", d_head=c.d_head,
                       d_mlp=0 if attn_only else int(getattr(c, "d_mlp", 0) or 0), name=name)


def _from_hf(path_or_model, *, tokenizer, name: str | None, trust_remote_code: bool) -> Model:
    from transformer_lens import TransformerBridge

    if isinstance(path_or_model, str):
        if tokenizer is None:
            tokenizer = _local_tokenizer(path_or_model, trust_remote_code)
        bridge = TransformerBridge.boot_transformers(path_or_model, tokenizer=tokenizer,
                                                     trust_remote_code=trust_remote_code)
    else:
        path_or_model.eval()  # a freshly built HF model is in train mode (dropout on)
        arch_name = getattr(path_or_model.config, "_name_or_path", "") or path_or_model.config.model_type
        bridge = TransformerBridge.boot_transformers(arch_name, hf_model=path_or_model, tokenizer=tokenizer,
                                                     trust_remote_code=trust_remote_code)
    bridge.eval()
    cfg = _bridge_config(bridge, name or str(getattr(bridge.cfg, "model_name", "hf")))
    return Model(HookPointBackend(bridge, _probe(cfg.n_ctx)), cfg, tokenizer=bridge.tokenizer or tokenizer,
                 card={"source": "huggingface"})


def _local_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, add_bos_token=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path} has no usable tokenizer ({e}); save one there or pass tokenizer=") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (offline, the hub client
    would otherwise retry for about a minute before failing)."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(repo_id: str, *, tokenizer, name: str | None, trust_remote_code: bool) -> Model:
    from interp import zoo

    if not _hub_reachable():
        raise RuntimeError(f"could not load {repo_id!r} from the Hugging Face hub: the hub is not reachable "
                           "(offline). Load a local HF directory or a zoo model instead "
                           f"(zoo: {zoo.names()})")
    try:
        return _from_hf(repo_id, tokenizer=tokenizer, name=name or repo_id, trust_remote_code=trust_remote_code)
    except (OSError, ConnectionError, ValueError, FileNotFoundError) as e:
        raise RuntimeError(f"could not load {repo_id!r} from the Hugging Face hub: {str(e).splitlines()[0]}. "
                           "Offline, load a local HF directory or a zoo model instead "
                           f"(zoo: {zoo.names()})") from None


def _from_custom(module: nn.Module, sites: Mapping[str, str], *, name: str, n_ctx: int, family: str) -> Model:
    module.eval()
    probe = _probe(n_ctx)
    backend = NNsightBackend(module, sites, probe)
    # a provisional Model, only to read each site's width through the same backend
    _, cache = Model(backend, ModelConfig(0, 0, 0, 1, n_ctx, family)).run_with_cache(probe)
    with torch.no_grad():
        d_vocab = int(logits_of(module(probe)).shape[-1])
    layers = {int(s.split(".")[1]) for s in sites if s.startswith("blocks.") and s.split(".")[1].isdigit()}
    cfg = ModelConfig(n_layers=len(layers), n_heads=0, d_model=max(int(v.shape[-1]) for v in cache.values()),
                      d_vocab=d_vocab, n_ctx=n_ctx, family=family, name=name)
    return Model(backend, cfg, card={"source": "custom", "sites": dict(sites)})
