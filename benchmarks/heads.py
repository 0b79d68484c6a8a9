"""Benchmark: ``interp.heads.scores`` against one plain forward (time) and against
TransformerLens's full ``run_with_cache`` (peak memory).

Model: a GPT-2-small-shaped native TransformerBridge with random weights (12 layers x 12
heads, d_model 768, d_mlp 3072, vocab 50257, LayerNorm), nothing downloaded.  Input: one
[BOS] r r sequence of 2048 tokens (batch 1), all pattern kinds (previous_token,
duplicate_token, induction, prefix_matching, sink).

Time: forward and scores run alternately ``--repeats`` times in one process (no grad,
after one warm-up each); the ratio of the medians is printed for wall-clock time and for
the process's CPU time (steadier when other jobs share the cores).

Memory: each measured operation runs in a fresh child process that builds the model,
resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``), notes its RSS,
runs the operation once and reads the peak (``VmHWM``).  The delta is the operation's peak
extra memory.  glibc is told to serve every allocation above 64 KiB by mmap
(``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave RSS at once and the counter sees
live memory, not allocator caches.  Where ``clear_refs`` is not writable the child
falls back to the peak since process start minus the RSS after building the model.

    python benchmarks/heads.py            # about 3 minutes on 2 idle cores (longer when shared)
    python benchmarks/heads.py --pos 512  # quicker
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

GPT2_SMALL = dict(
    d_model=768, d_head=64, n_layers=12, n_heads=12, d_mlp=3072, d_vocab=50257, act_fn="gelu", normalization_type="LN"
)


def build(pos: int):
    import torch

    import interp
    from interp import heads

    torch.manual_seed(0)
    model = interp.load(dict(GPT2_SMALL, n_ctx=pos), name="gpt2-small-shaped")
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
            [sys.executable, __file__, "--child", op, "--pos", str(pos)],
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


def measure_time(pos: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU (process) seconds of each run; CPU time is steadier on shared cores."""
    import torch

    from interp import heads

    torch.set_grad_enabled(False)
    model, tokens = build(pos)
    ops = {"forward": lambda: model.module(tokens), "scores": lambda: heads.scores(model, tokens, heads.PATTERN_KINDS)}
    for op in ops.values():  # warm-up (allocator, kernels)
        op()
    times = {clock: {name: [] for name in ops} for clock in ("wall", "cpu")}
    for _ in range(repeats):  # interleaved: shared cores drift
        for name, op in ops.items():
            w, c = time.perf_counter(), time.process_time()
            op()
            times["wall"][name].append(time.perf_counter() - w)
            times["cpu"][name].append(time.process_time() - c)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pos", type=int, default=2048, help="sequence length (default 2048)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--skip-memory", action="store_true", help="time only")
    ap.add_argument("--child", choices=["forward", "scores", "cache"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.pos)
        return
    print(
        f"GPT-2-small-shaped random bridge (12 layers x 12 heads, d_model 768), 1 x {args.pos} tokens, "
        f"{args.threads} threads"
    )
    times = measure_time(args.pos, args.repeats)
    for clock in ("wall", "cpu"):
        fwd, sc = statistics.median(times[clock]["forward"]), statistics.median(times[clock]["scores"])
        print(
            f"time ({clock:4}, median of {args.repeats})  forward {fwd:.2f} s   scores (5 kinds) {sc:.2f} s   "
            f"ratio {sc / fwd:.2f}x  (target < 1.5x)"
        )
    if not args.skip_memory:
        mem = measure_memory(args.pos, args.threads)
        mib = {k: v / 2**20 for k, v in mem.items() if k != "method"}
        print(
            f"memory peak extra RSS ({mem['method']}): forward {mib['forward']:.0f} MiB   scores {mib['scores']:.0f} MiB"
            f"   TL run_with_cache {mib['cache']:.0f} MiB   scores / cache {mem['scores'] / mem['cache']:.3f}"
        )


if __name__ == "__main__":
    main()
