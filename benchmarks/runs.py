"""The run store's costs beside the plain way of keeping a result.

- What ``interp.runs.run`` adds to an analysis (the provenance: arguments and prompts hashed,
  the model described, versions, commit): head scores on smollm2-135m, with and without it.
- Hashing a model folder's weights the first time (then cached by path, size and mtime).
- Saving a 100,000-row frame atomically with its catalog row (temp folder, fsync, rename, a
  DuckDB update under a lock) against ``DataFrame.to_parquet`` + ``json.dump`` of the meta (the
  peer: what a script would do, with no atomicity, no catalog, no provenance); loading it back
  against ``pandas.read_parquet``; listing and querying a store of 100 runs.

Run: ``python benchmarks/runs.py`` (a temporary store; nothing is left behind).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks, best_of  # noqa: E402 (after the path is set)


def main() -> None:
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(2)
    store = tempfile.mkdtemp(prefix="interp-bench-runs-")
    os.environ["INTERP_RUNS"] = store
    import interp
    from interp import heads, runs
    from interp.runs import provenance

    checks = Checks()
    try:
        model = interp.load("smollm2-135m")
        tokens = heads.default_tokens(model, n=2, length=128, seed=0)
        kinds = ["previous_token", "induction"]
        runs.run(heads.scores, model, tokens, kinds)  # warm-up
        plain, t_plain = best_of(lambda: heads.scores(model, tokens, kinds), 3)
        result, t_run = best_of(lambda: runs.run(heads.scores, model, tokens, kinds), 3)
        print(f"[provenance] head scores on smollm2-135m, tokens {tuple(tokens.shape)}")
        print(f"  heads.scores:            {t_plain:7.3f} s")
        print(f"  runs.run(heads.scores):  {t_run:7.3f} s  (+{(t_run - t_plain) * 1e3:.0f} ms)")
        checks.close("runs.run gives the plain call's frame", float((result.frame.score - plain.score).abs().max()), 0)
        checks.holds("the provenance is complete", result.provenance.missing() == [])
        # the difference of two timings of a seconds-long analysis is noise on a busy machine: time
        # what runs.run adds, the capture, on its own
        _, t_capture = best_of(lambda: provenance.Provenance.capture(heads.scores, (model, tokens, kinds)), 10)
        print(
            f"  of which the provenance:  {t_capture * 1e3:7.1f} ms ({100 * t_capture / t_plain:.2f}% of the analysis)"
        )
        checks.at_most("provenance capture (s)", t_capture, 0.05)

        from interp.zoo import real

        folder = real.folder_of("smollm2-135m")
        weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if weights:
            cache = provenance._hash_cache_path()
            saved_cache = cache.read_text() if cache.is_file() else None
            cache.unlink(missing_ok=True)
            try:
                _, cold = best_of(lambda: provenance.file_sha256(weights[0]), 1)
                _, warm = best_of(lambda: provenance.file_sha256(weights[0]), 3)
            finally:
                if saved_cache is not None:
                    cache.write_text(saved_cache)
            mb = weights[0].stat().st_size / 2**20
            print(
                f"[weights hash] {weights[0].name} ({mb:.0f} MB): first {cold:.2f} s, then {warm * 1e3:.1f} ms (cached)"
            )
            checks.at_most("cached weights hash (s)", warm, 0.05)

        rng = np.random.default_rng(0)
        n = 100_000
        frame = pd.DataFrame(
            {
                "layer": rng.integers(0, 30, n),
                "pos": rng.integers(0, 64, n),
                "head": rng.integers(0, 9, n),
                "value": rng.normal(size=n),
                "effect": rng.normal(size=n),
                "normalised": rng.normal(size=n),
            }
        )
        big = runs.run(lambda: frame)
        peer_dir = Path(tempfile.mkdtemp(prefix="interp-bench-peer-"))

        def peer_save() -> None:
            frame.to_parquet(peer_dir / "frame.parquet")
            (peer_dir / "meta.json").write_text(json.dumps(big.meta))

        _, t_peer = best_of(peer_save, 5)
        ids: list[str] = []
        _, t_save = best_of(lambda: ids.append(runs.save(big)), 5)
        _, t_peer_load = best_of(lambda: pd.read_parquet(peer_dir / "frame.parquet"), 5)
        back, t_load = best_of(lambda: runs.load(ids[-1]), 5)
        shutil.rmtree(peer_dir, ignore_errors=True)
        print(f"[save / load] a frame of {n} rows x {frame.shape[1]} columns")
        print(f"  to_parquet + json.dump (no atomicity, catalog or provenance): {t_peer * 1e3:7.1f} ms")
        print(f"  runs.save (fsynced, renamed into place, catalog row):         {t_save * 1e3:7.1f} ms")
        print(f"  pandas.read_parquet:                                           {t_peer_load * 1e3:7.1f} ms")
        print(f"  runs.load (frame, meta, provenance):                           {t_load * 1e3:7.1f} ms")
        checks.close("the loaded frame equals the saved one", float((back.frame - frame).abs().max().max()), 0)
        checks.at_most("runs.save of 100k rows (s)", t_save, 1.0)
        checks.at_most("runs.load of 100k rows (s)", t_load, 0.5)

        small = runs.run(lambda i: pd.DataFrame({"layer": range(8), "value": np.arange(8) * i}), 1)
        while len(runs.list(limit=500)) < 100:
            runs.save(small)
        listed, t_list = best_of(lambda: runs.list(limit=500), 5)
        counted, t_sql = best_of(lambda: runs.sql("SELECT count(*) AS n FROM frames()"), 3)
        print(f"[catalog] {len(listed)} runs: list {t_list * 1e3:.0f} ms; SQL over every frame {t_sql * 1e3:.0f} ms")
        checks.holds("SQL sees every run's rows", int(counted["n"].iloc[0]) == 5 * n + (len(listed) - 5) * 8)
        checks.at_most("runs.list of 100 runs (s)", t_list, 0.5)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
