"""Indirect-object identification (Wang et al. 2022) with ABC / ABB corruptions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from interp import metrics as M
from interp.errors import InputError
from interp.tasks.text.words import _text_model, check_single_tokens, data, single_tokens
from interp.tokens import TokenBatch

CORRUPTIONS = ("ABC", "ABB")


@dataclass
class IOIBatch:
    """IOI prompts and their corruption, aligned pair by pair.

    clean / corrupt: token batches (pairs of one template have one length; templates may
    differ).  answer / wrong: ``[n]`` token ids of the indirect object (IO) and the subject
    (S).  positions: ``{"IO", "S1", "S2", "END"}`` -> ``[n]`` absolute positions in the clean
    prompts.  texts / corrupt_texts: the prompts as text.  corruption: "ABC" (the second
    subject S2 replaced by a third name: the repeated-name signal is gone) or "ABB" (S2
    replaced by the IO name: the other name is now the answer).
    """

    clean: TokenBatch
    corrupt: TokenBatch
    answer: torch.Tensor
    wrong: torch.Tensor
    positions: dict
    texts: list[str]
    corrupt_texts: list[str]
    corruption: str
    templates: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clean)

    def metric(self) -> M.Metric:
        """logit(IO) - logit(S) at each prompt's last token."""
        return M.logit_diff(self.answer, self.wrong, pos=-1)


def ioi(
    model,
    n: int,
    *,
    corruption: str = "ABC",
    templates: list[int] | None = None,
    names: list[str] | None = None,
    seed: int = 0,
) -> IOIBatch:
    """``n`` IOI prompts (see :class:`IOIBatch`) from the shipped templates (``templates``: which
    of ``data("ioi")["templates"]``; default all) with single-token names, places and objects."""
    _text_model(model, "IOI")
    if corruption not in CORRUPTIONS:
        raise InputError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}")
    d = data("ioi")
    pool = names if names is not None else single_tokens(model, d["names"])
    ids = dict(zip(pool, check_single_tokens(model, pool, "IOI names")))
    if len(pool) < 3:
        raise InputError(f"IOI needs at least 3 single-token names, got {len(pool)}")
    places, objects = single_tokens(model, d["places"]), single_tokens(model, d["objects"])
    if not places or not objects:
        raise InputError("no single-token places / objects for this tokenizer")
    all_t = d["templates"]
    chosen = list(range(len(all_t))) if templates is None else list(templates)
    bad = [t for t in chosen if not 0 <= t < len(all_t)]
    if bad or not chosen:
        raise InputError(f"templates must be indices into the {len(all_t)} shipped templates, got {templates}")
    rng = random.Random(seed)
    clean_rows, corrupt_rows, texts, corrupt_texts, used = [], [], [], [], []
    answer, wrong = [], []
    pos: dict[str, list[int]] = {"IO": [], "S1": [], "S2": [], "END": []}
    for i in range(n):
        t = chosen[i % len(chosen)]
        io, s, c = rng.sample(pool, 3)
        fill = dict(PLACE=" " + rng.choice(places), OBJECT=" " + rng.choice(objects))
        text = _fill(all_t[t], IO=io, S=s, **fill)
        second = io if corruption == "ABB" else c
        bad_text = _fill(all_t[t], IO=io, S=s, S2=second, **fill)
        row, bad_row = model.encode(text), model.encode(bad_text)
        if len(row) != len(bad_row):
            raise InputError(f"IOI prompt and its corruption tokenize to different lengths: {text!r} vs {bad_text!r}")
        where = [k for k, tok in enumerate(row) if tok == ids[s]]
        io_at = [k for k, tok in enumerate(row) if tok == ids[io]]
        if len(where) != 2 or len(io_at) != 1:
            raise InputError(f"could not find the names in the tokens of {text!r}")
        clean_rows.append(row)
        corrupt_rows.append(bad_row)
        texts.append(text)
        corrupt_texts.append(bad_text)
        used.append(t)
        answer.append(ids[io])
        wrong.append(ids[s])
        pos["IO"].append(io_at[0])
        pos["S1"].append(where[0])
        pos["S2"].append(where[1])
        pos["END"].append(len(row) - 1)
    clean = model.tokenize(clean_rows)
    corrupt = model.tokenize(corrupt_rows)
    return IOIBatch(
        clean,
        corrupt,
        torch.tensor(answer),
        torch.tensor(wrong),
        {k: torch.tensor(v) for k, v in pos.items()},
        texts,
        corrupt_texts,
        corruption,
        used,
    )


def _fill(template: str, *, IO: str, S: str, PLACE: str, OBJECT: str, S2: str | None = None) -> str:
    """The template with its names; ``S2`` (if given) replaces the second occurrence of S."""
    first, _, rest = template.partition("{S}")
    head = first + "{S}" + rest.replace("{S}", "{S2}", 1) if S2 is not None else template
    return head.format(IO=IO, S=S, S2=S2 or S, PLACE=PLACE.strip(), OBJECT=OBJECT.strip())
