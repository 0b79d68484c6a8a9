"""Benchmark: retrieval-head analysis with a key-value cache, against plain cached greedy
generation of the same tokens and against recomputing the prompt at every step, side by
side in one process.

Model: smollm2-135m (fetched into the cache on first use).  Prompts: 12 passkey prompts
of 276 tokens (interp.tasks.text.passkey), decoded for the answer's 6 tokens.

1. ``interp.decoding.greedy`` with the cache (the prompt runs once, then one token a step);
2. ``interp.retrieval.retrieval_analysis`` with the cache (the same decoding, plus reading
   every head's attention row of the new token at each step);
3. the same analysis without the cache (the whole sequence recomputed at every step).
4. Wu et al.'s whole experiment (scores, then query-masking the top 5 and 3 x 5 random
   heads), with the cache and with the model's cache switched off (every step recomputes
   the prompt, as the library did before it had a cache).

Checks: 2/1 <= 2; 3/2 >= 2 and 4 uncached / cached >= 3 (with ``n`` decoding steps,
recomputing costs about ``n`` prompt forwards against one, so these ratios are bounded by
about the 6 steps); cached and recomputed runs give identical tokens, attended positions and
masking results.

    python benchmarks/retrieval.py            # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks, best_of  # noqa: E402 (after the path is set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    import interp
    from interp import decoding, retrieval
    from interp.tasks import text

    torch.set_num_threads(args.threads)
    model = interp.load("smollm2-135m")
    task = text.passkey(model, args.prompts, context_length=276, seed=0)
    steps = int((task.info["needle_span"][:, 1] - task.info["needle_span"][:, 0]).max())
    batch = task.batch()
    plain, t_plain = best_of(lambda: decoding.greedy(model, batch, steps, batch_size=args.prompts), args.repeats)
    cached, t_cached = best_of(
        lambda: retrieval.retrieval_analysis(model, task, batch_size=args.prompts, progress=False), args.repeats
    )
    g1, a1 = retrieval.decode_attention(model, batch, steps, batch_size=args.prompts, use_cache=True, progress=False)

    def uncached():
        return retrieval.decode_attention(model, batch, steps, batch_size=args.prompts, use_cache=False, progress=False)

    (g2, a2), t_uncached = best_of(uncached, 1)
    same = bool(torch.equal(g1, g2) and torch.equal(a1, a2) and torch.equal(plain, g1))
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); smollm2-135m, {args.prompts} passkey prompts of "
        f"{batch.tokens.shape[1]} tokens, {steps} decoding steps; accuracy {cached.accuracy:.2f}"
    )
    print(f"  cached greedy generation:           {t_plain:7.2f} s")
    print(f"  retrieval analysis, cached:         {t_cached:7.2f} s")
    print(f"  retrieval analysis, recomputing:    {t_uncached:7.2f} s   (bounded by about the {steps} steps)")
    checks = Checks()
    checks.at_most("cached analysis / generation", t_cached / t_plain, 2.0, unit="x")
    checks.at_least("recomputing / cached analysis", t_uncached / t_cached, 2.0)

    def experiment():
        return retrieval.retrieval_experiment(model, task, k=5, n_random=3, batch_size=args.prompts, progress=False)

    cached_exp, t_exp = best_of(experiment, 1)
    model.backend.supports_cache = False  # the same experiment, every step recomputing the prompt
    try:
        plain_exp, t_plain_exp = best_of(experiment, 1)
    finally:
        model.backend.supports_cache = True
    masked = cached_exp.masking.set_index("condition")["value"]
    print(
        f"  Wu et al.'s experiment, cached:      {t_exp:7.2f} s;  recomputing every step: {t_plain_exp:7.2f} s; "
        f"accuracy clean {masked['clean']:.2f}, top-5 masked {masked['target']:.2f}, random "
        f"{cached_exp.masking[cached_exp.masking.condition == 'random'].value.tolist()}"
    )
    checks.at_least("Wu et al.'s experiment, recomputing / cached", t_plain_exp / t_exp, 3.0)
    checks.holds("cached and recomputed decoding give identical tokens and attended positions", same)
    checks.holds(
        "cached and recomputed experiments give the same heads and masking results",
        cached_exp.heads == plain_exp.heads
        and cached_exp.masking["value"].tolist() == plain_exp.masking["value"].tolist(),
    )
    print("  top retrieval heads: " + ", ".join(f"L{l}H{h}" for l, h in cached.heads[:5]))
    checks.finish()


if __name__ == "__main__":
    main()
