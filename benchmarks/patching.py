"""Benchmark: exact per-head-per-position patching against TransformerLens, and attribution patching.

1. Exact sweep of every (layer, position, head) head output (``site="z"``) with
   ``circuits.patching.patch`` against ``transformer_lens.patching.
   get_act_patch_attn_head_out_by_pos`` on the same model, prompts and metric, side by side
   in one process; prints both times (wall clock and process CPU time), the speed-up and
   the largest difference between the two results (must be < 1e-4).
   - ``induction-2l``: 8 sequences [BOS] r r (period 16, 33 tokens); corrupt = the second
     copy re-randomised; metric: mean log-prob of the correct next token over the repeated
     half (every position with a label).  TL: 2 x 33 x 4 = 264 forwards.
   - a GPT-2-small-shaped native bridge with random weights (12 layers x 12 heads,
     d_model 768, d_mlp 3072, vocab 50257): 1 sequence of 6 random tokens, corrupt =
     token 1 replaced; metric: logit difference of two fixed tokens at the last position.
     TL: 12 x 6 x 12 = 864 forwards.
   - real sizes, where TransformerLens would take an hour per sweep: it runs on a random
     sample of ``--sample`` cells (default 120) and its time is scaled to all cells (the line
     says "sampled n of N cells"; ``--full`` runs every cell): smollm2-135m on IOI (4 prompts,
     ABB corruption, logit difference; 4050 cells), and a Gemma-3-270M-shaped model with random
     weights built locally (sliding-window and global layers, sandwich norms, q/k norms, per-layer
     rotary; 4 prompts of 15 tokens; 1080 cells).  Target: 50x on both.
2. Attribution patching of the same head x position effects: cost in forward-equivalents
   (its time over one forward with cache of the same batch) and Spearman rank correlation
   of its effects with the exact ones, on ``induction-2l`` (the set-up above) and
   ``recall-2l`` (32 prompts; corrupt = the context key the last query asks for replaced
   by an unused key; metric: log-prob of the answer at the last query).

Cells whose source values equal the base run's (positions before the first corrupted token)
change nothing and get the base value without a forward; the line of each sweep says how many
needed one (the engine alone, on every cell, is about as fast: those cells are few or cheap).

Threads: ``--threads 1`` by default for both sides.  On a shared machine, two threads make
every small op wait for the other thread (milliseconds per op), which slows
TransformerLens's many small forwards far more than our few wide ones and would inflate the
speed-up; one thread measures the work.

    python benchmarks/patching.py             # ~10 minutes on one idle core (nearly all TL's)
    python benchmarks/patching.py --quick     # induction-2l only (~1 minute)
    python benchmarks/patching.py --only-real # smollm2-135m and Gemma-3-shaped only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Checks  # noqa: E402 (after the path is set)

GPT2_SMALL = dict(
    d_model=768,
    d_head=64,
    n_layers=12,
    n_heads=12,
    d_mlp=3072,
    d_vocab=50257,
    n_ctx=64,
    act_fn="gelu_new",
    normalization_type="LN",
)


def timed(fn, repeats: int = 1):
    """``fn()``'s result and its fastest wall-clock and CPU times over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, min(walls), min(cpus)


def induction_setup():
    import interp
    from circuits import corrupt, metrics
    from interp import tasks

    model = interp.load("induction-2l")
    batch = tasks.repeated_tokens(8, d_vocab=64, n_ctx=33, period=16, seed=1)
    corrupted = corrupt.replace_tokens(batch.tokens, range(17, 33), d_vocab=64, low=1, seed=2)
    return model, batch.tokens, corrupted, metrics.from_labels(batch.labels)


def recall_setup():
    import interp
    from circuits import corrupt, metrics
    from interp import tasks

    model = interp.load("recall-2l")
    b = tasks.associative_recall(32, n_pairs=4, d_vocab=128, seed=5)
    clean = b.tokens
    last = int(b.info["query_pos"][0, -1])
    corrupted = corrupt.recall_key_swap(b, d_vocab=128)
    return model, clean, corrupted, metrics.logprob(b.info["answer"][:, -1], pos=last)


