"""Needles in haystacks: a passkey or a fact inside filler text, a question, the answer to be
copied from the needle (the retrieval-head experiments of Wu et al. 2024); the needle's span
is found and checked in token space."""

from __future__ import annotations

import random

import torch

from interp import metrics as M
from interp.errors import InputError
from interp.tasks.synthetic import TaskBatch
from interp.tasks.text.words import _text_model, data


def _find(row: list[int], sub: list[int], start: int = 0) -> int:
    """The first index >= ``start`` where ``sub`` occurs in ``row`` (-1 if none)."""
    n = len(sub)
    for i in range(start, len(row) - n + 1):
        if row[i : i + n] == sub:
            return i
    return -1


def _haystack(
    model,
    filler: list[str],
    needle: str,
    question: str,
    answer: str,
    context_length: int,
    depth: float,
    rng: random.Random,
) -> tuple[list[int], tuple[int, int], list[int]]:
    """Token ids of ``filler ... needle ... filler question`` of at most ``context_length`` tokens
    with the needle at ``depth`` (0 = first, 1 = last sentence), the answer's span inside the
    needle and the answer's ids."""
    answer_ids = model.encode(answer, prepend_bos=False)
    needle_ids = model.encode(" " + needle, prepend_bos=False)
    if _find(needle_ids, answer_ids) < 0:
        raise InputError(
            f"the answer {answer!r} tokenizes differently inside the needle than alone: alone "
            f"{model.to_str_tokens(torch.tensor(answer_ids))}, in the needle "
            f"{model.to_str_tokens(torch.tensor(needle_ids))}"
        )

    def build(k: int) -> str:
        sentences = [filler[(i + rng_offset) % len(filler)] for i in range(k)]
        at = round(depth * k)
        return " ".join(sentences[:at] + [needle] + sentences[at:] + [question])

    rng_offset = rng.randrange(len(filler))
    lo, hi = 0, 1
    while len(model.encode(build(hi))) <= context_length:  # grow until too long, then bisect
        lo, hi = hi, hi * 2
        if hi > 1 << 16:
            break
    if len(model.encode(build(0))) > context_length:
        raise InputError(
            f"context_length {context_length} is shorter than the needle and question alone "
            f"({len(model.encode(build(0)))} tokens)"
        )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(model.encode(build(mid))) <= context_length else (lo, mid)
    row = model.encode(build(lo))
    # the needle's answer: search after the start of the needle sentence, before the question
    q_ids = model.encode(" " + question, prepend_bos=False)
    end = len(row) - len(q_ids)
    first = _find(row[:end], answer_ids)
    if first < 0:
        raise InputError(
            f"the answer {answer!r} does not tokenize to the same ids inside the prompt as alone: "
            f"alone {model.to_str_tokens(torch.tensor(answer_ids))}; look at the needle in the prompt: "
            f"{model.decode(row[max(0, end - 60) : end])!r}"
        )
    return row, (first, first + len(answer_ids)), answer_ids


def _depths(depth, n: int, rng: random.Random) -> list[float]:
    if depth is None:
        return [rng.random() for _ in range(n)]
    values = [float(depth)] * n if isinstance(depth, (int, float)) else [float(d) for d in depth]
    if len(values) != n or any(not 0 <= d <= 1 for d in values):
        raise InputError(f"depth must be a number in [0, 1], or {n} of them; got {depth!r}")
    return values


def _task(model, rows, spans, answers, info) -> TaskBatch:
    batch = model.tokenize(rows)
    if int(batch.lengths.max()) > model.cfg.n_ctx:
        raise InputError(
            f"prompts of {int(batch.lengths.max())} tokens are longer than the model's context n_ctx={model.cfg.n_ctx}"
        )
    labels = torch.full_like(batch.tokens, M.IGNORE)
    for i, (s, _) in enumerate(spans):
        labels[i, batch.lengths[i] - 1] = rows[i][s]
    return TaskBatch(
        batch.tokens, labels, {"needle_span": torch.tensor(spans), "answer": answers, **info}, lengths=batch.lengths
    )


def passkey(
    model, n: int, *, context_length: int = 276, depth: float | list[float] | None = None, seed: int = 0
) -> TaskBatch:
    """Passkey retrieval: filler text, ``"The pass key is K. Remember it. K is the pass key."`` at
    ``depth`` (a fraction; default random per prompt), more filler, then ``"What is the pass
    key? The pass key is"``; the answer is ``" K"`` (a 5-digit key) copied from the needle.

    Returns a TaskBatch (right-padded tokens, ``lengths``) whose ``info`` holds
    ``needle_span`` ``[n, 2]`` (the answer's tokens in the first statement of the key),
    ``answer`` (token-id lists), ``key``, ``depth``; labels: the first answer token at each
    prompt's last position.  Prompts have at most ``context_length`` tokens."""
    _text_model(model, "passkey retrieval")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}")
    d = data("retrieval")
    rng = random.Random(seed)
    rows, spans, answers, keys = [], [], [], []
    depths = _depths(depth, n, rng)
    for i in range(n):
        key = str(rng.randrange(10000, 100000))
        row, span, ans = _haystack(
            model,
            d["passkey_filler"],
            d["passkey_needle"].format(key=key),
            d["passkey_question"],
            d["passkey_answer"].format(key=key),
            context_length,
            depths[i],
            rng,
        )
        rows.append(row)
        spans.append(span)
        answers.append(ans)
        keys.append(key)
    return _task(model, rows, spans, answers, {"key": keys, "depth": torch.tensor(depths)})


def needle_haystack(
    model, n: int, *, context_length: int = 512, depth: float | list[float] | None = None, seed: int = 0
) -> TaskBatch:
    """Needle in a haystack: a fact (one of the shipped needles, its blank filled at random) at
    ``depth`` inside varied filler sentences, then a question whose answer is to be copied
    from the needle.  Returns a TaskBatch like :func:`passkey` (``info``: ``needle_span``,
    ``answer``, ``needle``, ``depth``)."""
    _text_model(model, "needle in a haystack")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}")
    d = data("retrieval")
    rng = random.Random(seed)
    rows, spans, answers, needles = [], [], [], []
    depths = _depths(depth, n, rng)
    for i in range(n):
        spec = d["needles"][i % len(d["needles"])]
        fill = {
            "n": str(rng.randrange(1000, 10000)),
            "thing": rng.choice(d["things"]),
            "activity": rng.choice(d["activities"]),
        }
        needle, answer = spec["needle"].format(**fill), spec["answer"].format(**fill)
        row, span, ans = _haystack(model, d["filler"], needle, spec["question"], answer, context_length, depths[i], rng)
        rows.append(row)
        spans.append(span)
        answers.append(ans)
        needles.append(needle)
    return _task(model, rows, spans, answers, {"needle": needles, "depth": torch.tensor(depths)})
