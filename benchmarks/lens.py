"""Benchmark: the logit lens against TransformerLens's, and the tuned lens on smollm2-135m.

1. The logit lens of one 20-token prompt (every layer's residual through the recomputed
   final norm and the unembedding): ``interp.lens.logit_lens`` against TransformerLens's
   ``accumulated_resid`` + ``apply_ln_to_stack(recompute_ln=True)`` + unembedding on the same
   bridge, timed best of ``--repeats``; prints the ratio and the largest difference of the
   target's log-probability.
2. The tuned lens (Belrose et al. 2023): trained on ``--train`` x 129 tokens smollm2 writes
   itself (seed 0), ``--steps`` Adam steps of 128 positions; prints the training time
   (target: under 10 minutes on 2 cores) and held-out KL(final || lens) per layer for the
   logit and the tuned lens on ``--held`` other generated sequences (target: tuned below
   logit at every layer but the last, where both are 0).

    python benchmarks/lens.py            # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks, best_of  # noqa: E402 (after the path is set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=8, help="generated training sequences")
    parser.add_argument("--held", type=int, default=4, help="generated held-out sequences")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    import torch

    import interp
    from interp.lens import lens_kl, logit_lens, train_tuned_lens
    from interp.tasks.text import generated_text

    torch.set_num_threads(args.threads)
    model = interp.load("smollm2-135m")
    prompt = "When Mary and John went to the store, John gave a drink to Mary. Then Mary and"
    batch = model.tokenize(prompt)
    target = model.token_id(" John")

    def theirs():
        with torch.no_grad():
            _, cache = model.module.run_with_cache(batch.tokens)
            stack = cache.apply_ln_to_stack(cache.accumulated_resid(), recompute_ln=True)
            return (stack @ model.module.W_U + model.module.b_U).log_softmax(-1)[:, 0, :, target]

    ours, t_ours = best_of(lambda: logit_lens(model, batch, target=target, stage="pre", k=5), args.repeats)
    tl, t_tl = best_of(theirs, args.repeats)
    top = ours[ours["rank_k"] == 1].pivot(index="layer", columns="pos", values="target_logprob")
    diff = float((torch.tensor(top.to_numpy()) - tl.double()).abs().max())
    print(f"logit lens, {int(batch.lengths[0])} tokens x {len(top)} readings (pre stages + final):")
    print(f"  interp.lens.logit_lens (top-5 frame + target): {t_ours:.3f} s")
    print(f"  TransformerLens accumulated_resid + apply_ln_to_stack + unembed: {t_tl:.3f} s")
    checks = Checks()
    checks.at_least("TL / ours", t_tl / t_ours, 0.8)  # ours also builds the top-k frame
    checks.close("target log-prob against TL", diff, 1e-4)

    t = time.perf_counter()
    text = generated_text(model, n=args.train + args.held, length=129, seed=0)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    lens = train_tuned_lens(model, text[: args.train], steps=args.steps, progress=True)
    t_train = time.perf_counter() - t
    held = text[args.train :]
    start = train_tuned_lens(model, text[: args.train], steps=0, progress=False)  # its least-squares start
    plain, tuned = lens_kl(model, held), lens_kl(model, held, lens=lens)
    from_start = lens_kl(model, held, lens=start)
    print(
        f"\ntuned lens: generated {tuple(text.shape)} tokens in {t_gen:.1f} s; trained {args.steps} steps on "
        f"{args.train} x 129 tokens in {t_train:.1f} s (target < 600 s)"
    )
    print("held-out KL(final || lens), nats:")
    table = plain.rename(columns={"kl": "logit_lens"}).assign(tuned_lens=tuned["kl"])
    print(table.round(3).to_string(index=False))
    inner = table["layer"] < table["layer"].max()
    checks.holds(
        "tuned lens below the logit lens at every layer but the last",
        bool((table["tuned_lens"][inner] < table["logit_lens"][inner]).all()),
    )
    mean_start, mean_tuned = float(from_start["kl"][inner].mean()), float(tuned["kl"][inner].mean())
    checks.holds(
        f"training improves on the least-squares start on held-out text (mean KL {mean_start:.3f} -> {mean_tuned:.3f})",
        mean_tuned < mean_start,
    )
    checks.at_most("tuned-lens training", t_train, 600)
    checks.finish()


if __name__ == "__main__":
    main()