def gpt2_setup():
    import torch

    import interp
    from circuits import corrupt, metrics

    torch.manual_seed(0)
    model = interp.load(GPT2_SMALL, name="gpt2-small-shaped")
    clean = torch.randint(0, GPT2_SMALL["d_vocab"], (1, 6), generator=torch.Generator().manual_seed(0))
    corrupted = corrupt.replace_tokens(clean, [1], d_vocab=GPT2_SMALL["d_vocab"], seed=1)
    return model, clean, corrupted, metrics.logit_diff(answer=11, wrong=42, pos=-1)


def exact_vs_tl(name: str, setup, repeats: int, checks, target: float) -> None:
    import torch
    from transformer_lens.patching import get_act_patch_attn_head_out_by_pos

    from circuits.patching import patch
    from interp.runs import run

    model, clean, corrupted, metric = setup()
    resolved = metric.resolve(clean.shape[1])
    # warm-up (also hashes the weights once for the runs' provenance, so the timed runs reuse it)
    run(patch, model, clean, corrupted, site="z", metric=metric, progress=False, layers=[0], positions=[0])
    result, w_ours, c_ours = timed(
        lambda: run(patch, model, clean, corrupted, site="z", metric=metric, progress=False), repeats
    )
    _, clean_cache = model.module.run_with_cache(clean)
    ref, w_tl, c_tl = timed(
        lambda: get_act_patch_attn_head_out_by_pos(
            model.module, corrupted, clean_cache, lambda logits: resolved(logits)
        ),
        repeats,
    )
    ours = result.frame
    idx = tuple(torch.tensor(ours[c].values) for c in ("layer", "pos", "head"))
    diff = (ref[idx] - torch.tensor(ours["value"].values, dtype=ref.dtype)).abs().max().item()
    n = len(ours)
    print(
        f"[exact z by layer x pos x head] {name}: tokens {tuple(clean.shape)}, {n} cells "
        f"({result.meta['cells_run']} differ from the base run and need a forward; best of {repeats}; "
        f"TransformerLens on every cell)"
    )
    print(f"  TransformerLens get_act_patch_attn_head_out_by_pos: {w_tl:8.2f} s wall  {c_tl:8.2f} s cpu")
    print(f"  circuits.patching.patch ({result.meta['engine']}):      {w_ours:8.2f} s wall  {c_ours:8.2f} s cpu")
    checks.at_least(f"{name}: speed-up over TransformerLens (wall)", w_tl / w_ours, target)
    checks.close(f"{name}: values against TransformerLens", diff, 1e-4)


def attribution_check(name: str, setup, checks, min_rho: float) -> None:
    from scipy.stats import spearmanr

    from circuits.attribution import attribute
    from circuits.patching import patch
    from interp.runs import run

    model, clean, corrupted, metric = setup()
    exact_run = run(patch, model, clean, corrupted, site="z", metric=metric, progress=False)
    exact = exact_run.frame
    attribute(model, clean, corrupted, site="z", metric=metric)  # warm-up
    est, w_attr, c_attr = timed(lambda: attribute(model, clean, corrupted, site="z", metric=metric), 7)
    _, w_fwd, c_fwd = timed(lambda: model.run_with_cache(clean), 7)
    rho = spearmanr(exact["effect"], est["effect"]).statistic
    rho_abs = spearmanr(exact["effect"].abs(), est["effect"].abs()).statistic
    print(f"[attribution patching, z by layer x pos x head] {name}: tokens {tuple(clean.shape)}, {len(est)} cells")
    print(
        f"  cost: {w_attr / w_fwd:5.1f} forward-equivalents wall ({c_attr / c_fwd:4.1f} cpu; best of 7) "
        f"[{w_attr * 1e3:.0f} ms vs {w_fwd * 1e3:.0f} ms for one forward with cache]"
    )
    print(
        f"  Spearman with exact patching: {rho:.3f} (signed effects), {rho_abs:.3f} (|effects|); "
        f"clean {exact_run.meta['clean_value']:.3f}, corrupt {exact_run.meta['corrupt_value']:.3f}"
    )
    checks.at_least(f"{name}: attribution's Spearman with exact patching", rho, min_rho, unit="")


