"""Benchmark: ``interp.heads.scores`` against TransformerLens's ``detect_head`` (time and
equality), and against TransformerLens's full ``run_with_cache`` (peak memory).

Model: a GPT-2-small-shaped native TransformerBridge with random weights (12 layers x 12
heads, d_model 768, d_mlp 3072, vocab 50257, LayerNorm), nothing downloaded.

Time: ``--prompts`` [BOS] r r sequences of ``--pos`` tokens; the three kinds TransformerLens
detects (previous-token, duplicate-token, induction).  ``heads.scores`` scores all three from
one forward per chunk; ``detect_head`` (TransformerLens's own function, the peer) runs once per
kind and prompt, as its API takes one pattern at a time.  Both run alternately ``--repeats``
times in one process (no grad, after a warm-up); the ratio of the medians is checked (target
>= 2x) and the scores must be equal (1e-5).

Memory: each measured operation runs in a fresh child process that builds the model,
resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``), notes its RSS,
runs the operation once and reads the peak (``VmHWM``).  The delta is the operation's peak
extra memory: all five of our kinds (prefix matching and sinks too) on one sequence of
``--pos`` tokens against TL's ``run_with_cache`` of the same sequence (target: under a tenth).
glibc is told to serve every allocation above 64 KiB by mmap (``MALLOC_MMAP_THRESHOLD_``) so
that freed tensors leave RSS at once and the counter sees live memory, not allocator caches.
Where ``clear_refs`` is not writable the child falls back to the peak since process start
minus the RSS after building the model.

    python benchmarks/heads.py            # about 3 minutes on 2 idle cores (longer when shared)
    python benchmarks/heads.py --quick    # shorter sequences, no memory children
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks  # noqa: E402 (after the path is set)

GPT2_SMALL = dict(
    d_model=768, d_head=64, n_layers=12, n_heads=12, d_mlp=3072, d_vocab=50257, act_fn="gelu", normalization_type="LN"
)


def build(pos: int):
    import torch

    import interp
    from interp import heads

    torch.manual_seed(0)
    model = interp.load(dict(GPT2_SMALL, n_ctx=pos + 1), name="gpt2-small-shaped")  # TL: length < n_ctx
    tokens = heads.default_tokens(model, n=1, length=pos, seed=0)
    return model, tokens


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(op: str, pos: int) -> None:
    """Runs one operation once and prints {"op", "delta_bytes", "method"} as JSON."""
    import torch

    from interp import heads

    torch.set_grad_enabled(False)
    model, tokens = build(pos)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "clear_refs"
    except OSError:
        method = "since-start"
    base = _status("VmRSS")
    if op == "forward":
        model.module(tokens)
    elif op == "scores":
        heads.scores(model, tokens, heads.PATTERN_KINDS)
    elif op == "cache":
        logits, cache = model.module.run_with_cache(tokens)  # TransformerLens's own, every hook
        del logits, cache
    else:
        raise ValueError(op)
    print(json.dumps({"op": op, "delta_bytes": _status("VmHWM") - base, "method": method}))


def measure_memory(pos: int, threads: int) -> dict[str, int]:
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT),
        "TQDM_DISABLE": "1",
    }
    out = {}
    for op in ("forward", "scores", "cache"):
        res = subprocess.run(
            [sys.executable, __file__, "--child", op, "--pos", str(pos), "--threads", str(threads)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"memory child {op} failed:\n{res.stderr[-2000:]}")
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        out[op] = rec["delta_bytes"]
        out["method"] = rec["method"]
    return out


def measure_time(pos: int, n_prompts: int, repeats: int) -> tuple[dict[str, list[float]], float]:
    """Wall seconds of each run of ours and of TL's ``detect_head`` (interleaved: shared cores
    drift), and the largest difference of their scores."""
    import torch
    from transformer_lens.head_detector import detect_head

    from interp import heads
    from interp.compat import TokenizedPrompts

    torch.set_grad_enabled(False)
    model, _ = build(pos)
    tokens = heads.default_tokens(model, n=n_prompts, length=pos, seed=0)
    proxy = TokenizedPrompts(model, tokens)
    names = {
        "previous_token": "previous_token_head",
        "duplicate_token": "duplicate_token_head",
        "induction": "induction_head",
    }

    def ours():
        return heads.scores(model, tokens, list(names))

    def theirs():
        return {kind: detect_head(proxy, proxy.prompts(), name) for kind, name in names.items()}

    ops = {"ours": ours, "detect_head": theirs}
    results = {name: op() for name, op in ops.items()}  # warm-up (allocator, kernels)
    frame, ref = results["ours"], results["detect_head"]
    diff = 0.0
    for kind in names:
        grid = frame[frame["kind"] == kind].sort_values(["layer", "head"])["score"].to_numpy()
        diff = max(diff, float((torch.tensor(grid).view_as(ref[kind]) - ref[kind].double()).abs().max()))
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeats):
        for name, op in ops.items():
            w = time.perf_counter()
            op()
            times[name].append(time.perf_counter() - w)
    return times, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pos", type=int, default=512, help="sequence length of the timed prompts (default 512)")
    ap.add_argument("--prompts", type=int, default=4, help="timed prompts (default 4)")
    ap.add_argument("--memory-pos", type=int, default=2048, help="sequence length of the memory runs (default 2048)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="128-token prompts, one repeat, no memory runs")
    ap.add_argument("--child", choices=["forward", "scores", "cache"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.pos)
        return
    if args.quick:
        args.pos, args.repeats = 128, 1
    checks = Checks()
    print(
        f"GPT-2-small-shaped random bridge (12 layers x 12 heads, d_model 768), {args.prompts} x {args.pos} tokens, "
        f"{args.threads} threads"
    )
    times, diff = measure_time(args.pos, args.prompts, args.repeats)
    ours, tl = statistics.median(times["ours"]), statistics.median(times["detect_head"])
    print(f"  time (median of {args.repeats}): TL detect_head x 3 kinds {tl:.2f} s   heads.scores {ours:.2f} s")
    checks.at_least("speed-up over detect_head", tl / ours, 2.0)
    checks.close("scores against detect_head", diff, 1e-5)
    if not args.quick:
        mem = measure_memory(args.memory_pos, args.threads)
        mib = {k: v / 2**20 for k, v in mem.items() if k != "method"}
        print(
            f"  memory peak extra RSS at {args.memory_pos} tokens ({mem['method']}): forward {mib['forward']:.0f} MiB"
            f"   scores (5 kinds) {mib['scores']:.0f} MiB   TL run_with_cache {mib['cache']:.0f} MiB"
        )
        checks.at_most("scores / TL cache memory", mem["scores"] / mem["cache"], 0.1, unit="")
    checks.finish()


if __name__ == "__main__":
    main()
