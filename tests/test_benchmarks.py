"""The benchmarks fail when they should: a missed speed target (here made impossible with
``INTERP_BENCH_TARGET_SCALE``) gives a ``FAIL`` line and exit status 1 while equality checks
still pass, and ``make bench`` stops at the first benchmark that fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_missed_target_fails_the_benchmark_and_make_bench_stops_there():
    env = {**os.environ, "INTERP_BENCH_TARGET_SCALE": "1e9", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    res = subprocess.run(
        ["make", "bench", "BENCH=benchmarks/patching.py benchmarks/heads.py", "BENCH_ARGS=--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "FAIL: induction-2l: speed-up over TransformerLens" in out, out[-3000:]
    assert "PASS: induction-2l: values against TransformerLens" in out  # equality checks are not scaled
    assert "check(s) failed" in out
    assert "GPT-2-small-shaped random bridge" not in out  # make stopped: heads.py never ran
