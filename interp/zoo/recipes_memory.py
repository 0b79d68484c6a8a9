"""Recipes of the memory models (issue 25): where facts are stored (a transformer and a Mamba on
the same synthetic facts), the recall gap (attention against fixed-state models at three state
sizes), flip-flop glitches (a transformer and an LSTM on Liu et al.'s format), a character-level LSTM on
Python sources, and the induction model trained with log-spaced checkpoints.

Each is sized to train on 2 shared CPU cores in seconds to a few minutes; the cards record what
each model reached.  The recall-gap models and the induction checkpoints ship in sub-folders of
``weights/`` (``gap/``, ``checkpoints/``), so ``interp zoo`` lists only the models one explores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from interp import tasks
from interp.tasks import TaskBatch
from interp.tasks.synthetic import FactWorld, sro_facts
from interp.zoo.recipes import EVAL_SEED, Recipe, _induction_batch, _induction_eval, named_vocab

# --- facts-2l / facts-mamba: the same synthetic facts --------------------------------------
WORLD = FactWorld()


def _facts_batch(n: int, seed: int) -> TaskBatch:
    return sro_facts(n, world=WORLD, seed=seed)


def _facts_eval(model) -> dict:
    batch = sro_facts(None, world=WORLD)  # every fact: the task is to store them
    logits = model(batch.tokens)
    return {"accuracy": batch.accuracy(logits), "loss": float(batch.loss(logits))}


FACTS_VOCAB = named_vocab(WORLD.names)

# --- flip-flop (Liu et al. 2023): their format FFL (every instruction carries a bit) ---------
FLIPFLOP_LENGTH = 128  # tokens: 64 instruction-bit pairs (Liu et al. use 512)
FLIPFLOP_TRAIN_P_IGNORE = 0.8  # FFL(0.8), the paper's training distribution


def _flipflop_batch(n: int, seed: int) -> TaskBatch:
    return tasks.flip_flop_ffl(n, length=FLIPFLOP_LENGTH, p_ignore=FLIPFLOP_TRAIN_P_IGNORE, seed=seed)


FLIPFLOP_SPLITS = {"in-distribution": 0.8, "dense": 0.1, "sparse": 0.98}


def flipflop_splits(n: int | dict[str, int] = 2000, seed: int = EVAL_SEED) -> dict[str, TaskBatch]:
    """Liu et al.'s test splits at our length, in their format (:func:`interp.tasks.flip_flop_ffl`):
    in-distribution FFL(0.8), dense FFL(0.1) and sparse FFL(0.98).  n: sequences per split, or
    ``{split: sequences}``."""
    counts = n if isinstance(n, dict) else dict.fromkeys(FLIPFLOP_SPLITS, n)
    return {
        name: tasks.flip_flop_ffl(counts[name], length=FLIPFLOP_LENGTH, p_ignore=p, seed=seed + i)
        for i, (name, p) in enumerate(FLIPFLOP_SPLITS.items())
    }


def _flipflop_eval(model) -> dict:
    out = {}
    for name, batch in flipflop_splits(1000).items():
        out[f"error_{name}"] = 1.0 - batch.accuracy(model(batch.tokens))
    out["accuracy"] = 1.0 - out["error_in-distribution"]
    return out


FFL_TRAINING: dict[str, Any] = dict(
    vocab=named_vocab(tasks.FFL_VOCAB, bos=None),
    task="flip_flop_ffl",
    make_batch=_flipflop_batch,
    evaluate=_flipflop_eval,
    metric="accuracy",
    threshold=0.99,
)


# --- code-lstm: a character-level LSTM on Python sources (Karpathy et al. 2015) ----------
CODE_LENGTH = 128


def _code_batch(n: int, seed: int) -> TaskBatch:
    from interp.tasks.text import code

    rows, _ = code.corpus(code.TRAIN_FILES).windows(n, CODE_LENGTH, seed=seed)
    batch = TaskBatch(rows, torch.empty(0))
    batch.labels = batch.next_token_labels()
    return batch


def _code_eval(model) -> dict:
    import math

    from interp.tasks.text import code

    held = code.corpus(code.HELDOUT_FILES)
    rows, _ = held.windows(64, 256, seed=EVAL_SEED)
    train_rows, _ = code.corpus(code.TRAIN_FILES).windows(64, 256, seed=EVAL_SEED)
    out = {}
    for name, r in (("heldout", rows), ("train", train_rows)):
        batch = TaskBatch(r, torch.empty(0))
        batch.labels = batch.next_token_labels()
        out[f"{name}_bpc"] = float(batch.loss(model(r))) / math.log(2)
    return out


CODE_NOTES = (
    "text: 49 modules (3.0 MB) of the CPython 3.11.7 standard library (Python Software Foundation License "
    "Version 2), file list and sha256 pinned in interp.tasks.text.code; held out: textwrap.py, shlex.py; "
    "windows of 127 characters after BOS"
)


def code_vocab() -> dict:
    from interp.tasks.text import code

    return {"names": list(code.CHARS), "bos": 0, "kind": "chars"}


# --- the recall gap (Arora et al. 2023, Zoology's multi-query associative recall) ---------
#: keys 2..17, values 18..35; one filler token between the pairs and the queries; 12 queries (drawn with replacement: many labels a row)
GAP_TASK = dict(d_vocab=36, n_filler=1, n_queries=12)
GAP_PAIRS = (1, 2, 4, 8)  # the x axis; training draws 1..8 pairs, a different count each step
GAP_MAX_PAIRS = 8


def gap_batch(n: int, seed: int, n_pairs: int | None = None) -> TaskBatch:
    """A recall-gap batch: ``n_pairs`` key-value pairs (default: 1..8 by seed, so training sees
    every count), a filler token, then 12 queries each followed by its value."""
    pairs = 1 + seed % GAP_MAX_PAIRS if n_pairs is None else n_pairs
    return tasks.associative_recall(n, n_pairs=pairs, seed=seed, **GAP_TASK)


def gap_curriculum(n: int, seed: int, done: float) -> TaskBatch:
    """Growing difficulty for the fixed-state models: the largest pair count grows from 2 to 8
    over the first 60% of training (a fixed state must first learn to bind one pair to its key),
    each step drawing its count uniformly up to that."""
    top = min(GAP_MAX_PAIRS, 2 + int(done / 0.6 * (GAP_MAX_PAIRS - 1)))
    return gap_batch(n, seed, 1 + (seed // 7) % top)


def gap_eval(model, n: int = 256) -> dict:
    out = {}
    for p in GAP_PAIRS:
        batch = gap_batch(n, EVAL_SEED + p, p)
        out[f"accuracy_{p}"] = batch.accuracy(model(batch.tokens))
    out["mean_accuracy"] = sum(out[f"accuracy_{p}"] for p in GAP_PAIRS) / len(GAP_PAIRS)
    return out


GAP_N_CTX = 1 + 2 * GAP_MAX_PAIRS + 1 + 2 * GAP_TASK["n_queries"]


def gap_vocab() -> dict:
    from interp.zoo.recipes import recall_vocab

    return recall_vocab(GAP_TASK["d_vocab"])


#: family -> (the three sizes, what the size is, floats of state a size carries at the last position).
#: Attention's "state" is its KV cache (2 layers x K and V x d_model x the GAP_N_CTX positions); an
#: LSTM carries h and c, a GRU h; the selective SSM and Mamba carry, in each of their 2 layers, the
#: d_inner x N scan state plus the d_inner x (d_conv - 1) window of their causal convolution
#: (d_inner = 2 x 16, d_conv = 4), as Zoology counts a recurrent model's state.
GAP_FAMILIES: dict[str, tuple[tuple[int, ...], str, Callable[[int], int]]] = {
    "attention": ((16, 32, 64), "d_model", lambda d: 2 * 2 * d * GAP_N_CTX),
    "lstm": ((16, 32, 64), "hidden units", lambda d: 2 * d),
    "gru": ((16, 32, 64), "hidden units", lambda d: d),
    "ssm": ((2, 8, 32), "state size N (d_model 16, expand 2)", lambda n: 2 * 32 * (n + 3)),
    "mamba": ((2, 8, 32), "state size N (hidden 16, expand 2)", lambda n: 2 * 32 * (n + 3)),
}


def gap_state_floats(family: str, size: int) -> int:
    """Floats of recurrent state (attention: KV cache) of recall-gap model ``gap-{family}-{size}``."""
    return int(GAP_FAMILIES[family][2](size))


def _gap_recipe(family: str, size: int) -> Recipe:
    common: dict[str, Any] = dict(
        vocab=gap_vocab(),
        task="associative_recall",
        make_batch=gap_batch,
        evaluate=gap_eval,
        metric="mean_accuracy",
        threshold=0.0,  # the recall gap is measured, not required: the card records what each reached
        batch_size=64,
        weight_decay=0.0,
        warmup=100,
        notes=f"recall gap: {GAP_FAMILIES[family][1]} = {size}",
        extra={
            "family": family,
            "size": size,
            "state_floats": gap_state_floats(family, size),
            "curriculum": None if family == "attention" else "gap_curriculum (largest pair count 2 -> 8 over 60%)",
        },
        # the fixed-state models start on 1-2 pairs (see gap_curriculum); attention needs no help
        curriculum=None if family == "attention" else gap_curriculum,
    )
    name = f"gap-{family}-{size}"
    v = GAP_TASK["d_vocab"]
    if family == "attention":
        return Recipe(
            name=name,
            description=f"2-layer transformer (d_model {size}, 2 heads) on multi-query associative recall, 1-8 pairs",
            arch="bridge",
            config=dict(
                d_model=size,
                d_head=size // 2,
                n_layers=2,
                n_heads=2,
                d_mlp=2 * size,
                n_ctx=GAP_N_CTX,
                d_vocab=v,
                normalization_type="LN",
                act_fn="gelu",
            ),
            steps=1500,
            lr=3e-3,
            **common,
        )
    if family in ("lstm", "gru"):
        return Recipe(
            name=name,
            description=f"1-layer {family.upper()} ({size} units) on multi-query associative recall, 1-8 pairs",
            arch="recurrent",
            config=dict(cell=family, d_vocab=v, d_model=size, n_layers=1, n_ctx=GAP_N_CTX),
            steps=3000,
            lr=3e-3,
            **common,
        )
    if family == "ssm":
        return Recipe(
            name=name,
            description=f"2-layer selective SSM (d_model 16, state {size}) on multi-query associative recall, 1-8 pairs",
            arch="recurrent",
            config=dict(cell="ssm", d_vocab=v, d_model=16, n_layers=2, n_ctx=GAP_N_CTX, d_state=size, expand=2),
            steps=1500,
            lr=3e-3,
            **common,
        )
    return Recipe(
        name=name,
        description=f"2-layer Mamba (transformers' MambaConfig: hidden 16, state {size}) on multi-query "
        "associative recall, 1-8 pairs",
        arch="hf",
        config=_mamba_config(vocab_size=v, hidden_size=16, state_size=size, num_hidden_layers=2),
        steps=1000,
        lr=3e-3,
        **common,
    )


def _mamba_config(**fields) -> dict:
    """A ``MambaConfig`` as a card stores it (``model_type`` + fields)."""
    return dict(
        model_type="mamba",
        expand=2,
        conv_kernel=4,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **fields,
    )


GAP_RECIPES = {f"gap-{f}-{s}": _gap_recipe(f, s) for f, (sizes, _, _) in GAP_FAMILIES.items() for s in sizes}

#: what facts-2l and facts-mamba share: the task, its evaluation and the optimiser
FACTS_TRAINING: dict[str, Any] = dict(
    vocab=FACTS_VOCAB,
    task="sro_facts",
    make_batch=_facts_batch,
    evaluate=_facts_eval,
    metric="accuracy",
    threshold=0.95,
    steps=1000,  # the loss is ~0 by step 750 (facts-2l) / 500 (facts-mamba)
    batch_size=64,
    lr=3e-3,
    warmup=100,
    weight_decay=0.0,
)

MEMORY_RECIPES: dict[str, Recipe] = {
    "facts-2l": Recipe(
        name="facts-2l",
        description="3-layer transformer (d_model 48, MLPs) storing 256 synthetic subject-relation-object facts "
        "(BOS a b r is -> o)",
        arch="bridge",
        config=dict(
            d_model=48,
            d_head=12,
            n_layers=3,
            n_heads=4,
            d_mlp=192,
            n_ctx=8,
            d_vocab=WORLD.d_vocab,
            normalization_type="LN",
            act_fn="gelu",
        ),
        **FACTS_TRAINING,
    ),
    "facts-mamba": Recipe(
        name="facts-mamba",
        description="3-layer Mamba (transformers' MambaConfig, hidden 48, state 8) storing the facts of facts-2l",
        arch="hf",
        config=_mamba_config(vocab_size=WORLD.d_vocab, hidden_size=48, state_size=8, num_hidden_layers=3),
        **FACTS_TRAINING,
    ),
    "flipflop-2l": Recipe(
        name="flipflop-2l",
        description="2-layer transformer (d_model 32) on Liu et al.'s flip-flop language FFL(0.8), 128 tokens, "
        "beside flipflop-lstm-ffl",
        arch="bridge",
        config=dict(
            d_model=32,
            d_head=8,
            n_layers=2,
            n_heads=4,
            d_mlp=128,
            n_ctx=FLIPFLOP_LENGTH,
            d_vocab=len(tasks.FFL_VOCAB),
            normalization_type="LN",
            act_fn="gelu",
        ),
        **FFL_TRAINING,
        steps=2000,
        batch_size=32,
        lr=1e-3,
        warmup=100,
        weight_decay=0.01,
    ),
    "flipflop-lstm-ffl": Recipe(
        name="flipflop-lstm-ffl",
        description="1-layer LSTM (32 units) on Liu et al.'s flip-flop language FFL(0.8), 128 tokens, beside "
        "flipflop-2l",
        arch="recurrent",
        config=dict(cell="lstm", d_vocab=len(tasks.FFL_VOCAB), d_model=32, n_layers=1, n_ctx=FLIPFLOP_LENGTH),
        **FFL_TRAINING,
        steps=600,
        batch_size=64,
        lr=1e-2,
        warmup=50,
        weight_decay=0.0,
    ),
    "code-lstm": Recipe(
        name="code-lstm",
        description="2-layer character-level LSTM (96 units) on Python standard-library sources",
        arch="recurrent",
        config=dict(cell="lstm", d_vocab=len(code_vocab()["names"]), d_model=96, n_layers=2, n_ctx=1024),
        vocab=code_vocab(),
        task="python_sources",
        make_batch=_code_batch,
        evaluate=_code_eval,
        train_on="next_token",
        metric="heldout_bpc",
        threshold=2.5,
        higher_is_better=False,
        steps=3000,
        batch_size=32,
        lr=3e-3,
        warmup=100,
        weight_decay=0.0,
        notes=CODE_NOTES,
    ),
    "induction-phase": Recipe(
        name="induction-phase",
        description="induction-2l's architecture trained with the plain known-good recipe (no DropHead, no "
        "sparsity), saved on a log-spaced schedule: the induction phase change",
        arch="bridge",
        config=dict(
            d_model=64,
            d_head=16,
            n_layers=2,
            n_heads=4,
            attn_only=True,
            normalization_type="LN",
            act_fn="relu",
            d_vocab=64,
            n_ctx=64,
        ),
        vocab=named_vocab(["BOS"] + [f"t{i}" for i in range(1, 64)]),
        task="repeated_tokens",
        make_batch=_induction_batch,
        evaluate=_induction_eval,
        train_on="next_token",
        metric="repeat_loss",
        threshold=1.2,
        higher_is_better=False,
        steps=2000,
        lr=1e-3,
    ),
    **GAP_RECIPES,
}
