"""Real text with long-range structure for character-level models: Python's own standard-library
sources (CPython 3.11.7's, under the Python Software Foundation License Version 2), and the
character-level features Karpathy et al. 2015 found single LSTM cells tracking: inside a string
(quotes), bracket depth, indentation, and position in the line.

Nothing is downloaded.  The training files are read from the running interpreter's standard
library; the two held-out files (what the analyses and ``karpathy2015`` read) ship in
``interp/tasks/data/python/`` (copies, with the PSF licence notice beside them), so the
evaluation text is the same on every Python.  The file lists are pinned and the text verified
against :data:`TEXT_SHA256` (a Python whose library sources differ is refused with a
SetupError: the shipped model was trained on exactly this text).  The features come from
Python's own ``tokenize`` module on each whole file (a string or bracket may open far before a
window starts), then are sliced.
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

#: training files (pure-Python modules of the standard library, about 3 MB together: with 12M
#: characters of training a smaller corpus of 0.8 MB was memorised, 1.0 bits/char on its own text and
#: 2.1-2.2 on unseen modules)
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
    "subprocess.py",
    "datetime.py",
    "zipfile.py",
    "pickletools.py",
    "_pyio.py",
    "doctest.py",
    "pydoc.py",
    "typing.py",
    "inspect.py",
    "turtle.py",
    "ipaddress.py",
    "mailbox.py",
    "enum.py",
    "ast.py",
    "pickle.py",
    "pdb.py",
    "threading.py",
    "shutil.py",
    "pathlib.py",
    "ssl.py",
    "statistics.py",
    "platform.py",
    "traceback.py",
    "os.py",
    "functools.py",
    "socket.py",
    "codecs.py",
    "random.py",
    "tempfile.py",
    "dis.py",
    "tokenize.py",
    "contextlib.py",
    "heapq.py",
)
#: a few training files: where an analysis chooses cells before measuring them on held-out text
SELECT_FILES = ("csv.py", "pprint.py", "string.py")
#: held-out files: the loss and the cell analyses read these, never trained on
HELDOUT_FILES = ("textwrap.py", "shlex.py")
LICENCE = "Python Software Foundation License Version 2 (the CPython 3.11.7 standard library)"
#: sha256 of each corpus's text (files concatenated, tabs expanded), CPython 3.11.7
TEXT_SHA256 = {
    TRAIN_FILES: "4f44215232853ac61775337c068bd63e1ad0168d77bf49a0acd9c37721e46376",
    SELECT_FILES: "85e54f275749a28977df0621ffcb8eaf5a8973a7e882ba2800b8da7a14715eb4",
    HELDOUT_FILES: "ab7c54a36095c9a7e5c3918cadd4535961f26e8831b41db3cfba25cd01e506b8",
}
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "python"  # the held-out files' copies

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
    mapped to ``<unk>`` when encoded): the shipped copy where there is one, else the running
    interpreter's file."""
    path = SHIPPED / f"{name}.txt"
    if not path.is_file():
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
    pinned = TEXT_SHA256.get(tuple(files))
    if pinned is not None and hashlib.sha256("".join(texts).encode("utf-8")).hexdigest() != pinned:
        raise SetupError(
            f"the standard-library sources {', '.join(files[:3])}, ... of this Python ({stdlib_dir()}) differ from the "
            "pinned text (CPython 3.11.7's) that code-lstm was trained on; run under Python 3.11.7"
        )
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
    parts = source.split("\n")  # tokenize's lines end at "\n" only (str.splitlines also splits at \x0c, ...)
    lines = [x + "\n" for x in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
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
