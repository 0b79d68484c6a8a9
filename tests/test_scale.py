"""Past one core and one machine: devices and dtypes resolved in one place (and on every CLI
command), the main analyses in bfloat16 against float32, models placed with accelerate's device
maps and offloaded to disk giving the unsharded model's results, sweeps on a local two-worker
Ray cluster giving the single-process frame (a crashed worker retried and reported), and work
split into micro-batches that fit the memory budget.

On a machine with a CUDA device the device tests run on it too (``DEVICES``); without one they
run on the CPU and the CUDA cases are skipped, saying so.  The longer checks (the real model in
bfloat16 and offloaded to disk, everything on the local two-worker Ray cluster) are marked
``scale``: ``make test`` deselects them and ``.ci/run`` runs them after it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import circuits
import interp
from apps.cli import app
from interp import executor, heads, lens, runs, sharding
from interp.errors import InputError, MemoryBudgetError, SetupError
from interp.loading import resolve_device, resolve_dtype, supported_dtypes

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
runner = CliRunner()


def induction_pair(model, n: int = 4, length: int = 24, seed: int = 1):
    """[BOS] r r prompts and their corruption: the first copy of r replaced (the induction
    heads then have nothing to copy)."""
    clean = heads.default_tokens(model, n=n, length=length, seed=seed)
    corrupt = clean.clone()
    corrupt[:, 1:12] = (corrupt[:, 1:12] + 5) % (model.cfg.d_vocab - 1) + 1
    return clean, corrupt


# --- devices and dtypes -------------------------------------------------------------------------


def test_devices_and_dtypes_are_resolved_in_one_place():
    assert resolve_device(None) == torch.device("cpu") and resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(InputError, match=r"has \['cpu'"):
        resolve_device("cuda:7")
    with pytest.raises(InputError, match="not supported; this machine has"):
        resolve_device("mps")
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_dtype("int8")
    assert {"float32", "bfloat16", "float16"} <= set(supported_dtypes("cpu"))
    if not CUDA:
        with pytest.raises(InputError, match=r"no CUDA device; it has \['cpu'\]"):
            interp.load("induction-2l", device="cuda")
    elif "bfloat16" not in supported_dtypes("cuda"):  # a GPU before Ampere
        with pytest.raises(InputError, match="bfloat16 cannot run on cuda"):
            interp.load("induction-2l", device="cuda", dtype="bfloat16")


def _model_commands():
    import typer.main

    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        out[name] = any(p.name == "model" and p.param_type_name == "argument" for p in cmd.params)
    return group, out


def test_every_command_that_loads_a_model_takes_the_placement_options():
    group, loads = _model_commands()
    assert {"info", "heads", "patch", "lens", "steer", "support"} <= {n for n, v in loads.items() if v}
    for name, cmd in group.commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        placed = {"--device", "--dtype", "--device-map", "--max-memory", "--offload-folder"}
        assert (placed <= opts) == loads[name], name
    assert {"--ray"} <= {o for p in group.commands["patch"].params for o in p.opts}
    assert {"--ray"} <= {o for p in group.commands["heads"].params for o in p.opts}


@pytest.mark.parametrize("device", DEVICES)
def test_commands_run_where_they_are_told(device):
    res = runner.invoke(app, ["info", "induction-2l", "--device", device, "--dtype", "bfloat16", "--grep", "hook_z"])
    assert res.exit_code == 0, res.output
    assert f"device: {device}" in res.output and "dtype: bfloat16" in res.output
    res = runner.invoke(
        app,
        [
            "heads",
            "induction-2l",
            "--device",
            device,
            "--dtype",
            "bfloat16",
            "--sequences",
            "2",
            "--kinds",
            "induction",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "induction" in res.output
    bad = runner.invoke(app, ["heads", "induction-2l", "--device", "cuda:9"])
    assert bad.exit_code == 2 and "this machine has" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["info", "induction-2l", "--max-memory", "cpu"])
    assert bad.exit_code == 2 and "DEVICE=SIZE" in bad.output


@pytest.mark.parametrize("device", DEVICES)
def test_the_real_model_scores_heads_in_bfloat16(device, smollm2):
    res = runner.invoke(
        app,
        ["heads", "smollm2-135m", "--device", device, "--dtype", "bfloat16", "--kinds", "induction", "--length", "48"],
    )
    assert res.exit_code == 0, res.output
    # the published induction heads of smollm2 (DESIGN: L18H6, L17H3, L17H4) lead in bfloat16 too
    top = [line.split() for line in res.output.splitlines() if line.strip().startswith("induction")]
    assert {(int(r[1]), int(r[2])) for r in top} <= {(18, 6), (17, 3), (17, 4)}, res.output


def _compare_dtypes(src: str, clean, corrupt, device: str = "cpu") -> dict[str, float]:
    """The largest difference of each main analysis between the float32 and bfloat16 models."""
    m32, m16 = interp.load(src, device=device), interp.load(src, device=device, dtype="bfloat16")
    out = {}
    toks = heads.default_tokens(m32, n=4, length=32)
    out["heads"] = float((heads.scores(m32, toks).score - heads.scores(m16, toks).score).abs().max())
    # patching effects (the default metric, logit difference) relative to the clean - corrupt gap
    kw = dict(site="resid_pre", by="layer,pos", progress=False)
    ra = runs.run(circuits.patch, m32, clean, corrupt, **kw)
    a, b = ra.frame, circuits.patch(m16, clean, corrupt, **kw)
    gap = abs(ra.meta["clean_value"] - ra.meta["corrupt_value"])
    out["patch"] = float((a.value - b.value).abs().max() / gap)
    a, b = circuits.attribute(m32, clean, corrupt), circuits.attribute(m16, clean, corrupt)
    out["attribution"] = float((a.value - b.value).abs().max() / gap)
    a, b = (circuits.edge_attribution(m, clean, corrupt, method="eap", progress=False) for m in (m32, m16))
    out["eap"] = float((a.scores - b.scores).abs().nan_to_num(0).max() / a.scores.abs().nan_to_num(0).max())
    one = clean[:1]
    target = int(m32(one)[0, -1].argmax())
    a, b = lens.logit_lens(m32, one, target=target), lens.logit_lens(m16, one, target=target)
    out["lens"] = float((a.target_prob - b.target_prob).abs().max())
    ra, rb = runs.run(lens.dla, m32, one, target), runs.run(lens.dla, m16, one, target)
    out["dla"] = float((ra.frame.value - rb.frame.value).abs().max() / (1 + abs(ra.meta["logit"])))
    out["dla_sum"] = abs(rb.meta["total"] - rb.meta["logit"]) / (1 + abs(rb.meta["logit"]))
    return out


#: bfloat16 keeps 8 bits of mantissa (relative rounding 4e-3 per operation): attention fractions
#: and probabilities within 0.02-0.03, patching effects within 3% of the clean - corrupt gap,
#: edge scores within 5% of the largest, DLA within 2% of the logit
BF16_TOL = dict(heads=0.02, patch=0.03, attribution=0.03, eap=0.05, lens=0.03, dla=0.02, dla_sum=0.01)


@pytest.mark.parametrize("device", DEVICES)
def test_main_analyses_in_bfloat16_agree_with_float32(device, induction_model):
    clean, corrupt = induction_pair(induction_model)
    diffs = _compare_dtypes("induction-2l", clean, corrupt, device)
    assert all(diffs[k] <= BF16_TOL[k] for k in BF16_TOL), diffs


@pytest.mark.scale
def test_main_analyses_of_the_real_model_in_bfloat16_agree_with_float32(smollm2):
    clean = smollm2.tokenize(
        [
            "When Mary and John went to the store, John gave a drink to",
            "When Tom and James went to the park, James gave a ball to",
        ]
    )
    corrupt = smollm2.tokenize(
        [
            "When Mary and John went to the store, Mary gave a drink to",
            "When Tom and James went to the park, Tom gave a ball to",
        ]
    )
    diffs = _compare_dtypes("smollm2-135m", clean.tokens, corrupt.tokens)
    assert all(diffs[k] <= BF16_TOL[k] for k in BF16_TOL), diffs


# --- device maps and disk offload -------------------------------------------------------------


@pytest.fixture(scope="module")
def llama4(tmp_path_factory) -> Path:
    """A tiny 4-layer Llama (tests.families) saved to a folder."""
    from tests.families import build

    _, folder = build("llama", tmp_path_factory.mktemp("llama4") / "llama4", num_hidden_layers=4)
    return folder


def _half_offloaded(folder: Path, offload: Path) -> interp.Model:
    """The model with ``max_memory`` set so that its first layers stay on the CPU and the others go
    to disk: the whole model less half a layer (accelerate keeps one layer's room free)."""
    from accelerate.utils import compute_module_sizes
    from transformers import AutoConfig

    meta = sharding._meta_model(AutoConfig.from_pretrained(folder))
    total = compute_module_sizes(meta)[""]
    _, layer = sharding.largest_layer(meta, torch.float32)
    return interp.load(str(folder), max_memory={"cpu": total - layer // 2}, offload_folder=offload)


def test_an_offloaded_model_gives_the_unsharded_models_results(llama4, tmp_path):
    whole = interp.load(str(llama4))
    placed = _half_offloaded(llama4, tmp_path / "offload")
    where = placed.card["placement"]["device_map"]
    assert where["model.layers.0"] == "cpu" and where["model.layers.3"] == "disk", where
    assert any(p.device.type == "meta" for p in placed.module.parameters())  # really offloaded
    assert placed.device.type == "cpu"
    clean = whole.tokenize(["w1 w2 w3 w4 w5 w6 w7 w1 w2 w3", "w8 w9 w10 w11 w12 w13 w14 w8 w9 w10"])
    corrupt = whole.tokenize(["w1 w2 w30 w4 w5 w6 w7 w1 w2 w3", "w8 w9 w31 w11 w12 w13 w14 w8 w9 w10"])
    assert torch.equal(whole(clean), placed(clean))
    # patching through every engine, head by head
    for engine in ("hooks", "layers", "blocks"):
        kw = dict(metric="logprob", engine=engine, progress=False)
        a, b = circuits.patch(whole, clean, corrupt, **kw), circuits.patch(placed, clean, corrupt, **kw)
        assert (a.value - b.value).abs().max() < 1e-5, engine
    # the lenses: logit lens, direct logit attribution (reads the offloaded unembedding and W_O)
    one = clean.tokens[:1]
    a, b = lens.logit_lens(whole, one, target=5), lens.logit_lens(placed, one, target=5)
    assert (a.target_prob - b.target_prob).abs().max() < 1e-6
    a, b = lens.dla(whole, one, 5), lens.dla(placed, one, 5)
    assert (a.value - b.value).abs().max() < 1e-5
    # gradients through offloaded layers, weights read from them, heads, decoding from a cache
    a, b = circuits.attribute(whole, clean, corrupt), circuits.attribute(placed, clean, corrupt)
    assert (a.value - b.value).abs().max() < 1e-5
    assert torch.equal(whole.weights().W_O, placed.weights().W_O)
    toks = heads.default_tokens(whole, n=2, length=16)
    assert (heads.scores(whole, toks).score - heads.scores(placed, toks).score).abs().max() < 1e-6
    assert torch.equal(whole.generate(one, 4), placed.generate(one, 4))


def test_an_explicit_device_map_offloads_the_layers_it_names(llama4):
    dmap = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu"}
    dmap |= {"model.layers.2": "disk", "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu"}
    dmap["lm_head"] = "disk"
    placed = interp.load(str(llama4), device_map=dmap)
    assert placed.card["placement"]["offloaded"] == ["model.layers.0", "model.layers.2", "lm_head"]
    whole = interp.load(str(llama4))
    ids = whole.to_tokens("w1 w2 w3 w4 w5 w6")
    assert torch.equal(whole(ids), placed(ids))
    a = circuits.patch(whole, ids, whole.to_tokens("w1 w9 w3 w4 w5 w6"), metric="logprob", progress=False)
    b = circuits.patch(placed, ids, whole.to_tokens("w1 w9 w3 w4 w5 w6"), metric="logprob", progress=False)
    assert (a.value - b.value).abs().max() < 1e-5


def test_placement_refusals_are_one_line(llama4, hf_dirs):
    cases = [
        (dict(source="induction-2l", device_map="auto"), "TransformerLens native model"),
        (dict(source=interp.load("induction-2l").module, device_map="auto"), "not a Hugging Face model"),
        (dict(source=str(llama4), max_memory={"cpu": "10KB"}), "too small for even one layer"),
        (dict(source=str(llama4), max_memory={"cuda:3": "1GB"}), "does not have"),
        (dict(source=str(llama4), max_memory={"cpu": "lots"}), "positive size"),
        (dict(source=str(llama4), device_map="everywhere"), "device_map must be one of"),
        (dict(source=str(llama4), device_map="auto", device="cpu"), "not both"),
        (dict(source=str(llama4), device_map={"model.layers.9": "disk"}), "does not have"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message) as info:
            interp.load(**kwargs)
        assert "\n" not in str(info.value)


@pytest.mark.scale
def test_the_real_model_offloaded_to_disk_gives_the_same_patching_and_lens(smollm2, tmp_path):
    import time as _time

    t0 = _time.perf_counter()
    placed = interp.load("smollm2-135m", max_memory={"cpu": "300MB"}, offload_folder=tmp_path)
    print(f"loaded with offload in {_time.perf_counter() - t0:.1f} s: {placed.card['placement']['offloaded']}")
    assert len(placed.card["placement"]["offloaded"]) > 0
    clean = smollm2.tokenize("When Mary and John went to the store, John gave a drink to")
    corrupt = smollm2.tokenize("When Mary and John went to the store, Mary gave a drink to")
    kw = dict(site="resid_pre", by="layer", progress=False)
    a, b = circuits.patch(smollm2, clean, corrupt, **kw), circuits.patch(placed, clean, corrupt, **kw)
    assert (a.value - b.value).abs().max() < 1e-4
    a, b = lens.logit_lens(smollm2, clean, target=" Mary"), lens.logit_lens(placed, clean, target=" Mary")
    assert (a.target_prob - b.target_prob).abs().max() < 1e-5


# --- Ray ---------------------------------------------------------------------------------------


def test_an_unreachable_ray_address_fails_in_one_line_within_seconds(monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'interp-workbench[ray]')")
    if ray.is_initialized():  # connecting is what is tested
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    start = time.perf_counter()
    res = runner.invoke(app, ["heads", "induction-2l", "--sequences", "2", "--kinds", "induction", "--ray"])
    assert time.perf_counter() - start < 30
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "error: cannot reach the Ray cluster at '127.0.0.1:9' (RAY_ADDRESS)" in res.output
    assert not ray.is_initialized()


def test_nothing_imports_ray_unless_asked():
    """Patching, attribution, head scores and the command line run without importing Ray."""
    code = (
        "import sys, torch, interp, circuits, apps.cli\n"
        "from interp import heads\n"
        "m = interp.load('induction-2l')\n"
        "c = heads.default_tokens(m, n=2, length=12)\n"
        "circuits.patch(m, c, c.flip(0), metric='logprob', progress=False)\n"
        "circuits.attribute(m, c, c.flip(0), metric='logprob')\n"
        "heads.scores(m, c)\n"
        "assert 'ray' not in sys.modules, sorted(k for k in sys.modules if k.startswith('ray'))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-worker Ray cluster for this module (started once; a few seconds)."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'interp-workbench[ray]')")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    executor.connect(workers=2)
    yield executor.Ray(workers=2)
    ray.shutdown()


@pytest.mark.scale
def test_patching_on_ray_equals_the_single_process_frame(ray_cluster, induction_model):
    clean, corrupt = induction_pair(induction_model)
    kw = dict(metric="logprob", progress=False)
    r_local = runs.run(circuits.patch, induction_model, clean, corrupt, **kw)
    r_ray = runs.run(circuits.patch, induction_model, clean, corrupt, **kw, executor="ray")
    local, on_ray = r_local.frame, r_ray.frame
    assert r_ray.meta["executor"]["executor"] == "ray" and r_ray.meta["executor"]["chunks"] >= 2
    assert r_local.meta["executor"]["executor"] == "local"
    assert list(on_ray.columns) == list(local.columns) and len(on_ray) == len(local)
    keys = ["layer", "pos", "head"]
    assert not on_ray.duplicated(keys).any()
    assert on_ray[keys].equals(local[keys])  # the cells in the same order
    # chunks of prompts: each prompt group's batch mean, weighted by its prompts (float32 rounding of
    # a mean of values of a few nats: a few units in the last place)
    assert (on_ray.value - local.value).abs().max() < 1e-5
    assert r_ray.meta["clean_value"] == pytest.approx(r_local.meta["clean_value"], abs=1e-5)
    assert r_ray.meta["corrupt_value"] == pytest.approx(r_local.meta["corrupt_value"], abs=1e-5)
    # one prompt: chunks of cells, each patched exactly as in one process
    one = circuits.patch(induction_model, clean[:1], corrupt[:1], metric="logprob", progress=False)
    r_one = runs.run(circuits.patch, induction_model, clean[:1], corrupt[:1], **kw, executor="ray")
    one_ray = r_one.frame
    assert r_one.meta["executor"]["chunks"] == 4 and one_ray[keys].equals(one[keys])
    assert (one_ray.value - one.value).abs().max() < 1e-6
    for engine in ("hooks", "layers", "blocks"):  # each patching engine runs in the workers alike
        a = runs.run(circuits.patch, induction_model, clean[:2], corrupt[:2], **kw, engine=engine)
        r = runs.run(circuits.patch, induction_model, clean[:2], corrupt[:2], **kw, engine=engine, executor="ray")
        assert r.meta["engine"] == a.meta["engine"], engine  # (layers / blocks run as native on this model)
        assert (r.frame.value - a.frame.value).abs().max() < 1e-5, engine
    # head scores over a dataset: the same chunks give the same sums
    toks = heads.default_tokens(induction_model, n=12, length=32, seed=3)
    a = heads.scores(induction_model, toks, batch_size=3)
    b = heads.scores(induction_model, toks, batch_size=3, executor=ray_cluster)
    assert (a.score - b.score).abs().max() == 0
    # the command line's --ray
    res = runner.invoke(
        app,
        [
            "patch",
            "induction-2l",
            "--clean",
            "t1 t2 t3 t4 t1 t2",
            "--corrupt",
            "t1 t5 t3 t4 t1 t2",
            "--metric",
            "logprob",
        ]
        + ["--ray"],
    )
    assert res.exit_code == 0, res.output


def crash_once(model, chunk):
    """A task that kills its worker process the first time it sees chunk 1 (a marker file says)."""
    marker, i, xs = chunk
    if i == 1 and not os.path.exists(marker):
        Path(marker).write_text("crashed")
        os._exit(1)
    if i == 2 and not os.path.exists(marker + ".2"):
        Path(marker + ".2").write_text("raised")
        raise RuntimeError("a transient failure")
    return [x * x for x in xs]


@pytest.mark.scale
def test_a_failed_worker_is_retried_and_reported(ray_cluster, tmp_path):
    chunks = [(str(tmp_path / "marker"), i, list(range(3 * i, 3 * i + 3))) for i in range(4)]
    out = ray_cluster.map(crash_once, None, chunks)
    assert out == [[x * x for x in range(3 * i, 3 * i + 3)] for i in range(4)]
    failed = sorted((f["chunk"], f["attempt"]) for f in ray_cluster.report.failures)
    assert failed == [(1, 1), (2, 1)], ray_cluster.report.failures
    assert "transient" in next(f["error"] for f in ray_cluster.report.failures if f["chunk"] == 2)
    # a chunk that fails on every try raises, naming it: never a silently missing row
    strict = executor.Ray(workers=2, retries=0)
    with pytest.raises(SetupError, match="chunk 2 of 4 failed on all 1 tries"):
        strict.map(crash_once, None, [(str(tmp_path / "again"), i, [i]) for i in range(4)])


@pytest.mark.scale
def test_ray_refusals(ray_cluster, induction_model):
    from circuits.corrupt import gaussian_noise

    clean, corrupt = induction_pair(induction_model)
    noise = gaussian_noise(induction_model, clean, [2], n_samples=2)
    with pytest.raises(InputError, match="acts through hooks"):
        circuits.patch(induction_model, clean, noise, metric="logprob", progress=False, executor="ray")
    memory_model = interp.load(dict(d_model=32, d_head=8, n_layers=2, n_heads=4, n_ctx=32, d_vocab=20, attn_only=True))
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(InputError, match="built in memory"):
        circuits.patch(memory_model, ids, torch.tensor([[1, 5, 3, 4]]), metric="logprob", executor="ray")


# --- memory ------------------------------------------------------------------------------------


def test_attribution_and_edge_attribution_split_into_micro_batches_that_fit(induction_model, monkeypatch):
    clean, corrupt = induction_pair(induction_model, n=8)
    ra = runs.run(circuits.attribute, induction_model, clean, corrupt, metric="logprob")
    e = circuits.edge_attribution(induction_model, clean, corrupt, metric="logprob", method="eap-ig", progress=False)
    monkeypatch.setenv("INTERP_MEMORY_MB", "1")  # ~3 prompts per backward pass
    rb = runs.run(circuits.attribute, induction_model, clean, corrupt, metric="logprob")
    assert (ra.frame.value - rb.frame.value).abs().max() < 1e-5
    assert ra.meta["clean_value"] == pytest.approx(rb.meta["clean_value"])
    monkeypatch.setenv("INTERP_MEMORY_MB", "4")
    f = circuits.edge_attribution(induction_model, clean, corrupt, metric="logprob", method="eap-ig", progress=False)
    assert f.meta["micro_batches"] > 1
    assert (e.scores - f.scores).abs().nan_to_num(0).max() < 1e-5
    # patching: a sweep whose single cell does not fit is refused up front with the estimate
    monkeypatch.setenv("INTERP_MEMORY_MB", "0.05")
    with pytest.raises(MemoryBudgetError, match="one cell runs the 8 prompts of 24 tokens"):
        circuits.patch(induction_model, clean, corrupt, metric="logprob", progress=False)
    monkeypatch.setenv("INTERP_MEMORY_MB", "4")
    with pytest.raises(MemoryBudgetError, match="batch_tokens=1000000"):
        circuits.patch(induction_model, clean, corrupt, metric="logprob", batch_tokens=1_000_000, progress=False)
    small = circuits.patch(induction_model, clean, corrupt, metric="logprob", progress=False)
    monkeypatch.delenv("INTERP_MEMORY_MB")
    full = circuits.patch(induction_model, clean, corrupt, metric="logprob", progress=False)
    assert (small.value - full.value).abs().max() < 1e-5


def test_the_gpu_check_says_when_there_is_no_gpu():
    if CUDA:
        pytest.skip("this machine has a CUDA device: benchmarks/gpu.py runs the real comparison there")
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0 and "no CUDA device" in res.stdout, res.stdout + res.stderr
