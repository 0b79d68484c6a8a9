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


# --- subject / relation / object facts for causal tracing (Meng et al. 2022) ----------------


@dataclass
class FactSet:
    """Facts to trace: per fact its ``tokens`` ``[T_i]`` (BOS included where the model uses one),
    ``subject`` span ``(start, end)`` (token positions, end exclusive), ``answer`` (the object's
    token id) and its text (``prompts``, ``subjects``, ``objects``).  ``counts``: how many facts
    were offered, how many have a single-token object, and how many the model answers correctly
    (the filter causal tracing applies: only facts a model knows can be located in it)."""

    tokens: list[torch.Tensor]
    subject: list[tuple[int, int]]
    answer: list[int]
    prompts: list[str]
    subjects: list[str]
    objects: list[str]
    counts: dict

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, index) -> FactSet:
        """The facts at ``index`` (a list of positions), counts kept."""
        idx = list(index)
        return FactSet(
            [self.tokens[i] for i in idx],
            [self.subject[i] for i in idx],
            [self.answer[i] for i in idx],
            [self.prompts[i] for i in idx],
            [self.subjects[i] for i in idx],
            [self.objects[i] for i in idx],
            dict(self.counts),
        )

    @classmethod
    def from_task(cls, batch, model=None) -> FactSet:
        """The facts of a synthetic task batch with ``info["subject_span"]`` and ``info["answer"]``
        (:func:`interp.tasks.synthetic.sro_facts`); the last position is the one answered."""
        info = getattr(batch, "info", {})
        if "subject_span" not in info or "answer" not in info:
            raise InputError("a task batch to trace needs info['subject_span'] and info['answer'] (sro_facts)")
        rows = [batch.tokens[i] for i in range(len(batch.tokens))]
        names = (lambda t: " ".join(model.to_str_tokens(t))) if model is not None else (lambda t: str(t.tolist()))
        spans = [(int(a), int(b)) for a, b in info["subject_span"].tolist()]
        return cls(
            rows,
            spans,
            [int(a) for a in info["answer"].tolist()],
            [names(r) for r in rows],
            [names(r[a:b]) for r, (a, b) in zip(rows, spans)],
            [names(torch.tensor([a])) for a in info["answer"].tolist()],
            {"offered": len(rows), "single_token_object": len(rows), "known": len(rows)},
        )


def _subject_span(model, template: str, subject: str) -> tuple[list[int], tuple[int, int]]:
    """The prompt's tokens and the subject's token span; raises if the tokenizer merges the
    subject with the text around it (then no token span is the subject)."""
    if "{}" not in template:  # a whole prompt: the subject's first occurrence in it
        at = template.find(subject)
        if at < 0:
            raise InputError(f"the subject {subject!r} does not occur in the prompt {template!r}")
        template = template[:at] + "{}" + template[at + len(subject) :]
    if template.count("{}") != 1:
        raise InputError(f"a fact's template needs exactly one {{}} for the subject, got {template!r}")
    prefix, suffix = template.split("{}")
    prompt = prefix + subject + suffix
    full = model.encode(prompt)
    head = prefix.rstrip(" ")
    bos = model.encode("x")[:-1] if model.prepend_bos else []  # the BOS the model prepends (if any)
    before = model.encode(head) if head else list(bos)
    upto = model.encode(prefix + subject)
    if full[: len(upto)] != upto or upto[: len(before)] != before or len(upto) <= len(before):
        raise InputError(f"the subject {subject!r} is not a token span of {prompt!r} for this tokenizer")
    return full, (len(before), len(upto))


def fact_set(model, facts=None, *, known_only: bool = True) -> FactSet:
    """Facts for causal tracing: ``facts`` as ``(template, subject, object)`` triples (the template
    holds ``{}`` for the subject: ``("The {} is located in the city of", "Eiffel Tower", "Paris")``,
    or is the whole prompt, the subject's first occurrence in it marking the subject) or dicts
    with those keys; default the shipped list (``interp/tasks/data/facts_sro.json``, 212
    facts written for this project).  The object is read with a leading space and must be one
    token: a given fact whose object is several tokens is refused; shipped ones are skipped and
    counted.  known_only: keep the facts the model answers correctly (its arg-max at the last
    position is the object), as Meng et al. do.  ``counts`` says how many survive each step."""
    _text_model(model, "causal tracing of facts")
    shipped = facts is None
    triples = data("facts_sro")["facts"] if shipped else [_triple(f) for f in facts]
    if not triples:
        raise InputError("no facts given")
    kept: list[tuple[list[int], tuple[int, int], int, str, str, str]] = []
    for template, subject, obj in triples:
        ids = model.encode(" " + obj.strip(), prepend_bos=False)
        if "{}" not in template and subject in template:  # a whole prompt: mark the subject's first occurrence
            template = template.replace(subject, "{}", 1)
        prompt = template.replace("{}", subject, 1)
        if len(ids) != 1:
            if shipped:
                continue
            raise InputError(
                f"the object {obj!r} of {prompt!r} is {len(ids)} tokens "
                f"({model.to_str_tokens(torch.tensor(ids))}); causal tracing scores a single-token object"
            )
        tokens, span = _subject_span(model, template, subject)
        kept.append((tokens, span, ids[0], prompt, subject, obj))
    counts = {"offered": len(triples), "single_token_object": len(kept)}
    if known_only and kept:
        batch = TokenBatch.from_rows([r[0] for r in kept])
        top = []
        with torch.no_grad():
            for start in range(0, len(kept), 32):
                part = batch.select(range(start, min(start + 32, len(kept))))
                logits = model(part)
                top += logits[torch.arange(len(part)), part.last.to(logits.device)].argmax(-1).tolist()
        kept = [r for r, t in zip(kept, top) if t == r[2]]
    counts["known"] = len(kept)
    if not kept:
        raise InputError(
            f"none of the {len(triples)} facts is usable for this model (single-token object, known): {counts}"
        )
    return FactSet(
        [torch.tensor(r[0]) for r in kept],
        [r[1] for r in kept],
        [r[2] for r in kept],
        [r[3] for r in kept],
        [r[4] for r in kept],
        [r[5] for r in kept],
        counts,
    )


def _triple(f) -> tuple[str, str, str]:
    if isinstance(f, dict):
        missing = [k for k in ("template", "subject", "object") if k not in f]
        if missing:
            raise InputError(f"a fact needs template, subject and object; missing {missing} in {f}")
        f = (f["template"], f["subject"], f["object"])
    if not isinstance(f, (tuple, list)) or len(f) != 3 or not all(isinstance(x, str) and x.strip() for x in f):
        raise InputError(f"a fact is (template with {{}}, subject, object), three non-empty strings; got {f!r}")
    return f[0], f[1], f[2]
