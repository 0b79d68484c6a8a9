"""The SAELens side of ``benchmarks/sae.py``, run in SAELens's own environment (its
TransformerLens pin clashes with ours): trains SAELens's TopK SAE with its own trainer on the
activations of one of our stores (its safetensors shards, multiplied by the same input scale
our trainer uses), saves it in the SAELens format, and prints one JSON line with the timing.

    python benchmarks/_saelens_peer.py STORE OUT --scale S --width W --k K --batch B --lr LR --steps N --seed SEED
    python benchmarks/_saelens_peer.py recon FOLDER INPUTS.safetensors OUTPUT.safetensors   # SAELens's forward
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def reconstruct(folder: str, inputs: str, output: str) -> None:
    """SAELens's own loader and forward on a saved folder: ``inputs`` -> ``output`` (safetensors "x")."""
    from sae_lens import SAE
    from safetensors.torch import save_file

    sae = SAE.load_from_disk(folder)
    x = load_file(inputs)["x"]
    with torch.no_grad():
        save_file({"x": sae(x).contiguous()}, output)


def main() -> None:
    if sys.argv[1:2] == ["recon"]:
        reconstruct(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--scale", type=float, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    import sae_lens
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig

    store = Path(a.store)
    meta = json.loads((store / "store.json").read_text())
    acts = torch.cat([load_file(str(store / s["file"]))["acts"].float() for s in meta["shards"]]) * a.scale
    g = torch.Generator().manual_seed(a.seed)

    def batches():
        while True:
            perm = torch.randperm(len(acts), generator=g)
            for start in range(0, len(acts) - a.batch + 1, a.batch):
                yield acts[perm[start : start + a.batch]]

    cfg = TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=a.width, k=a.k, dtype="float32", device="cpu")
    sae = TopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=a.steps * a.batch,
        train_batch_size_samples=a.batch,
        lr=a.lr,
        lr_end=0.0,  # decays to 0, as ours
        lr_warm_up_steps=max(1, a.steps // 20),
        lr_decay_steps=max(1, a.steps // 5),
        device="cpu",
        # a latent is dead after a quarter of the run without firing, as in interp.sae.fit (SAELens's
        # default, 1000 steps, would never revive one in a short run)
        dead_feature_window=max(1, a.steps // 4),
        feature_sampling_window=max(1, a.steps // 4),
        n_checkpoints=0,
        save_final_checkpoint=False,
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches())
    started = time.perf_counter()
    trained = trainer.fit()
    seconds = time.perf_counter() - started
    trained.cfg.metadata.hook_name = meta["site"]
    trained.cfg.metadata.model_name = meta["model"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trained.save_inference_model(out)  # SAELens's own inference format
    print(
        json.dumps(
            {
                "seconds": seconds,
                "tokens": a.steps * a.batch,
                "tokens_per_second": a.steps * a.batch / seconds,
                "sae_lens": sae_lens.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
