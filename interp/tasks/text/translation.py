"""Word translation prompts in the format of Wendler et al. 2024 ("Do Llamas Work in
English?"): a few demonstrations ``Français: "fleur" - Deutsch: "Blume"`` then a source word,
the model to write the target word; with the token sets that stand for the target word and
for its English translation (the latent language the logit lens looks for)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from interp.errors import InputError
from interp.tasks.text.words import _text_model, data
from interp.tokens import TokenBatch


@dataclass
class TranslationTask:
    """Prompts and, per prompt, the words and the first tokens that start them (``target_ids``,
    ``english_ids``, ``source_ids``: the first token of the word, capitalised or not, with or
    without a leading space).  ``answer``: the first token of the target word as the prompt
    continues it (right after the quote)."""

    prompts: TokenBatch
    texts: list[str]
    words: list[dict]
    source: str
    target: str
    target_ids: list[list[int]]
    english_ids: list[list[int]]
    source_ids: list[list[int]]
    answer: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def first_tokens(model, word: str) -> list[int]:
    """The first token of ``word`` in its usual spellings (as is / capitalised, with / without a leading space)."""
    out = set()
    for w in {word, word.capitalize(), word.lower()}:
        for s in (w, " " + w):
            ids = model.encode(s, prepend_bos=False)
            if ids:
                out.add(ids[0])
    return sorted(out)


def translation(model, source: str = "fr", target: str = "de", *, shots: int = 4, seed: int = 0) -> TranslationTask:
    """One prompt per shipped word whose target and English first tokens differ from each other and
    from the source's (so the lens can tell the languages apart), each with ``shots`` other words
    as demonstrations."""
    _text_model(model, "word translation")
    d = data("translation")
    langs = d["languages"]
    for lang in (source, target):
        if lang not in langs:
            raise InputError(f"language {lang!r} is not shipped; choose from {sorted(langs)}")
    if source == target or "en" in (source, target):
        raise InputError("the latent-English test needs two languages other than English, e.g. fr -> de")
    if not isinstance(shots, int) or shots < 1:
        raise InputError(f"shots must be a positive int, got {shots!r}")
    rng = random.Random(seed)
    usable = []
    for w in d["words"]:
        t, e, s = first_tokens(model, w[target]), first_tokens(model, w["en"]), first_tokens(model, w[source])
        if set(t) & set(e) or set(t) & set(s):
            continue
        usable.append((w, t, e, s))
    if len(usable) < shots + 2:
        raise InputError(f"only {len(usable)} words have distinct first tokens in the three languages")
    texts, words, t_ids, e_ids, s_ids, answer = [], [], [], [], [], []
    line = lambda w: f'{langs[source]}: "{w[source]}" - {langs[target]}: "{w[target]}"\n'
    for i, (w, t, e, s) in enumerate(usable):
        demos = rng.sample([u[0] for j, u in enumerate(usable) if j != i], shots)
        prompt = "".join(line(x) for x in demos) + f'{langs[source]}: "{w[source]}" - {langs[target]}: "'
        full = model.encode(prompt + w[target], prepend_bos=True)
        head = model.encode(prompt, prepend_bos=True)
        if full[: len(head)] != head or len(full) == len(head):
            continue  # the word merges with the quote: no clean first token to score
        texts.append(prompt)
        words.append(w)
        t_ids.append(t)
        e_ids.append(e)
        s_ids.append(s)
        answer.append(full[len(head)])
    return TranslationTask(model.tokenize(texts), texts, words, source, target, t_ids, e_ids, s_ids, answer)
