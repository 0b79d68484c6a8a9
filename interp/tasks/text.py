"""Real-text tasks for pretrained language models, built for any tokenizer from small data
files shipped with the package (``interp/tasks/data``; nothing is downloaded).

- :func:`ioi`: indirect-object identification (Wang et al. 2022) with ABC / ABB corruptions.
- :func:`passkey` and :func:`needle_haystack`: a needle inside filler text, a question, the
  answer to be copied from the needle (the retrieval-head experiments of Wu et al. 2024);
  the needle's span is found and checked in token space.
- :func:`function_task` and :func:`sentiment_pairs`: Todd et al.'s function tasks (antonym,
  country-capital, present-past, English-French, capitalize) with train / held-out splits,
  and natural sentiment contrast pairs for steering.

Every builder checks that the words it needs are single tokens where the task needs them to
be (and says how the others tokenize), and returns prompts as token batches whose rows may
differ in length.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from interp import metrics as M
from interp.tasks.synthetic import TaskBatch
from interp.tokens import TokenBatch

DATA = Path(__file__).parent / "data"


@cache
def data(name: str) -> dict:
    """A shipped data file (``interp/tasks/data/<name>.json``)."""
    path = DATA / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no task data {name!r}; shipped: {sorted(p.stem for p in DATA.glob('*.json'))}")
    return json.loads(path.read_text(encoding="utf-8"))


def _text_model(model, task: str) -> None:
    if model.tokenizer is None or model.word_level:
        raise ValueError(
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
        raise ValueError(
            f"{what} must be single tokens for {model.cfg.name or 'this tokenizer'}; these are not: "
            + "; ".join(bad[:10])
        )
    return ids


# --- IOI ------------------------------------------------------------------------------------

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
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    d = data("ioi")
    pool = names if names is not None else single_tokens(model, d["names"])
    ids = dict(zip(pool, check_single_tokens(model, pool, "IOI names")))
    if len(pool) < 3:
        raise ValueError(f"IOI needs at least 3 single-token names, got {len(pool)}")
    places, objects = single_tokens(model, d["places"]), single_tokens(model, d["objects"])
    if not places or not objects:
        raise ValueError("no single-token places / objects for this tokenizer")
    all_t = d["templates"]
    chosen = list(range(len(all_t))) if templates is None else list(templates)
    bad = [t for t in chosen if not 0 <= t < len(all_t)]
    if bad or not chosen:
        raise ValueError(f"templates must be indices into the {len(all_t)} shipped templates, got {templates}")
    rng = random.Random(seed)
    clean_rows, corrupt_rows, texts, corrupt_texts, used = [], [], [], [], []
    answer, wrong, pos = [], [], {"IO": [], "S1": [], "S2": [], "END": []}
    for i in range(n):
        t = chosen[i % len(chosen)]
        io, s, c = rng.sample(pool, 3)
        fill = dict(PLACE=" " + rng.choice(places), OBJECT=" " + rng.choice(objects))
        text = _fill(all_t[t], IO=io, S=s, **fill)
        second = io if corruption == "ABB" else c
        bad_text = _fill(all_t[t], IO=io, S=s, S2=second, **fill)
        row, bad_row = model.encode(text), model.encode(bad_text)
        if len(row) != len(bad_row):
            raise ValueError(f"IOI prompt and its corruption tokenize to different lengths: {text!r} vs {bad_text!r}")
        where = [k for k, tok in enumerate(row) if tok == ids[s]]
        io_at = [k for k, tok in enumerate(row) if tok == ids[io]]
        if len(where) != 2 or len(io_at) != 1:
            raise ValueError(f"could not find the names in the tokens of {text!r}")
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


# --- needles in haystacks --------------------------------------------------------------------


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
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(f"depth must be a number in [0, 1], or {n} of them; got {depth!r}")
    return values


def _task(model, rows, spans, answers, info) -> TaskBatch:
    batch = model.tokenize(rows)
    if int(batch.lengths.max()) > model.cfg.n_ctx:
        raise ValueError(
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
        raise ValueError(f"n must be a positive int, got {n!r}")
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
        raise ValueError(f"n must be a positive int, got {n!r}")
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


# --- ordinary text --------------------------------------------------------------------------


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
        raise ValueError(f"{model.cfg.name or 'this model'} has neither a BOS token nor a text tokenizer to start from")
    start = [bos] if bos is not None else model.encode("\n", prepend_bos=False)
    if length > model.cfg.n_ctx:
        raise ValueError(f"length {length} exceeds n_ctx={model.cfg.n_ctx}")
    prompts = torch.tensor([start] * n)
    new = sample(model, prompts, length - len(start), temperature=temperature, top_k=top_k, seed=seed)
    return torch.cat([prompts, new], dim=1)


# --- function tasks (Todd et al.) and sentiment pairs ----------------------------------------

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
        raise ValueError(f"unknown function task {name!r}; choose one of {FUNCTION_TASKS}")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    seen, pairs = set(), []
    for x, y in data("function_tasks")[name]:
        if x not in seen and len(single_tokens(model, [x, y])) == 2:
            seen.add(x)
            pairs.append((x, y))
    if len(pairs) < 8:
        raise ValueError(f"only {len(pairs)} pairs of {name!r} are single tokens for this tokenizer; need 8")
    random.Random(seed).shuffle(pairs)
    k = max(2, round(held_out * len(pairs)))
    return FunctionTask(name, pairs[k:], pairs[:k])


def function_prompts(model, task: FunctionTask, n: int, *, shots: int = 5, split: str = "test", seed: int = 0):
    """Prompts of ``task`` for function vectors (a :class:`interp.function_vectors.FunctionPrompts`):
    ``clean`` = ``shots`` demonstrations from the train split then a query ``" x → y\\n" * shots +
    " xq →"``; ``corrupt`` = the same with the demonstrations' outputs shuffled among them;
    ``zero_shot`` = ``" xq →"`` alone; ``answers`` = the query's output token.  Queries come
    from ``split`` ("train" or "test", the held-out pairs); rows differ in length."""
    from interp.function_vectors import FunctionPrompts

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive int, got {shots!r}")
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

    pairs: object
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
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = data("sentiment")
    pos = check_single_tokens(model, single_tokens(model, d["positive_words"]), "positive words")
    neg = check_single_tokens(model, single_tokens(model, d["negative_words"]), "negative words")
    if not pos or not neg:
        raise ValueError("no single-token sentiment words for this tokenizer")
    pairs = ContrastPairs([p for p, _ in d[split]], [n for _, n in d[split]])
    return SteeringTask(
        pairs, list(d["eval_prompts"]), M.set_logodds(pos, neg, pos=-1), list(d["neutral"]), d["instruction"], pos, neg
    )
