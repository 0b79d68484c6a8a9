"""Contrast pairs: prompts that differ in one behaviour, read at each prompt's own answer position.

Natural prompts differ in length, so a pair's two prompts need not align token by token:
each prompt is read at its own position (``answer_pos``: an int, -1 = each prompt's last
token, counted from each row's end) or averaged over its tokens (``"mean"``: every real
token except a prepended BOS, which every prompt shares).

Pairs files (the CLI's and the app's input) are JSON, validated with pydantic::

    {"positive": ["I loved this film.", ...], "negative": ["I hated this film.", ...],
     "answer_pos": -1}

``positive`` and ``negative`` are equally long lists of prompts (text, or lists of token
ids); prompt i of one is paired with prompt i of the other.  ``answer_pos`` (optional) is
an int or ``"mean"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from interp.errors import InputError
from interp.model import Model, Tokens
from interp.tasks.contrast import AnswerPos, ContrastPairs, Prompts, check_answer_pos
from interp.tokens import TokenBatch

PAIRS_FORMAT = """A pairs file is JSON: {"positive": [...], "negative": [...], "answer_pos": -1}.
"positive" and "negative" are equally long, non-empty lists of prompts: text (any length), or
lists of token ids; prompt i of "positive" is paired with prompt i of "negative".
"answer_pos" (optional, default -1 = each prompt's last token) is the position whose
activations are compared, counted from each prompt's end when negative, or "mean" (the mean
over each prompt's tokens)."""


@torch.no_grad()
def site_activations(
    model: Model, tokens: Tokens, site: str | list[str], pos: AnswerPos | None = -1, skip_bos: bool = True
):
    """Activation of ``site`` per prompt, float32: at ``pos`` (an int; negative counts from each
    row's end) ``[n, *trailing]``, the mean over each row's real tokens (``"mean"``, BOS skipped
    when ``skip_bos`` and the model prepends one) ``[n, *trailing]``, or every position
    (``pos=None``) ``[n, pos, *trailing]`` (padded rows hold the run's padding values).  With a
    list of sites, one forward and a dict site -> activation."""
    batch = model.tokenize(tokens)
    names = [site] if isinstance(site, str) else list(site)
    _, cache = model.run_with_cache(batch, names=names, logits=False)
    out = {n: read_at(model, batch, cache[n].float(), pos, skip_bos) for n in names}
    return out[site] if isinstance(site, str) else out


def read_at(model: Model, batch: TokenBatch, act: torch.Tensor, pos: AnswerPos | None, skip_bos: bool = True):
    """An activation ``[n, pos, ...]`` of ``batch`` read at each row's ``pos`` (see :func:`site_activations`)."""
    if pos is None:
        return act
    lengths = batch.lengths.to(act.device)
    if pos == "mean":
        first = 1 if skip_bos and model.prepend_bos and _starts_with_bos(model, batch) else 0
        ar = torch.arange(act.shape[1], device=act.device)
        keep = (ar[None] < lengths[:, None]) & (ar[None] >= min(first, int(lengths.min()) - 1))
        w = keep.float().view(*keep.shape, *([1] * (act.ndim - 2)))
        return (act * w).sum(1) / w.sum(1)
    check_answer_pos(pos, batch)
    assert isinstance(pos, int)  # check_answer_pos raises for anything but "mean" (handled above) or an int
    idx = torch.where(torch.tensor(pos) < 0, lengths + pos, torch.full_like(lengths, pos))
    return act[torch.arange(act.shape[0], device=act.device), idx]


def _starts_with_bos(model: Model, batch: TokenBatch) -> bool:
    bos = getattr(model.tokenizer, "bos_token_id", None)
    return bos is not None and bool((batch.tokens[:, 0] == bos).all())


# --- pairs files ----------------------------------------------------------------------------


class _PairsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    positive: list[str | list[StrictInt]] = Field(min_length=1)
    negative: list[str | list[StrictInt]] = Field(min_length=1)
    answer_pos: StrictInt | Literal["mean"] = -1


#: pair sets that ship with the package, usable by name wherever a pairs file is read
SHIPPED = ("sentiment",)


def read_pairs(path: str | Path, model: Model) -> ContrastPairs:
    """Reads and validates a pairs file (format: :data:`PAIRS_FORMAT`) for ``model``, or takes a
    shipped pair set by name (``"sentiment"``: :func:`interp.tasks.text.sentiment`'s pairs)."""
    path = Path(path)
    if not path.is_file() and str(path) in SHIPPED:
        from interp.tasks.text import sentiment

        return sentiment(model).pairs
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file at {path} (or name a shipped set: {', '.join(SHIPPED)})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid UTF-8 JSON ({e}).\n{PAIRS_FORMAT}") from None
    try:
        parsed = _PairsFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the file"
        raise InputError(f"{path}: {where}: {first['msg']}.\n{PAIRS_FORMAT}") from None
    if len(parsed.positive) != len(parsed.negative):
        raise InputError(
            f"{path}: {len(parsed.positive)} positive but {len(parsed.negative)} negative prompts; "
            f"pair them one to one.\n{PAIRS_FORMAT}"
        )
    # each side is all texts or all token-id lists unless the file mixes them: pairs.tokens
    # below rejects a mixed side (tokenize raises), named with the file
    pairs = ContrastPairs(cast(Prompts, parsed.positive), cast(Prompts, parsed.negative), parsed.answer_pos)
    try:
        pairs.tokens(model)  # tokenizes and checks every prompt now, with the file named in errors
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: {e}") from None
    return pairs
