"""Real text with long-range structure for character-level models: Python's own standard-library
sources (the files of the running interpreter, under the Python Software Foundation License), and
the character-level features Karpathy et al. 2015 found single LSTM cells tracking: inside a
string (quotes), bracket depth, indentation, and position in the line.

Nothing is downloaded: the files ship with every Python.  Their bytes differ a little between
Python releases, so a model's card records the sha256 of each file it was trained on
(:func:`source_digest`).  The features come from Python's own ``tokenize`` module on the whole
file (a string or bracket may open far before a window starts), then are sliced.
"""

from __future__ import annotations

import hashlib
import io
import sysconfig
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from interp.errors import InputError, SetupError

#: training files (pure-Python modules of the standard library, about 600 kB together)
TRAIN_FILES = (
    "argparse.py",
    "difflib.py",
    "configparser.py",
    "dataclasses.py",
    "csv.py",
    "pprint.py",
    "string.py",
    "calendar.py",
    "fractions.py",
    "ftplib.py",
    "gettext.py",
    "imaplib.py",
    "locale.py",
    "optparse.py",
    "smtplib.py",
    "tarfile.py",
)
#: held-out files: the loss and the cell analyses read these, never trained on
HELDOUT_FILES = ("textwrap.py", "shlex.py")
LICENCE = "Python Software Foundation License Version 2 (the CPython standard library)"

BOS_CHAR, UNK_CHAR = "<bos>", "<unk>"
#: the vocabulary: BOS, unknown, newline and printable ASCII (tabs become four spaces)
CHARS = [BOS_CHAR, UNK_CHAR, "\n"] + [chr(i) for i in range(32, 127)]
FEATURES = ("in_string", "bracket_depth", "indent", "line_position")


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


@cache
def read_source(name: str) -> str:
    """One standard-library file's text, tabs expanded, other characters kept (unknown ones are
    mapped to ``<unk>`` when encoded)."""
    path = stdlib_dir() / name
    if not path.is_file():
        raise SetupError(f"the standard-library file {path} is missing: this Python ships without its sources")
    return path.read_text(encoding="utf-8").expandtabs(4)


def source_digest(names: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each file (what a card records: the exact text a model was trained on)."""
    return {n: hashlib.sha256(read_source(n).encode("utf-8")).hexdigest() for n in names}


def encode(text: str) -> torch.Tensor:
    """Character ids ``[len(text)]`` in :data:`CHARS` (unknown characters -> ``<unk>``)."""
    index = {c: i for i, c in enumerate(CHARS)}
    unk = index[UNK_CHAR]
    return torch.tensor([index.get(c, unk) for c in text], dtype=torch.long)


@dataclass
class CodeText:
    """A corpus: the concatenated ``text`` of ``files``, its character ids and per-character
    features (:func:`features`)."""

    files: tuple[str, ...]
    text: str
    ids: torch.Tensor
    features: dict[str, np.ndarray]

    def windows(self, n: int, length: int, *, seed: int = 0, bos: bool = True) -> tuple[torch.Tensor, np.ndarray]:
        """``n`` random windows ``[n, length]`` (BOS first when ``bos``: then the text fills the
        remaining ``length - 1``) and their start offsets ``[n]`` in the text."""
        span = length - 1 if bos else length
        if span < 1 or len(self.ids) <= span:
            raise InputError(f"windows of {length} characters do not fit a text of {len(self.ids)}")
        g = torch.Generator().manual_seed(int(seed))
        starts = torch.randint(0, len(self.ids) - span, (n,), generator=g)
        rows = torch.stack([self.ids[s : s + span] for s in starts.tolist()])
        if bos:
            rows = torch.cat([torch.zeros(n, 1, dtype=torch.long), rows], 1)
        return rows, starts.numpy()

    def window_features(self, starts: np.ndarray, length: int, *, bos: bool = True) -> dict[str, np.ndarray]:
        """The features of windows from :meth:`windows`: ``[n, length]`` arrays (NaN at the BOS)."""
        span = length - 1 if bos else length
        out = {}
        for name, values in self.features.items():
            rows = np.stack([values[s : s + span] for s in starts]).astype(float)
            out[name] = np.concatenate([np.full((len(starts), 1), np.nan), rows], 1) if bos else rows
        return out


@cache
def corpus(files: tuple[str, ...]) -> CodeText:
    """The files concatenated (each ends with a newline), encoded, with features."""
    texts = [read_source(f) for f in files]
    feats = [features(t) for t in texts]
    text = "".join(texts)
    joined = {k: np.concatenate([f[k] for f in feats]) for k in FEATURES}
    return CodeText(tuple(files), text, encode(text), joined)


def features(source: str) -> dict[str, np.ndarray]:
    """Per character of ``source`` (Python code): ``in_string`` (1 inside a string literal, quotes
    included, else 0), ``bracket_depth`` (open ``( [ {`` outside strings and comments),
    ``indent`` (leading spaces of the character's line), ``line_position`` (column: characters
    since the last newline).  Strings and brackets come from ``tokenize`` on the whole source."""
    n = len(source)
    lines = source.splitlines(keepends=True)
    offsets = np.cumsum([0] + [len(l) for l in lines])
    in_string = np.zeros(n)
    depth_change = np.zeros(n + 1)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            (r0, c0), (r1, c1) = tok.start, tok.end
            a = int(offsets[min(r0 - 1, len(lines))] + c0)
            b = int(offsets[min(r1 - 1, len(lines))] + c1)
            if tok.type == tokenize.STRING or tok.type in _FSTRING:
                in_string[a:b] = 1
            elif tok.type == tokenize.OP and tok.string in "([{":
                depth_change[b] += 1  # the depth counts from the character after the bracket
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth_change[a] -= 1
    except (tokenize.TokenError, IndentationError, SyntaxError) as e:
        raise InputError(f"the source is not valid Python, so its features are undefined: {e}") from None
    depth = np.cumsum(depth_change)[:n]
    chars = np.frombuffer(source.encode("utf-32-le"), dtype=np.uint32)
    newline = chars == ord("\n")
    line_start = np.concatenate([[0], np.flatnonzero(newline) + 1])
    line_of = np.searchsorted(line_start, np.arange(n), side="right") - 1
    position = np.arange(n) - line_start[line_of]
    indents = np.array([len(l) - len(l.lstrip(" ")) for l in source.split("\n")])
    return {
        "in_string": in_string,
        "bracket_depth": depth,
        "indent": indents[line_of].astype(float),
        "line_position": position.astype(float),
    }


# f-strings are tokenized in pieces from Python 3.12 on
_FSTRING = {getattr(tokenize, k) for k in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, k)}
