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
        # reproduce loads its models from --model (several at once)
        out[name] = name == "reproduce" or any(
            p.name == "model" and p.param_type_name == "argument" for p in cmd.params
        )
    return group, out


def test_every_command_that_loads_a_model_takes_the_placement_options():
    group, loads = _model_commands()
    assert {"info", "heads", "patch", "lens", "steer", "support", "reproduce"} <= {n for n, v in loads.items() if v}
    for name, cmd in group.commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        placed = {"--device", "--dtype", "--device-map", "--max-memory", "--offload-folder"}
        assert (placed <= opts) == loads[name], name
    assert {"--ray"} <= {o for p in group.commands["patch"].params for o in p.opts}
    assert {"--ray"} <= {o for p in group.commands["heads"].params for o in p.opts}
    assert {"--ray"} <= {o for p in group.commands["reproduce"].params for o in p.opts}
    assert {"--ray"} <= {o for p in group.commands["sae"].commands["train"].params for o in p.opts}


@pytest.mark.scale  # the word-level model first generates its own text (seconds)
def test_sae_train_with_ray_harvests_through_the_ray_executor(monkeypatch):
    """``interp sae train --ray`` hands the harvest to the Ray executor (the executor's own
    equality with a plain harvest is tested below); without it the harvest runs here."""
    import importlib

    sae_train = importlib.import_module("interp.sae.train")  # the module (interp.sae.train is also the function)
    seen = []

    def spy(*args, executor=None, **kwargs):
        seen.append(executor)
        raise KeyboardInterrupt  # stop before any work: only the hand-over is tested here

    monkeypatch.setattr(sae_train, "harvest", spy)
    for flag in (["--ray"], []):
        args = ["sae", "train", "induction-2l", "--site", "resid_post", "--layer", "0", "--tokens", "64", *flag]
        runner.invoke(app, args)
    assert seen == ["ray", None]


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
    """Patching, attribution, head scores, harvesting, findings over models and the command line
    run without importing Ray."""
    code = (
        "import sys, torch, interp, circuits, apps.cli\n"
        "from interp import heads\n"
        "m = interp.load('induction-2l')\n"
        "c = heads.default_tokens(m, n=2, length=12)\n"
        "circuits.patch(m, c, c.flip(0), metric='logprob', progress=False)\n"
        "circuits.attribute(m, c, c.flip(0), metric='logprob')\n"
        "heads.scores(m, c)\n"
        "import tempfile\n"
        "from interp import reproduce\n"
        "from interp.sae import store\n"
        "store.harvest(m, m.site('resid_post', 0), c, tempfile.mkdtemp(), progress=False)\n"
        "reproduce.run_many(['olsson2022'], ['induction-2l'], quick=True)\n"
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


# --- findings on several models, activation harvesting -------------------------------------------

#: a summary's keys that hold what was measured (not how long it took)
MEASURED = ("id", "model", "verdict", "reason", "ours", "ci_low", "ci_high", "n", "counts", "quick")


def _same_summaries(a: list, b: list, tol: float = 1e-6) -> None:
    assert [(r.summary["model"], r.summary["id"]) for r in a] == [(r.summary["model"], r.summary["id"]) for r in b]
    for x, y in zip(a, b, strict=True):
        for k in MEASURED:
            if isinstance(x.summary[k], float):
                assert y.summary[k] == pytest.approx(x.summary[k], abs=tol), (x.summary["id"], k)
            else:
                assert y.summary[k] == x.summary[k], (x.summary["id"], k)


class Pickling(executor.Executor):
    """An executor like a cluster's, in this process: every chunk and result crosses a pickle (as
    they cross to Ray's workers), the chunks run last to first, and the results come back in order."""

    name = "pickling"

    @property
    def workers(self) -> int:
        return 2

    def map(self, fn, model, chunks, *, desc="chunks", progress=False, size=None, gpus=None) -> list:
        import pickle

        spec = executor.spec_of(model) if model is not None else None
        done = {}
        for i in reversed(range(len(chunks))):
            m = executor.model_for(spec) if spec is not None else None
            done[i] = pickle.loads(pickle.dumps(fn(m, pickle.loads(pickle.dumps(chunks[i])))))
        return [done[i] for i in range(len(chunks))]


IDS, ZOO = ["toyinduction", "olsson2022"], ["induction-2l", "recall-2l"]


@pytest.fixture(autouse=True)
def _forget_the_toy_finding():
    """tests/toy_findings.py registers a finding when imported: forget it after each test, so
    the registry other test files see holds only the published findings."""
    yield
    from interp.reproduce import registry

    registry._REGISTRY.pop("toyinduction", None)
    sys.modules.pop("tests.toy_findings", None)


def test_findings_on_several_models_equal_the_plain_runs(monkeypatch):
    import tests.toy_findings  # noqa: F401  a finding the zoo models measure
    from interp import reproduce

    plain = [reproduce.run(f, interp.load(m), quick=True) for m in ZOO for f in IDS]
    # the finding is measured (an induction model passes, the associative-recall one does not)
    assert [r.verdict for r in plain] == ["reproduced", "not applicable", "not reproduced", "not applicable"]
    _same_summaries(plain, reproduce.run_many(IDS, ZOO, quick=True))
    _same_summaries(plain, reproduce.run_many(IDS, [interp.load(m) for m in ZOO], quick=True, executor="local"))
    _same_summaries(plain, reproduce.run_many(IDS, [{"source": m} for m in ZOO], quick=True, executor=Pickling()))
    stored = reproduce.run_many(IDS[:1], ZOO[:1], quick=True, stored=True)
    assert stored[0].provenance is not None and stored[0].value.summary["model"] == "induction-2l"
    # every id and model is checked before any model is loaded or finding run
    monkeypatch.setattr(interp, "load", lambda *a, **k: pytest.fail("a model was loaded before the input was checked"))
    for ids, models, message in [
        (IDS, ["induction-2l", "inductoin-2l"], "did you mean"),
        (IDS, ["induction-2l", "./no/such/model"], "no model at"),
        (["toyinduction", "nosuch"], ZOO, "unknown finding"),
        (IDS, "induction-2l", "non-empty list"),
        (IDS, [{"source": "induction-2l", "colour": "red"}], "not interp.load arguments"),
    ]:
        with pytest.raises((InputError, FileNotFoundError), match=message):
            reproduce.run_many(ids, models, quick=True)
    # the command line: several models, and an unknown one refused in one line before any work
    monkeypatch.undo()
    res = runner.invoke(app, ["reproduce", "toyinduction", "--model", "induction-2l", "--model", "inductoin-2l"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "did you mean" in res.output, res.output


def test_the_cli_runs_a_finding_on_several_models(tmp_path):
    import json

    import tests.toy_findings  # noqa: F401

    out = tmp_path / "two.json"
    res = runner.invoke(
        app, ["reproduce", "toyinduction", "--model", "induction-2l,recall-2l", "--quick", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [(d["model"], d["verdict"]) for d in data] == [
        ("induction-2l", "reproduced"),
        ("recall-2l", "not reproduced"),
    ]
    assert res.output.count("saved as run") == 2


def _site_acts(model, site: str, tokens: torch.Tensor) -> torch.Tensor:
    """The site's activations with position 0 left out, row-major ``[rows * (pos - 1), d]``: what a
    store of these tokens holds, read from one forward pass."""
    _, cache = model.run_with_cache(tokens, [site])
    a = cache[site][:, 1:]
    return a.reshape(-1, a.shape[-1])


def _stores_equal(a, b) -> None:
    volatile = {"seconds", "tokens_per_second"}
    assert {k: v for k, v in a.meta.items() if k not in volatile} == {
        k: v for k, v in b.meta.items() if k not in volatile
    }
    for i in range(len(a.meta["shards"])):
        x, y = a.shard(i), b.shard(i)
        assert set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x), i


def test_harvesting_through_an_executor_equals_the_plain_harvest(induction_model, tmp_path):
    from interp.sae import store as sae_store

    site = induction_model.site("resid_post", 0)
    toks = heads.default_tokens(induction_model, n=10, length=16, seed=2)
    kw = dict(out_site=induction_model.site("resid_post", 1), rows_per_shard=3, batch_size=2, progress=False)
    plain = sae_store.harvest(induction_model, site, toks, tmp_path / "plain", **kw)
    assert plain.complete and len(plain.meta["shards"]) == 4
    want = _site_acts(induction_model, site, toks)
    assert (plain.load() - want).abs().max() < 1e-6  # the store is the model's activations, in order
    for name, ex in [("local", "local"), ("pickling", Pickling())]:
        _stores_equal(plain, sae_store.harvest(induction_model, site, toks, tmp_path / name, **kw, executor=ex))
    # resumed through an executor: two shards, then the rest
    part = sae_store.harvest(induction_model, site, toks, tmp_path / "resumed", **kw, executor=Pickling(), max_shards=2)
    assert not part.complete
    _stores_equal(
        plain, sae_store.harvest(induction_model, site, toks, tmp_path / "resumed", **kw, executor=Pickling())
    )


def registered(model, chunk) -> list[str]:
    """The findings a worker's registry holds (the causal ones arrive through the entry points)."""
    from interp import reproduce

    return sorted(reproduce.findings())


@pytest.mark.scale
def test_findings_and_harvesting_on_ray_equal_one_process(ray_cluster, smollm2, tmp_path):
    import tests.toy_findings  # noqa: F401
    from interp import reproduce
    from interp.sae import store as sae_store

    for names in ray_cluster.map(registered, None, [0, 1]):
        assert {"wang2022", "mcgrath2023", "zhang2023", "olsson2022"} <= set(names), names
    # each (model, finding) pair a task, loaded in the workers (the toy finding registered there by
    # importing its module), back in (model, finding) order
    local = reproduce.run_many(IDS, ZOO, quick=True)
    on_ray = reproduce.run_many(IDS, ZOO, quick=True, executor=ray_cluster)
    assert ray_cluster.report.chunks == 4 and not ray_cluster.report.failures
    _same_summaries(local, on_ray)
    # a causal finding (circuits, through its entry point) on the real model
    local = [reproduce.run("mcgrath2023", smollm2, quick=True)]
    assert local[0].summary["ours"] is not None
    _same_summaries(local, reproduce.run_many(["mcgrath2023"], [smollm2], quick=True, executor="ray"), tol=1e-5)
    # harvesting: the shards computed in the workers, written here in order
    model = interp.load("induction-2l")
    site = model.site("resid_post", 0)
    toks = heads.default_tokens(model, n=10, length=16, seed=2)
    kw = dict(rows_per_shard=2, batch_size=2, progress=False)
    plain = sae_store.harvest(model, site, toks, tmp_path / "plain", **kw)
    _stores_equal(plain, sae_store.harvest(model, site, toks, tmp_path / "ray", **kw, executor=ray_cluster))
    assert ray_cluster.report.chunks >= 1


@pytest.mark.scale
def test_the_cli_runs_findings_on_two_models_on_ray(ray_cluster, tmp_path):
    import json

    import tests.toy_findings  # noqa: F401

    out = tmp_path / "ray.json"
    res = runner.invoke(
        app,
        ["reproduce", "toyinduction", "--model", "induction-2l", "--model", "recall-2l", "--quick", "--ray"]
        + ["--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [(d["model"], d["verdict"]) for d in data] == [
        ("induction-2l", "reproduced"),
        ("recall-2l", "not reproduced"),
    ]
    assert res.output.count("saved as run") == 2 and "ran 2 (model, finding) tasks on 2 Ray workers" in res.output
    one = runner.invoke(app, ["reproduce", "olsson2022", "--model", "induction-2l", "--ray", "--no-save"])
    assert one.exit_code == 0 and "not applicable" in one.output, one.output


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
