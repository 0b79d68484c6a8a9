"""The SAELens format: a folder holding ``cfg.json`` and ``sae_weights.safetensors`` (SAELens 6:
``architecture``, ``d_in``, ``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations``,
``metadata.{model_name, hook_name, ...}``; earlier versions' top-level ``hook_name`` /
``hook_point`` / ``model_name`` / ``activation_fn_kwargs.k`` are read too).  Weights
``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``, and
``threshold [d_sae]`` for JumpReLU.

Saving folds the input normalisation into the weights (``W_enc * scale``, ``W_dec / scale``,
``b_dec / scale``, exact because the scale is a power of two) and writes
``normalize_activations: "none"``, so SAELens computes the same reconstructions; BatchTopK
dictionaries are written as JumpReLU with their inference threshold, as SAELens does.
Loading maps the architecture back (``topk``, ``jumprelu``, ``standard`` = ReLU,
``transcoder``, ``jumprelu_transcoder``) and, given the model, checks the hook and ``d_in``
against it.  Other architectures (gated, matryoshka, hook_z reshaping, ...) are refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.errors import InputError, Unsupported
from interp.sae.dictionary import DictConfig, Dictionary

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
ARCHITECTURES = ("topk", "jumprelu", "standard", "transcoder", "jumprelu_transcoder")


def _architecture(d: Dictionary) -> str:
    kind, tc = d.cfg.kind, d.cfg.transcoder
    if kind == "topk":
        if tc:
            raise Unsupported("SAELens has no TopK transcoder architecture: save a relu or jumprelu transcoder")
        return "topk"
    if kind in ("jumprelu", "batchtopk"):
        return "jumprelu_transcoder" if tc else "jumprelu"
    return "transcoder" if tc else "standard"


def save(d: Dictionary, folder: str | Path) -> Path:
    """Writes ``folder/cfg.json`` and ``folder/sae_weights.safetensors`` in SAELens 6's format."""
    from safetensors.torch import save_file

    from interp.checkpoint import _atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c, s, o = d.cfg, d.cfg.scale, d.out_scale
    arch = _architecture(d)
    tensors = {
        "W_enc": (d.W_enc.detach() * s).contiguous(),
        "b_enc": d.b_enc.detach().clone().contiguous(),
        "W_dec": (d.W_dec.detach() / o).contiguous(),
        "b_dec": (d.b_dec.detach() / o).contiguous(),
    }
    if arch.startswith("jumprelu"):
        tensors["threshold"] = d.threshold.detach().clone().contiguous()
    cfg: dict = {
        "architecture": arch,
        "d_in": c.d_in,
        "d_sae": c.width,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not c.transcoder,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": c.model_name,
            "hook_name": c.site,
            "hook_head_index": None,
            "prepend_bos": True,
            "exclude_special_tokens": bool(c.skip_bos),
            "sae_lens_training_version": None,
            "interp_card": {k: v for k, v in d.card.items() if isinstance(v, (int, float, str, bool, type(None)))},
        },
    }
    if arch == "topk":
        cfg["k"] = int(c.k or 1)
        cfg["rescale_acts_by_decoder_norm"] = False
    if c.transcoder:
        cfg["d_out"] = c.d_out
        cfg["metadata"]["hook_name_out"] = c.out_site
    _atomic_write(folder / WEIGHTS, lambda tmp: save_file({k: v.cpu() for k, v in tensors.items()}, tmp))
    _atomic_write(folder / CFG, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2) + "\n"))
    return folder


def load(folder: str | Path, model=None) -> Dictionary:
    """A dictionary from a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``; safetensors
    only).  With ``model``: raises (one line) if the hook is not one of its sites or ``d_in``
    does not match it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no SAELens folder at {folder}")
    for name in (CFG, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}: not a SAELens folder (pickled .pt files are never read)")
    try:
        raw = json.loads((folder / CFG).read_text())
        t = load_file(str(folder / WEIGHTS))
    except (json.JSONDecodeError, SafetensorError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the SAELens files in {folder}: {str(e).splitlines()[0]}") from None
    meta = raw.get("metadata") or {}
    arch = raw.get("architecture") or ("topk" if raw.get("activation_fn") == "topk" else "standard")
    if arch not in ARCHITECTURES:
        raise Unsupported(f"SAELens architecture {arch!r} is not supported here; supported: {ARCHITECTURES}")
    if raw.get("reshape_activations", "none") != "none" or raw.get("hook_head_index", meta.get("hook_head_index")):
        raise Unsupported("SAELens dictionaries over reshaped (hook_z per-head) activations are not supported")
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None, False):
        raise Unsupported(
            f"normalize_activations={norm!r} needs a scaling factor SAELens keeps outside cfg.json: fold it into "
            "the weights (SAELens: sae.fold_activation_norm_scaling_factor) and save again"
        )
    hook = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point")
    model_name = meta.get("model_name") or raw.get("model_name") or ""
    if not hook:
        raise InputError(f"{folder / CFG} names no hook (metadata.hook_name)")
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{folder / CFG} lacks integer d_in / d_sae") from None
    transcoder = arch.endswith("transcoder")
    if not transcoder and not raw.get("apply_b_dec_to_input", True):
        raise Unsupported("SAELens dictionaries with apply_b_dec_to_input=false are not supported")
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
    kind = {"topk": "topk", "standard": "relu", "transcoder": "relu"}.get(arch, "jumprelu")
    out_site = (meta.get("hook_name_out") or raw.get("hook_name_out")) if transcoder else None
    if transcoder and not out_site:
        raise InputError(f"{folder / CFG} is a transcoder but names no output hook (metadata.hook_name_out)")
    cfg = DictConfig(
        kind=kind,
        d_in=d_in,
        width=d_sae,
        k=int(k) if k is not None else None,
        d_out=int(raw.get("d_out") or d_in),
        site=str(hook),
        out_site=out_site,
        model_name=str(model_name),
        scale=1.0,
        skip_bos=bool(meta.get("exclude_special_tokens", False)),
    )
    if arch.startswith("jumprelu") and "threshold" not in t:
        if "log_threshold" in t:
            t = {**t, "threshold": t["log_threshold"].exp()}
        else:
            raise InputError(f"{folder / WEIGHTS} is a JumpReLU dictionary without a threshold")
    card: dict = {"source": f"SAELens folder {folder}"}
    if raw.get("rescale_acts_by_decoder_norm"):
        # SAELens TopK selecting on pre * ||W_dec[i]|| and decoding f / ||W_dec[i]||: fold the norms
        # into the encoder so the decoder rows are unit norm (equal up to rounding)
        norms = t["W_dec"].float().norm(dim=1).clamp(min=1e-8)
        t = {**t, "W_enc": t["W_enc"] * norms, "b_enc": t["b_enc"] * norms, "W_dec": t["W_dec"] / norms[:, None]}
        card["folded"] = "decoder norms folded into the encoder (rescale_acts_by_decoder_norm)"
    d = Dictionary.from_tensors(cfg, {k: v.to(torch.float32) for k, v in t.items()}, card)
    if model is not None:
        # model names differ across tools (hub ids vs zoo names): the hook and the widths decide
        if not model.has_site(cfg.site):
            raise InputError(
                f"this SAELens dictionary reads hook {cfg.site!r}, which {model.cfg.name or 'the model'} does not have "
                f"(it was made for {model_name or 'another model'})"
            )
        d.check(model)
    return d
