"""Tokens: tokenizers for the zoo's named vocabularies and padded batches of prompts.

Every model has a Hugging Face tokenizer.  The zoo's small models have named tokens
(``BOS t5 t9``, ``k3 v70``); their tokenizer is a ``tokenizers`` WordLevel model over those
names (:func:`word_tokenizer`), so typed prompts are validated word by word.

Prompts of one batch rarely tokenize to the same length.  :class:`TokenBatch` holds them
right-padded, with each row's length.  Every model family here is causal (a position sees
only earlier ones), so a real token never attends to the padding after it: the logits and
activations at a row's real positions equal those of the row run alone.  Analyses read
each row at its own positions (``batch.last``: the last real token of each row).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.errors import InputError


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded prompts: ``tokens`` ``[batch, pos]`` int64 and ``lengths`` ``[batch]``
    (real tokens per row; positions ``>= lengths[b]`` of row b hold ``pad_id``)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    pad_id: int = 0

    def __post_init__(self):
        if self.tokens.ndim != 2 or self.lengths.shape != (self.tokens.shape[0],):
            raise InputError(
                f"TokenBatch needs tokens [batch, pos] and lengths [batch]; got "
                f"{tuple(self.tokens.shape)} and {tuple(self.lengths.shape)}"
            )
        if int(self.lengths.min()) < 1 or int(self.lengths.max()) > self.tokens.shape[1]:
            raise InputError("every row needs between 1 and pos real tokens")

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int = 0) -> TokenBatch:
        """Right-pads rows of token ids (each non-empty) into one batch."""
        flat = [torch.as_tensor(r, dtype=torch.long).reshape(-1) for r in rows]
        if not flat or any(len(r) == 0 for r in flat):
            raise InputError("a batch needs at least one row and every row at least one token")
        lengths = torch.tensor([len(r) for r in flat])
        tokens = torch.full((len(flat), int(lengths.max())), int(pad_id), dtype=torch.long)
        for i, r in enumerate(flat):
            tokens[i, : len(r)] = r
        return cls(tokens, lengths, int(pad_id))

    @classmethod
    def full(cls, tokens: torch.Tensor) -> TokenBatch:
        """A batch of equally long rows (no padding)."""
        tokens = tokens if tokens.ndim == 2 else tokens[None]
        return cls(tokens, torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long))

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def padded(self) -> bool:
        return bool((self.lengths < self.tokens.shape[1]).any())

    @property
    def last(self) -> torch.Tensor:
        """``[batch]`` position of each row's last real token."""
        return self.lengths - 1

    @property
    def mask(self) -> torch.Tensor:
        """``[batch, pos]`` bool, True at real tokens."""
        return torch.arange(self.tokens.shape[1])[None] < self.lengths[:, None].cpu()

    def rows(self) -> list[torch.Tensor]:
        """Each row without its padding."""
        return [self.tokens[i, : int(n)] for i, n in enumerate(self.lengths)]

    def select(self, index: Sequence[int] | torch.Tensor) -> TokenBatch:
        """The rows ``index``, re-padded to their own longest length."""
        index = torch.as_tensor(index, dtype=torch.long)
        lengths = self.lengths[index.cpu()]
        return TokenBatch(self.tokens[index.to(self.tokens.device), : int(lengths.max())], lengths, self.pad_id)

    def to(self, device) -> TokenBatch:
        return TokenBatch(self.tokens.to(device), self.lengths, self.pad_id)

    def by_length(self) -> list[torch.Tensor]:
        """Row indices grouped by length (each group runs unpadded), longest first."""
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(self.lengths.tolist()):
            groups.setdefault(n, []).append(i)
        return [torch.tensor(groups[n]) for n in sorted(groups, reverse=True)]


def word_tokenizer(names: Sequence[str], bos: int | None = 0):
    """A Hugging Face fast tokenizer whose tokens are ``names`` (id i = ``names[i]``), split
    on whitespace; ``bos`` is the id of the beginning-of-sequence token (None: none)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(names)) != len(names):
        raise InputError("token names must be unique")
    tok = Tokenizer(models.WordLevel(vocab={n: i for i, n in enumerate(names)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None if bos is None else names[bos])
    fast.word_level = True  # typed words are checked against the names (see encode)
    return fast


def char_tokenizer(names: Sequence[str], bos: int | None = 0, unk: str | None = None):
    """A Hugging Face fast tokenizer of single characters: every character of the text is one
    token (``names[i]`` is token i; multi-character names such as ``<bos>`` are special tokens);
    characters outside ``names`` become ``unk`` (default the name ``<unk>`` when present).
    Decoding joins characters without separators, so ``decode(encode(text)) == text``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(names)) != len(names):
        raise InputError("token names must be unique")
    unk = unk if unk is not None else ("<unk>" if "<unk>" in names else None)
    tok = Tokenizer(models.WordLevel(vocab={n: i for i, n in enumerate(names)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")  # every character alone
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None if bos is None else names[bos], unk_token=unk)


def default_names(d_vocab: int) -> list[str]:
    """``BOS, t1, t2, ...``: names for a vocabulary of anonymous random tokens."""
    return ["BOS"] + [f"t{i}" for i in range(1, d_vocab)]


def encode(tokenizer, text: str, prepend_bos: bool) -> list[int]:
    """Token ids of ``text`` with the beginning-of-sequence token prepended or not."""
    if not isinstance(text, str):
        raise InputError(f"a prompt must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("empty prompt: type some text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: bytes a shell or file could not decode
        raise InputError(
            f"the prompt is not valid UTF-8 text (undecodable bytes at character {e.start}); pass text decoded as UTF-8"
        ) from None
    if getattr(tokenizer, "word_level", False):
        ids = _words(tokenizer.get_vocab(), text)
    else:
        try:
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        except (TypeError, ValueError) as e:  # e.g. text with lone surrogates (not valid UTF-8)
            raise InputError(f"the tokenizer cannot encode this text ({e})") from None
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if not ids:
        raise InputError(f"{text!r} tokenizes to nothing")
    return ids


def _words(vocab: dict[str, int], text: str) -> list[int]:
    """Named tokens (or integer ids) separated by whitespace, each checked."""
    ids = []
    for piece in text.split():
        if piece in vocab:
            ids.append(vocab[piece])
        elif piece.lstrip("-").isdigit():
            value = int(piece)
            if not 0 <= value < len(vocab):
                raise InputError(f"token id {value} is outside the vocabulary [0, {len(vocab)})")
            ids.append(value)
        else:
            names = sorted(vocab, key=vocab.__getitem__)
            near = difflib.get_close_matches(piece, names, n=5)
            raise InputError(
                f"unknown token {piece!r}; close names: {near or names[:10]} "
                f"(or use an integer id in [0, {len(vocab)}))"
            )
    return ids
