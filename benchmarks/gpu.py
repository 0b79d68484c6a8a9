"""GPU check: each main analysis on smollm2-135m on CUDA against the same analysis on the CPU
(float32; results equal to 1e-3, relative to the largest value), with the time of each side.

Analyses: the logits of a batch of prompts, greedy decoding from the key-value cache, head
scores (every kind) on [BOS] r r probes, exact activation patching (IOI, by layer / position /
head of the head outputs, the downstream engine), attribution patching, edge attribution
(EAP-IG), the logit lens and direct logit attribution; then the same analyses in bfloat16 on the
GPU against float32 on the CPU (the tolerances of tests/test_scale.py), and a model placed with
``device_map="auto"`` against the one-device model.  A missed equality exits with status 1
(``_timing.Checks``).

On a machine without a CUDA device it says so and exits 0: run it wherever a GPU is available.

    python benchmarks/gpu.py            # a few minutes (the CPU side dominates)
    python benchmarks/gpu.py --quick    # fewer prompts and cells
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks  # noqa: E402 (after the path is set)

IOI = [
    (
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
    ),
    (
        "When Tom and James went to the park, James gave a ball to",
        "When Tom and James went to the park, Tom gave a ball to",
    ),
]
#: bfloat16 against float32, relative to the largest value (see tests/test_scale.py's BF16_TOL)
BF16_TOL = dict(heads=0.02, patch=0.03, attribution=0.05, lens=0.03)


def analyses(model, quick: bool) -> dict:
    """Each main analysis on ``model``: name -> (result as a float tensor on the CPU, seconds)."""
    import torch

    import circuits
    from interp import heads, lens

    clean = model.tokenize([c for c, _ in IOI])
    corrupt = model.tokenize([c for _, c in IOI])
    probes = heads.default_tokens(model, n=4 if quick else 16, length=64 if quick else 128)
    one = clean.tokens[:1]
    out = {}

    def timed(name, fn):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        out[name] = (torch.as_tensor(value).detach().float().cpu(), time.perf_counter() - start)

    with torch.no_grad():
        timed("logits", lambda: model(clean)[:, -1])
    timed("generate", lambda: model.generate(one, 8).float())
    timed("heads", lambda: torch.tensor(heads.scores(model, probes).score.to_numpy()))
    by = "layer,head" if quick else "layer,pos,head"
    timed("patch", lambda: torch.tensor(circuits.patch(model, clean, corrupt, by=by, progress=False).value.to_numpy()))
    timed("attribution", lambda: torch.tensor(circuits.attribute(model, clean, corrupt).value.to_numpy()))
    timed(
        "eap-ig",
        lambda: circuits.edge_attribution(model, clean, corrupt, method="eap-ig", progress=False).scores.nan_to_num(0),
    )
    timed("lens", lambda: torch.tensor(lens.logit_lens(model, one, target=" Mary").target_prob.to_numpy()))
    timed("dla", lambda: torch.tensor(lens.dla(model, one, " Mary", " John").value.to_numpy()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts and cells")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device on this machine: nothing to compare (run benchmarks/gpu.py where a GPU is available)")
        return
    import interp

    checks = Checks()
    name = torch.cuda.get_device_name(0)
    print(f"smollm2-135m on {name} (CUDA {torch.version.cuda}) against the CPU ({torch.get_num_threads()} threads)")
    cpu = analyses(interp.load("smollm2-135m"), args.quick)
    gpu_model = interp.load("smollm2-135m", device="cuda")
    analyses(gpu_model, True)  # warm-up: kernels, the engines' checks
    gpu = analyses(gpu_model, args.quick)
    print(f"{'analysis':<12} {'cpu s':>8} {'gpu s':>8} {'speed-up':>9}")
    for key, (want, t_cpu) in cpu.items():
        got, t_gpu = gpu[key]
        print(f"{key:<12} {t_cpu:8.2f} {t_gpu:8.2f} {t_cpu / max(t_gpu, 1e-9):8.1f}x")
        diff = (
            float((got - want).abs().max()) / (1 + float(want.abs().max())) if got.shape == want.shape else float("inf")
        )
        checks.close(f"{key}: CUDA float32 against the CPU (relative)", diff, 1e-3)
    # bfloat16 on the GPU, where it runs natively
    from interp.loading import supported_dtypes

    if "bfloat16" in supported_dtypes("cuda"):
        half = analyses(interp.load("smollm2-135m", device="cuda", dtype="bfloat16"), args.quick)
        for key, tol in BF16_TOL.items():
            got, want = half[key][0], cpu[key][0]
            diff = float((got - want).abs().max()) / (1 + float(want.abs().max()))
            checks.close(f"{key}: CUDA bfloat16 against CPU float32 (relative)", diff, tol)
    # a device map (accelerate) over the GPUs, spilling to the CPU if they are small
    placed = interp.load("smollm2-135m", device_map="auto")
    print(
        f"device_map='auto': {placed.card['placement']['devices']}, offloaded {placed.card['placement']['offloaded']}"
    )
    got = analyses(placed, True)
    ref = analyses(gpu_model, True)
    for key in ("logits", "patch", "lens"):
        diff = float((got[key][0] - ref[key][0]).abs().max()) / (1 + float(ref[key][0].abs().max()))
        checks.close(f"{key}: device_map='auto' against one GPU", diff, 1e-3)
    checks.finish()


if __name__ == "__main__":
    main()
