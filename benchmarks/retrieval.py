"""Benchmark: retrieval-head analysis with a key-value cache, against plain cached greedy
generation of the same tokens and against recomputing the prompt at every step.

Model: smollm2-135m (fetched into the cache on first use).  Prompts: 12 passkey prompts
of 276 tokens (interp.tasks.text.passkey), decoded for the answer's 6 tokens.

1. ``interp.decoding.greedy`` with the cache (the prompt runs once, then one token a step);
2. ``interp.retrieval.retrieval_analysis`` with the cache (the same decoding, plus reading
   every head's attention row of the new token at each step);
3. the same analysis without the cache (the whole sequence recomputed at every step, as the
   library decoded before).

Prints each time (best of ``--repeats``), the ratios 2/1 (target <= 2) and 3/2, and checks
that cached and uncached runs give identical tokens and scores.  With ``n`` decoding steps,
recomputing costs about ``n`` prompt forwards against about one with the cache, so 3/2 is
bounded by roughly the number of steps (6 here).  Last, Wu et al.'s whole experiment
(scores, then query-masking the top 5 and 3 x 5 random heads) with the cache, beside the
105 s the issue measured for it with the library of that time (recomputing every step).

    python benchmarks/retrieval.py            # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import best_of  # noqa: E402 (after the path is set)

#: Wu et al.'s experiment on these 12 prompts with the library before the key-value cache
#: (recomputing every step), as measured in the issue that asked for the cache
TODAY_S = 105.0


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
    print(
        f"  retrieval analysis, cached:         {t_cached:7.2f} s   ({t_cached / t_plain:.2f}x generation; target <= 2)"
    )
    print(
        f"  retrieval analysis, recomputing:    {t_uncached:7.2f} s   ({t_uncached / t_cached:.1f}x the cached "
        f"analysis; bounded by about the {steps} steps)"
    )
    experiment, t_exp = best_of(
        lambda: retrieval.retrieval_experiment(model, task, k=5, n_random=3, batch_size=args.prompts, progress=False),
        1,
    )
    masked = experiment.masking.set_index("condition")["value"]
    print(
        f"  Wu et al.'s experiment, cached:      {t_exp:7.2f} s   ({TODAY_S / t_exp:.1f}x less than the {TODAY_S:.0f} s "
        f"measured before the cache; target >= 10); accuracy clean {masked['clean']:.2f}, top-5 masked "
        f"{masked['target']:.2f}, random {experiment.masking[experiment.masking.condition == 'random'].value.tolist()}"
    )
    print(f"  cached and recomputed decoding give identical tokens and attended positions: {same}")
    print("  top retrieval heads: " + ", ".join(f"L{l}H{h}" for l, h in cached.heads[:5]))


if __name__ == "__main__":
    main()
