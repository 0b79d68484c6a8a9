"""Benchmark: the causal indirect effect of every head (Todd et al.'s function vectors) on
smollm2-135m, batched against the per-head loop the library ran before (one patched forward
per head), side by side in one process.

Prompts: 16 antonym prompts ``" x → y\\n" * 5 + " xq →"`` (23 tokens, single-token words,
interp.tasks.text), corrupt twins with the demonstrations' outputs shuffled; the effect is
the rise of P(answer) at the last token when a head's output there is set to its clean mean.

    python benchmarks/function_vectors.py        # ~3 minutes on 2 cores (nearly all the loop's)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks  # noqa: E402 (after the path is set)


def per_head_loop(model, clean, corrupt, answers):
    """The previous implementation: for every head one forward with that head's output at the
    last token replaced by its clean mean."""
    import torch

    from interp import function_vectors as fvs
    from interp import metrics as M

    z_mean = fvs.mean_head_z(model, clean)
    batch = model.tokenize(corrupt)
    metric = M.prob(answers).resolve(batch.tokens.shape[1], batch.lengths)
    out = {}
    for layer, head in model.heads():

        def patch(z, hook, layer=layer, head=head):
            z = z.clone()
            z[torch.arange(len(batch)), batch.last, head] = z_mean[layer, head].to(z.dtype)
            return z

        with torch.no_grad():
            out[(layer, head)] = float(metric(model.run_with_hooks(batch, [(model.site("z", layer), patch)])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import interp
    from interp import function_vectors as fvs
    from interp.tasks import text

    torch.set_num_threads(args.threads)
    model = interp.load("smollm2-135m")
    task = text.function_task(model, "antonym")
    rng = random.Random(0)
    clean, corrupt, answers = [], [], []
    for i in range(16):
        q = task.train[i % len(task.train)]
        demos = rng.sample([p for p in task.train if p != q], 5)
        outs = [y for _, y in demos]
        clean.append("".join(f" {x} → {y}\n" for x, y in demos) + f" {q[0]} →")
        corrupt.append("".join(f" {x} → {y}\n" for (x, _), y in zip(demos, outs[1:] + outs[:1])) + f" {q[0]} →")
        answers.append(model.encode(" " + q[1], prepend_bos=False)[0])
    answers = torch.tensor(answers)
    lengths = model.tokenize(clean).lengths
    t = time.perf_counter()
    effects = fvs.head_indirect_effects(model, clean, corrupt, answers, progress=False)
    t_new = time.perf_counter() - t
    t = time.perf_counter()
    loop = per_head_loop(model, clean, corrupt, answers)
    t_loop = time.perf_counter() - t
    diff = max(abs(loop[(int(r.layer), int(r.head))] - r.p_patched) for r in effects.itertuples())
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); smollm2-135m, 16 prompts of "
        f"{int(lengths.min())}-{int(lengths.max())} tokens, {len(effects)} heads"
    )
    print(f"  per-head loop (one forward per head): {t_loop:7.1f} s")
    print(f"  head_indirect_effects (downstream only): {t_new:5.1f} s")
    print("  top heads: " + ", ".join(f"L{r.layer}H{r.head} ({r.cie:+.4f})" for r in effects.head(6).itertuples()))
    checks = Checks()
    checks.at_least("speed-up over the per-head loop", t_loop / t_new, 10.0)
    checks.at_most("head_indirect_effects", t_new, 20.0)
    checks.close("P(answer) against the per-head loop", diff, 1e-5)
    checks.finish()


if __name__ == "__main__":
    main()
