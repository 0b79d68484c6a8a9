"""The shipped word lists and filler text, the single-token checks every task builder makes, and
text the model writes itself."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch

from interp.errors import InputError

DATA = Path(__file__).parent.parent / "data"


@cache
def data(name: str) -> dict:
    """A shipped data file (``interp/tasks/data/<name>.json``)."""
    path = DATA / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no task data {name!r}; shipped: {sorted(p.stem for p in DATA.glob('*.json'))}")
    return json.loads(path.read_text(encoding="utf-8"))


def _text_model(model, task: str) -> None:
    if model.tokenizer is None or model.word_level:
        raise InputError(
            f"{task} is a natural-language task: it needs a model with a text tokenizer (a real or "
            f"Hugging Face model), not {model.cfg.name or 'this model'}'s named tokens"
        )


def single_tokens(model, words, *, space: bool = True) -> list[str]:
    """The words of ``words`` that are one token for ``model`` (with a leading space if ``space``)."""
    return [w for w in words if len(model.encode((" " if space else "") + w, prepend_bos=False)) == 1]


def check_single_tokens(model, words, what: str, *, space: bool = True) -> list[int]:
    """Token ids of ``words`` (each must be one token); raises listing those that are not."""
    ids, bad = [], []
    for w in words:
        t = model.encode((" " if space else "") + w, prepend_bos=False)
        if len(t) == 1:
            ids.append(t[0])
        else:
            bad.append(f"{w!r} -> {model.to_str_tokens(torch.tensor(t))}")
    if bad:
        raise InputError(
            f"{what} must be single tokens for {model.cfg.name or 'this tokenizer'}; these are not: "
            + "; ".join(bad[:10])
        )
    return ids


def generated_text(
    model, n: int = 4, length: int = 512, *, temperature: float = 1.0, top_k: int = 50, seed: int = 0
) -> torch.Tensor:
    """``[n, length]`` tokens of text the model writes itself (sampled from the BOS token, or
    from a blank line for a model without one): the ordinary text for Olsson et al.'s
    in-context-learning score and the tuned lens where no corpus ships.  Zoo models with a
    word vocabulary write sequences of their own tokens from their BOS."""
    from interp.decoding import sample

    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    if bos is None and (model.tokenizer is None or model.word_level):
        raise InputError(f"{model.cfg.name or 'this model'} has neither a BOS token nor a text tokenizer to start from")
    start = [bos] if bos is not None else model.encode("\n", prepend_bos=False)
    if length > model.cfg.n_ctx:
        raise InputError(f"length {length} exceeds n_ctx={model.cfg.n_ctx}")
    prompts = torch.tensor([start] * n)
    new = sample(model, prompts, length - len(start), temperature=temperature, top_k=top_k, seed=seed)
    return torch.cat([prompts, new], dim=1)