def smollm2_setup(device: str):
    """IOI on smollm2-135m: 4 prompts of template 0, ABB corruption, logit difference."""
    import interp
    from interp.tasks.text import ioi

    model = interp.load("smollm2-135m", device=device)
    batch = ioi(model, 4, corruption="ABB", templates=[0], seed=0)
    return model, batch.clean.tokens, batch.corrupt.tokens, batch.metric().resolve(batch.clean.tokens.shape[1])


def gemma3_setup(device: str):
    """A Gemma-3-270M-shaped model (18 layers, d_model 640, 4 query / 1 key-value heads of 256,
    d_mlp 2048, vocab 262144, sliding-window and global layers, sandwich norms, q/k norms,
    per-layer-type rotary) with random weights, built locally; 4 random prompts of 15 tokens,
    token 10 replaced; logit difference of two fixed tokens at the last position."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    import interp
    from circuits import corrupt, metrics

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        sliding_window=512,
        max_position_embeddings=32768,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    hf = Gemma3ForCausalLM(cfg).eval()
    tokenizer = _word_tokenizer(cfg.vocab_size)
    model = interp.load(hf, tokenizer=tokenizer, name="gemma3-270m-shaped", device=device)
    clean = torch.randint(3, cfg.vocab_size, (4, 15), generator=torch.Generator().manual_seed(0))
    corrupted = corrupt.replace_tokens(clean, [10], d_vocab=cfg.vocab_size, low=3, seed=1)
    return model, clean, corrupted, metrics.logit_diff(answer=11, wrong=42, pos=-1).resolve(15)


def _word_tokenizer(n: int):
    """A saved-and-reloaded word-level tokenizer of ``n`` tokens (the bridge needs a tokenizer)."""
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{f"w{i}": i for i in range(3, n)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    folder = tempfile.mkdtemp()
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def sampled_vs_tl(name: str, setup, full: bool, sample: int, checks, target: float) -> None:
    """Our exact sweep against TransformerLens, on every cell with ``--full`` (TL: one forward
    per cell, ~30+ minutes on 2 CPU cores for smollm2) or on a random sample of cells through TL's
    own ``generic_activation_patch``, its time scaled to all cells (TL's cost is one full forward
    per cell, linear in the cells); the printed line says which."""
    import pandas as pd
    import torch
    from transformer_lens.patching import (
        generic_activation_patch,
        get_act_patch_attn_head_out_by_pos,
        layer_pos_head_vector_patch_setter,
    )

    from circuits import sites
    from circuits.patching import patch
    from interp import recompute_blocks
    from interp.recompute import downstream_flops
    from interp.runs import run

    model, clean, corrupted, metric = setup()
    last = clean.shape[1] - 1
    run(
        patch,
        model,
        clean,
        corrupted,
        site="z",
        metric=metric,
        progress=False,
        layers=[model.cfg.n_layers - 1],
        positions=[last],
    )  # warm-up (also hashes the weights once for the runs' provenance)
    result, w_ours, c_ours = timed(
        lambda: run(patch, model, clean, corrupted, site="z", metric=metric, progress=False), 1
    )
    ours = result.frame
    generic = None
    if recompute_blocks.supports(model):  # the hand-written engine ran: time the generic one beside it
        layers, w_gen, c_gen = timed(
            lambda: patch(model, clean, corrupted, site="z", metric=metric, engine="layers", progress=False), 1
        )
        generic = (w_gen, c_gen, float((layers["value"] - ours["value"]).abs().max()))
    _, clean_cache = model.module.run_with_cache(clean)
    fn = lambda logits: metric(logits)
    cells = ours[["layer", "pos", "head"]]
    if full:
        ref, w_tl, c_tl = timed(lambda: get_act_patch_attn_head_out_by_pos(model.module, corrupted, clean_cache, fn), 1)
        idx = tuple(torch.tensor(ours[c].values) for c in ("layer", "pos", "head"))
        diff = (ref[idx].cpu() - torch.tensor(ours["value"].values, dtype=ref.dtype)).abs().max().item()
        how = f"on all {len(cells)} cells"
    else:
        picked = cells.sample(n=min(sample, len(cells)), random_state=0).sort_values(["layer", "pos", "head"])
        got, w_part, c_part = timed(
            lambda: generic_activation_patch(
                model.module,
                corrupted,
                clean_cache,
                fn,
                layer_pos_head_vector_patch_setter,
                "z",
                index_df=pd.DataFrame(picked.values, columns=["layer", "pos", "head_index"]),
            ),
            1,
        )
        mine = ours.set_index(["layer", "pos", "head"]).loc[[tuple(r) for r in picked.values], "value"].values
        diff = (got.cpu().double() - torch.tensor(mine)).abs().max().item()
        w_tl, c_tl = w_part * len(cells) / len(picked), c_part * len(cells) / len(picked)
        how = f"sampled {len(picked)} of {len(cells)} cells ({w_part:.1f} s), scaled to all"
    site = sites.resolve(model, "z")
    first = int((clean != corrupted).any(0).nonzero()[0])  # cells before the first corrupted token change nothing
    cell_list = [c for c in sites.cells(model, site, ("pos", "head"), clean.shape[1]) if c.pos >= first]
    flops = downstream_flops(
        model, cell_list, site, clean.shape[0], metric.read_positions(clean.shape[1]), vocab=len(metric.vocab_needed())
    )
    print(
        f"[exact z by layer x pos x head] {name}, tokens {tuple(clean.shape)}, {len(ours)} cells "
        f"({result.meta['cells_run']} differ from the base run); TransformerLens {how}"
    )
    print(f"  TransformerLens get_act_patch_attn_head_out_by_pos: {w_tl:8.1f} s wall  {c_tl:8.1f} s cpu")
    engine_name = "hand-written blocks" if generic is not None else "the model's own layers"
    print(f"  circuits.patching.patch ({engine_name}):  {w_ours:8.1f} s wall  {c_ours:8.1f} s cpu")
    if generic is not None:
        print(
            f"  circuits.patching.patch (the model's own layers, engine='layers'): {generic[0]:8.1f} s wall  "
            f"{generic[1]:8.1f} s cpu  (max |difference| {generic[2]:.1e}; the block engine is kept where it pays)"
        )
    print(
        f"  floor: {flops / 1e9:.1f} GFLOP downstream of the cells, summed; ours ran at {flops / w_ours / 1e9:.1f} "
        f"GFLOP/s"
    )
    top = ours.reindex(ours["normalised"].abs().sort_values(ascending=False).index).head(5)
    print(
        "  top cells: "
        + "; ".join(f"L{r.layer}H{r.head} at pos {r.pos} ({r.normalised:+.2f})" for r in top.itertuples())
    )
    checks.holds(
        f"{name}: engine {result.meta['engine']} (the downstream-only engine)", result.meta["engine"] == "native"
    )
    checks.at_least(f"{name}: speed-up over TransformerLens (wall)", w_tl / w_ours, target)
    checks.close(f"{name}: values against TransformerLens", diff, 1e-4)


def main() -> None:
    import functools

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    parser.add_argument("--quick", action="store_true", help="induction-2l only")
    parser.add_argument("--full", action="store_true", help="real-size models: run TransformerLens on every cell")
    parser.add_argument("--sample", type=int, default=120, help="real-size models: TL cells measured without --full")
    parser.add_argument("--device", default="cpu", help="device of the real-size comparisons")
    parser.add_argument("--only-real", action="store_true", help="only the smollm2-135m and Gemma-3 comparisons")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    checks = Checks()
    if not args.only_real:
        exact_vs_tl("induction-2l", induction_setup, 3, checks, target=3.0)
        attribution_check("induction-2l", induction_setup, checks, min_rho=0.8)
    if args.quick:
        checks.finish()
        return
    if not args.only_real:
        attribution_check("recall-2l", recall_setup, checks, min_rho=0.8)
        exact_vs_tl("gpt2-small-shaped (random weights)", gpt2_setup, 1, checks, target=10.0)
    for name, setup in (("smollm2-135m IOI (ABB)", smollm2_setup), ("gemma3-270m-shaped", gemma3_setup)):
        sampled_vs_tl(name, functools.partial(setup, args.device), args.full, args.sample, checks, target=50.0)
    checks.finish()


if __name__ == "__main__":
    main()
