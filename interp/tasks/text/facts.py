"""Factual-recall prompts ("The capital of France is" -> " Paris") from the shipped
country-capital pairs, with symmetric token replacement: the same prompt about another
country, whose capital is the contrast answer (Zhang & Nanda 2023's STR; McGrath et al.
2023's factual prompts)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from interp.errors import InputError
from interp.tasks.text.words import _text_model, data
from interp.tokens import TokenBatch

TEMPLATE = "The capital of {x} is"


@dataclass
class FactBatch:
    """``clean`` prompts and their ``corrupt`` twins (another subject, same length); ``answer`` /
    ``wrong`` ``[n]``: the clean and the corrupt subject's answer tokens; ``subject`` ``[n]``: the
    position of the (single-token) subject; ``texts`` / ``corrupt_texts``."""

    clean: TokenBatch
    corrupt: TokenBatch
    answer: torch.Tensor
    wrong: torch.Tensor
    subject: torch.Tensor
    texts: list[str]
    corrupt_texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def facts(model, n: int, *, template: str = TEMPLATE, seed: int = 0, known_only: bool = True) -> FactBatch:
    """``n`` factual prompts (subjects and answers are single tokens with a leading space, so
    every prompt has the same length).  known_only: keep the facts the model gets right (its
    arg-max is the answer), as causal tracing does; raises when fewer than ``n`` remain."""
    _text_model(model, "factual recall")
    if "{x}" not in template:
        raise InputError("the template needs a {x} slot for the subject")
    pairs = []
    for x, y in data("function_tasks")["country_capital"]:
        xs, ys = model.encode(" " + x, prepend_bos=False), model.encode(" " + y, prepend_bos=False)
        if len(xs) == 1 and len(ys) == 1:
            pairs.append((x, y, xs[0], ys[0]))
    rows = [model.encode(template.format(x=x)) for x, *_ in pairs]
    if not rows:
        raise InputError("no country-capital pair is two single tokens for this tokenizer")
    length = len(rows[0])
    keep = [i for i, r in enumerate(rows) if len(r) == length]
    pairs, rows = [pairs[i] for i in keep], [rows[i] for i in keep]
    if known_only:
        with torch.no_grad():
            logits = model(torch.tensor(rows))
        top = logits[:, -1].argmax(-1).cpu()
        known = [i for i, p in enumerate(pairs) if int(top[i]) == p[3]]
        pairs, rows = [pairs[i] for i in known], [rows[i] for i in known]
    if len(pairs) < max(2, n):
        raise InputError(f"only {len(pairs)} facts are usable for this model (single tokens, known); asked for {n}")
    rng = random.Random(seed)
    order = rng.sample(range(len(pairs)), n)
    subject = next(i for i, t in enumerate(rows[0]) if t == pairs[0][2])
    clean, corrupt, answer, wrong, texts, corrupt_texts = [], [], [], [], [], []
    for i in order:
        j = rng.choice([k for k in range(len(pairs)) if k != i])
        clean.append(rows[i])
        corrupt.append(rows[j])
        answer.append(pairs[i][3])
        wrong.append(pairs[j][3])
        texts.append(template.format(x=pairs[i][0]))
        corrupt_texts.append(template.format(x=pairs[j][0]))
    return FactBatch(
        model.tokenize(clean),
        model.tokenize(corrupt),
        torch.tensor(answer),
        torch.tensor(wrong),
        torch.full((n,), subject),
        texts,
        corrupt_texts,
    )
