"""Todd et al.'s function tasks (antonym, country-capital, present-past, English-French,
capitalize) with train / held-out splits, and natural sentiment contrast pairs for steering."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from interp import metrics as M
from interp.errors import InputError
from interp.tasks.functions import FunctionPrompts
from interp.tasks.text.words import _text_model, check_single_tokens, data, single_tokens

if TYPE_CHECKING:
    from interp.tasks.contrast import ContrastPairs

FUNCTION_TASKS = ("antonym", "country_capital", "present_past", "english_french", "capitalize")


@dataclass
class FunctionTask:
    """One of Todd et al.'s functions: ``train`` pairs (demonstrations and the queries a
    function vector is built on) and ``test`` pairs (held-out queries), all single tokens."""

    name: str
    train: list[tuple[str, str]]
    test: list[tuple[str, str]]


def function_task(model, name: str, *, held_out: float = 0.3, seed: int = 0) -> FunctionTask:
    """The pairs of a shipped function task whose input and output are single tokens for
    ``model`` (with a leading space), shuffled and split into train / held-out."""
    _text_model(model, "function tasks")
    if name not in FUNCTION_TASKS:
        raise InputError(f"unknown function task {name!r}; choose one of {FUNCTION_TASKS}")
    if not 0 < held_out < 1:
        raise InputError(f"held_out must be a fraction in (0, 1), got {held_out}")
    seen, pairs = set(), []
    for x, y in data("function_tasks")[name]:
        if x not in seen and len(single_tokens(model, [x, y])) == 2:
            seen.add(x)
            pairs.append((x, y))
    if len(pairs) < 8:
        raise InputError(f"only {len(pairs)} pairs of {name!r} are single tokens for this tokenizer; need 8")
    random.Random(seed).shuffle(pairs)
    k = max(2, round(held_out * len(pairs)))
    return FunctionTask(name, pairs[k:], pairs[:k])


def function_prompts(model, task: FunctionTask, n: int, *, shots: int = 5, split: str = "test", seed: int = 0):
    """Prompts of ``task`` for function vectors (a :class:`interp.tasks.functions.FunctionPrompts`):
    ``clean`` = ``shots`` demonstrations from the train split then a query ``" x → y\\n" * shots +
    " xq →"``; ``corrupt`` = the same with the demonstrations' outputs shuffled among them;
    ``zero_shot`` = ``" xq →"`` alone; ``answers`` = the query's output token.  Queries come
    from ``split`` ("train" or "test", the held-out pairs); rows differ in length."""
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(shots, int) or shots < 1:
        raise InputError(f"shots must be a positive int, got {shots!r}")
    queries = task.train if split == "train" else task.test
    rng = random.Random(seed)
    clean, corrupt, zero, answers, asked = [], [], [], [], []
    for i in range(n):
        q = queries[i % len(queries)]
        demos = rng.sample([p for p in task.train if p != q], min(shots, len(task.train) - 1))
        outs = [y for _, y in demos]
        shuffled = outs[1:] + outs[:1] if len(outs) > 1 else outs
        line = lambda x, y: f"Q: {x}\nA: {y}\n\n"
        clean.append("".join(line(x, y) for x, y in demos) + f"Q: {q[0]}\nA:")
        corrupt.append("".join(line(x, y) for (x, _), y in zip(demos, shuffled)) + f"Q: {q[0]}\nA:")
        zero.append(f"Q: {q[0]}\nA:")
        answers.append(model.encode(" " + q[1], prepend_bos=False)[0])
        asked.append(q)
    return FunctionPrompts(
        model.tokenize(clean),
        model.tokenize(corrupt),
        model.tokenize(zero),
        answers=torch.tensor(answers),
        info={"task": task.name, "queries": asked, "shots": shots},
    )


@dataclass
class SteeringTask:
    """A concept to steer towards: contrast ``pairs`` (natural text, any lengths), ``eval``
    prompts whose next word shows the concept, the ``behaviour`` metric (log-odds of the
    concept's words against their opposites at each eval prompt's last token), ``neutral``
    text for the damage measure, the prompting baseline's ``instruction`` and the concept's
    token ids (``concept``)."""

    pairs: ContrastPairs
    eval: list[str]
    behaviour: M.Metric
    neutral: list[str]
    instruction: str
    concept: list[int]
    opposite: list[int]


def sentiment(model, split: str = "train") -> SteeringTask:
    """The shipped sentiment task (positive vs negative statements) for ``model``."""
    from interp.tasks.contrast import ContrastPairs

    _text_model(model, "sentiment steering")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    d = data("sentiment")
    pos = check_single_tokens(model, single_tokens(model, d["positive_words"]), "positive words")
    neg = check_single_tokens(model, single_tokens(model, d["negative_words"]), "negative words")
    if not pos or not neg:
        raise InputError("no single-token sentiment words for this tokenizer")
    pairs = ContrastPairs([p for p, _ in d[split]], [n for _, n in d[split]])
    return SteeringTask(
        pairs, list(d["eval_prompts"]), M.set_logodds(pos, neg, pos=-1), list(d["neutral"]), d["instruction"], pos, neg
    )
