"""What a finding needs of a model, checked before anything runs: a model that lacks it gets
``not applicable`` with the reason (retrieval heads on an LSTM), never an exception."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from interp.model import Model


def _name(model: Model) -> str:
    return model.cfg.name or "this model"


def _attention(model: Model) -> str | None:
    if model.has_attention:
        return None
    return f"it needs attention heads, and {_name(model)} is a {model.cfg.family} model without attention"


def _text(model: Model) -> str | None:
    if model.tokenizer is not None and not model.word_level:
        return None
    return (
        f"it runs on natural-language text, and {_name(model)} has no text tokenizer "
        "(its vocabulary is named tokens of a synthetic task)"
    )


def _rotary(model: Model) -> str | None:
    if model.has_attention and all(k in model.site_kinds() for k in ("rot_q", "rot_k", "rot_cos", "rot_sin")):
        return None
    return (
        f"it re-indexes positions inside the key-value cache, which needs rotary position embeddings; "
        f"{_name(model)} has none (learned absolute positions, or no attention)"
    )


def _mlp(model: Model) -> str | None:
    if "mlp_out" in model.site_kinds():
        return None
    return f"it patches MLP outputs, and {_name(model)} has no MLP sites (attention-only or recurrent)"


def _residual(model: Model) -> str | None:
    if "resid_post" in model.site_kinds() and model.cfg.family == "transformer":
        return None
    return f"it reads the residual stream of transformer blocks, and {_name(model)} is a {model.cfg.family} model"


def _causal(model: Model) -> str | None:
    if model.cfg.causal:
        return None
    return f"it measures next-token loss, and {_name(model)} is not a causal language model"


#: requirement name -> check(model) returning the reason it is not met, or None
REQUIREMENTS: dict[str, Callable[[Model], str | None]] = {
    "attention": _attention,
    "text": _text,
    "rotary": _rotary,
    "mlp": _mlp,
    "residual": _residual,
    "causal": _causal,
}


def unmet(model: Model, requires: Sequence[str]) -> str | None:
    """The first reason ``model`` cannot run a finding that ``requires`` these, or None."""
    for name in requires:
        if name not in REQUIREMENTS:
            raise ValueError(f"unknown requirement {name!r}; known: {sorted(REQUIREMENTS)}")
        reason = REQUIREMENTS[name](model)
        if reason:
            return reason
    return None
