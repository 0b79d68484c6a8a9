"""Benchmark: training a TopK sparse autoencoder on smollm2-135m's layer-15 residual stream with
``interp.sae`` and with SAELens, on the same activations, and harvesting them.

1. Harvest: ``--harvest`` tokens of held-out corpus text through the model, stopped at the
   site (``interp.sae.harvest``), against full forwards of the same rows; prints tokens/s of
   each (target: the stopped harvest faster than the full forward).
2. Training: the same store of ``--tokens`` activations (the training split of the corpus; the
   store ``interp sae train`` harvests, reused if it is there), the same kind (TopK), width, k, batch size, learning rate, schedule (5% warm-up, 20%
   decay) and steps, trained by ``interp.sae.fit`` and by SAELens's ``SAETrainer`` with its
   ``TopKTrainingSAE`` (in SAELens's own environment, ``scratch/saelens-venv``, made on first
   use: its TransformerLens pin clashes with ours; fed our shards times our input scale).
   Prints training tokens/s of each (target: ours >= SAELens's).
3. Quality at the same L0 (k): the SAELens SAE is read back with ``interp.sae.saelens.load``
   and both are evaluated by ``interp.sae.evaluate`` on the same held-out text: FVU and CE
   loss recovered (target: our FVU at most SAELens's + 0.01).

    python benchmarks/sae.py            # ~15 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks  # noqa: E402 (after the path is set)

PEER_VENV = ROOT / "scratch" / "saelens-venv"
PEER_PINS = ["torch==2.13.0", "sae-lens==6.54.12"]


def peer_python() -> Path:
    """SAELens's own environment (made once: its pins clash with TransformerLens 4)."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"making SAELens's environment in {PEER_VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        for pin in PEER_PINS:
            subprocess.run([str(python), "-m", "pip", "install", "-q", pin], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument(
        "--tokens", type=int, default=400_000, help="training tokens (the store `interp sae train` makes; reused)"
    )
    parser.add_argument("--harvest", type=int, default=8192, help="tokens for the harvest timing")
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    args = parser.parse_args()
    import torch

    import interp
    from interp import sae
    from interp.sae import saelens
    from interp.sae.evaluate import evaluate
    from interp.sae.text import corpus_tokens
    from interp.sae.train import default_lr, store_path

    torch.set_num_threads(args.threads)
    checks = Checks()
    model = interp.load("smollm2-135m")
    site = model.site("resid_post", args.layer)

    # 1. harvest: stopped at the site vs full forwards of the same rows
    rows = corpus_tokens(model, args.harvest, seq_len=128, split="test")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sae.harvest(model, site, rows, Path(tmp) / "h", batch_size=16, progress=False)
        t_harvest = time.perf_counter() - started
    started = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(rows), 16):
            model.run_with_cache(rows[lo : lo + 16], names=[site])
    t_full = time.perf_counter() - started
    n = rows.numel()
    print(
        f"harvest of {n} tokens at {site}: {n / t_harvest:.0f} tokens/s stopped at the site, "
        f"{n / t_full:.0f} tokens/s with full forwards ({t_full / t_harvest:.2f}x)"
    )
    checks.at_least("harvest: stopped at the site vs full forward", t_full / t_harvest, 1.3)

    # 2. one store of training activations, both trainers
    path = store_path(model, site, None, args.tokens, 128)
    store = sae.harvest(model, site, corpus_tokens(model, args.tokens, seq_len=128), path)
    lr = default_lr(args.width)
    ours = sae.fit(
        store,
        kind="topk",
        width=args.width,
        k=args.k,
        steps=args.steps,
        batch_size=args.batch,
        lr=lr,
        model_name=model.cfg.name,
    )
    scale = ours.cfg.scale
    out = ROOT / "scratch" / "bench-saelens-sae"
    cmd = [
        str(peer_python()),
        str(ROOT / "benchmarks" / "_saelens_peer.py"),
        str(store.path),
        str(out),
        "--scale",
        repr(scale),
        "--width",
        str(args.width),
        "--k",
        str(args.k),
        "--batch",
        str(args.batch),
        "--lr",
        repr(lr),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
        raise SystemExit("the SAELens run failed")
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    theirs = saelens.load(out, model).with_config(scale=scale, out_scale=scale, skip_bos=True)

    # interoperability both ways: SAELens's forward on its own folder and on ours (saved in its
    # format) against ours on the same activations
    x = store.load(2048)
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import load_file, save_file

        mine = saelens.save(ours, Path(tmp) / "ours")
        for name, folder, d, inputs in (("ours", mine, ours, x), ("theirs", out, theirs, x * scale)):
            save_file({"x": inputs.contiguous()}, str(Path(tmp) / "in.safetensors"))
            subprocess.run(
                [
                    str(peer_python()),
                    str(ROOT / "benchmarks" / "_saelens_peer.py"),
                    "recon",
                    str(folder),
                    str(Path(tmp) / "in.safetensors"),
                    str(Path(tmp) / "out.safetensors"),
                ],
                check=True,
                capture_output=True,
            )
            got = load_file(str(Path(tmp) / "out.safetensors"))["x"]
            with torch.no_grad():
                want = d(x) * (scale if name == "theirs" else 1.0)
            rel = float((got - want).abs().max() / want.abs().max())
            checks.close(f"SAELens's forward on {name} dictionary's folder vs interp's (relative)", rel, 1e-5)

    # 3. the same held-out text for both
    held = corpus_tokens(model, args.eval_tokens, seq_len=128, split="test")
    frames = {
        "interp": evaluate(model, ours, held, fit=store.load(65536)),
        "sae-lens": evaluate(model, theirs, held, pca=False),
    }
    ours_row = frames["interp"].set_index("method").loc["dictionary"]
    their_row = frames["sae-lens"].set_index("method").loc["dictionary"]
    pca_row = frames["interp"].set_index("method").loc["pca"]
    tps = {"interp": ours.card["train_tokens_per_second"], "sae-lens": peer["tokens_per_second"]}
    print(
        f"\nTopK SAE at {site}: width {args.width}, k {args.k}, batch {args.batch}, lr {lr:.2e}, "
        f"{args.steps} steps on {store.n_tokens} stored activations ({torch.get_num_threads()} thread(s))"
    )
    print(f"{'':10} {'train tok/s':>12} {'L0':>6} {'FVU':>7} {'CE recovered':>13} {'KL':>7} {'dead':>6}")
    for name, row in (("interp", ours_row), ("sae-lens", their_row)):
        print(
            f"{name:10} {tps[name]:12.0f} {row['l0']:6.1f} {row['fvu']:7.4f} {row['ce_recovered']:13.4f} "
            f"{row['kl']:7.4f} {row['dead']:6.3f}"
        )
    print(
        f"{'pca':10} {'':>12} {pca_row['l0']:6.0f} {pca_row['fvu']:7.4f} {pca_row['ce_recovered']:13.4f} "
        f"{pca_row['kl']:7.4f}"
    )
    print(f"SAELens {peer['sae_lens']}: {peer['seconds']:.1f} s; ours {ours.card['train_seconds']:.1f} s")
    checks.at_least("training tokens/s, interp / SAELens", tps["interp"] / tps["sae-lens"], 1.0)
    checks.holds(
        f"FVU at the same L0: interp {ours_row['fvu']:.4f} <= SAELens {their_row['fvu']:.4f} + 0.01",
        ours_row["fvu"] <= their_row["fvu"] + 0.01,
    )
    checks.holds(
        f"interp beats PCA on FVU ({ours_row['fvu']:.4f} < {pca_row['fvu']:.4f})", ours_row["fvu"] < pca_row["fvu"]
    )
    checks.finish()


if __name__ == "__main__":
    main()
