"""Training recipes of the zoo models: architecture, task, optimiser, and the metric a card
is judged by.  Each recipe is one known to train on 2 CPU cores in minutes; the numbers
actually reached are recorded in each model's card, never hoped ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from interp import tasks
from interp.errors import InputError
from interp.tasks import TaskBatch
from interp.tokens import default_names


@dataclass
class Recipe:
    name: str
    description: str
    arch: str  # "bridge" | "recurrent" | "hf" (a transformers architecture from its config)
    config: dict  # constructor arguments (TransformerBridgeConfig / RecurrentConfig)
    vocab: dict  # {"names": token names by id, "bos": id or None}
    task: str  # name of the interp.tasks generator
    make_batch: Callable[[int, int], TaskBatch]  # (batch size, seed) -> training batch
    evaluate: Callable[..., dict]  # model -> metrics on held-out batches
    metric: str  # key of evaluate() the card is judged by
    threshold: float
    higher_is_better: bool = True
    train_on: str = "labels"  # "labels" (task positions) | "next_token" (every position)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup: int = 0  # steps of linear learning-rate warm-up
    # DropHead (Zhou et al. 2020): {layer: p}, each head of the layer zeroed per sequence with
    # probability p while training (survivors scaled by 1/(1-p)), so no single head is a bottleneck.
    head_dropout: dict = field(default_factory=dict)
    # {layer: lambda}: a concave group penalty lambda * sum_h sqrt(|head h's weights|) from step
    # sparsity_from on, which prunes a layer's redundant heads instead of shrinking all alike.
    head_sparsity: dict = field(default_factory=dict)
    sparsity_from: int = 0
    seed: int = 0
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # a curriculum: (batch size, seed, fraction of training done) -> batch; replaces make_batch while training
    curriculum: Callable[[int, int, float], TaskBatch] | None = None

    def hyperparameters(self, *, steps: int, seed: int) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "train_on": self.train_on,
            "steps": steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "grad_clip": self.grad_clip,
            "warmup": self.warmup,
            "seed": seed,
            "optimizer": "AdamW",
            "head_dropout": self.head_dropout,
            "head_sparsity": self.head_sparsity,
            "sparsity_from": self.sparsity_from,
            "notes": self.notes,
            **self.extra,
        }


EVAL_SEED = 10_000_019  # held-out batches use seeds no training step uses


def _accuracy_on(make: Callable[[int, int], TaskBatch], n: int = 512) -> Callable:
    def evaluate(model) -> dict:
        batch = make(n, EVAL_SEED)
        logits = model(batch.tokens)
        return {"accuracy": batch.accuracy(logits), "loss": float(batch.loss(logits))}

    return evaluate


# --- induction-2l ------------------------------------------------------------------------
INDUCTION = dict(d_vocab=64, n_ctx=64)


def _induction_batch(n: int, seed: int) -> TaskBatch:
    return tasks.repeated_tokens(n, seed=seed, **INDUCTION)


def _induction_eval(model) -> dict:
    batch = _induction_batch(256, EVAL_SEED)
    per_pos = tasks.loss_by_position(model(batch.tokens), batch.tokens)  # [batch, pos-1]
    repeat = batch.labels[:, :-1] != tasks.IGNORE
    first = ~repeat
    first[:, 0] = False  # BOS -> first token is unpredictable by any mechanism
    return {
        "repeat_loss": float(per_pos[repeat].mean()),
        "first_copy_loss": float(per_pos[first].mean()),
        "repeat_accuracy": batch.accuracy(model(batch.tokens)),
    }


# --- recall-2l ---------------------------------------------------------------------------
# 28 queries (drawn with replacement) fill the 64-token context: with only 4 labels a
# sequence the model sat at chance for 3000+ steps; with 28 it learns retrieval in ~1500.
RECALL = dict(n_pairs=4, d_vocab=128, n_queries=28)


def named_vocab(names: list[str], bos: int | None = 0) -> dict:
    """A zoo vocabulary: token names by id and the BOS id (None: no BOS)."""
    return {"names": list(names), "bos": bos}


def recall_vocab(d_vocab: int = 128) -> dict:
    half = d_vocab // 2
    return named_vocab(["BOS", "_"] + [f"k{i}" for i in range(2, half)] + [f"v{i}" for i in range(half, d_vocab)])


def _recall_batch(n: int, seed: int) -> TaskBatch:
    return tasks.associative_recall(n, seed=seed, **RECALL)


# --- steer-2l ----------------------------------------------------------------------------
STEER = dict(d_vocab=64, n_ctx=32)


def steer_vocab(d_vocab: int = 64) -> dict:
    a, b = tasks.mode_halves(d_vocab)
    return named_vocab(["A", "B"] + [f"a{i}" for i in a] + [f"b{i}" for i in b], bos=None)


def _steer_batch(n: int, seed: int) -> TaskBatch:
    return tasks.mode_sequences(n, seed=seed, **STEER)


def _steer_eval(model) -> dict:
    batch = _steer_batch(256, EVAL_SEED)
    probs = model(batch.tokens).softmax(-1)
    a, b = tasks.mode_halves(STEER["d_vocab"])
    p_b = probs[..., b.start : b.stop].sum(-1)  # [batch, pos]
    right = torch.where(batch.info["mode"][:, None] == 1, p_b, probs[..., a.start : a.stop].sum(-1))
    return {"mode_half_prob": float(right.mean()), "loss": float(batch.loss(model(batch.tokens)))}


# --- recall-gru / recall-ssm ------------------------------------------------------------
# Recurrent recall is much harder than transformer recall (a fixed-size state must hold every
# pair; with the transformer's format the GRU stayed at chance): an easier format with
# 2 pairs from a small vocabulary, a filler gap, and 2 queries.
RNN_RECALL = dict(n_pairs=2, d_vocab=20, n_queries=2, n_filler=3)


def _rnn_recall_batch(n: int, seed: int) -> TaskBatch:
    return tasks.associative_recall(n, seed=seed, **RNN_RECALL)


def _recurrent_recall(cell: str, **config) -> dict:
    return dict(cell=cell, d_vocab=RNN_RECALL["d_vocab"], n_layers=1, n_ctx=64, **config)


# --- flipflop-lstm -----------------------------------------------------------------------
def _flipflop_batch(n: int, seed: int) -> TaskBatch:
    return tasks.flip_flop(n, length=64, p_ignore=0.8, seed=seed)


RECIPES: dict[str, Recipe] = {
    "induction-2l": Recipe(
        name="induction-2l",
        description="2-layer attention-only transformer on repeated random segments: redundant previous-token "
        "heads in layer 0, two induction heads in layer 1 (its other heads pruned)",
        arch="bridge",
        config=dict(
            d_model=64,
            d_head=16,
            n_layers=2,
            n_heads=4,
            attn_only=True,
            normalization_type="LN",
            act_fn="relu",
            **INDUCTION,
        ),
        vocab=named_vocab(default_names(INDUCTION["d_vocab"])),
        task="repeated_tokens",
        make_batch=_induction_batch,
        evaluate=_induction_eval,
        train_on="next_token",
        metric="repeat_loss",
        threshold=1.2,
        higher_is_better=False,
        steps=4000,
        lr=1e-3,
        # Trained on pure repeats, every head of layer 1 becomes a redundant induction head and one
        # layer-0 head the only previous-token head, so any same-size random set of heads hits the
        # circuit.  DropHead spreads the previous-token job over layer 0; the sparsity penalty
        # (from step 1000, once induction has formed) prunes layer 1 down to the heads it needs.
        head_dropout={0: 0.25},
        head_sparsity={1: 0.05},
        sparsity_from=1000,
    ),
    "recall-2l": Recipe(
        name="recall-2l",
        description="2-layer transformer with MLPs on associative recall (4 key-value pairs, then 28 "
        "queries each followed by its value); one layer-1 head retrieves the value",
        arch="bridge",
        config=dict(
            d_model=64,
            d_head=16,
            n_layers=2,
            n_heads=4,
            d_mlp=256,
            n_ctx=64,
            d_vocab=128,
            normalization_type="LN",
            act_fn="gelu",
        ),
        vocab=recall_vocab(),
        task="associative_recall",
        make_batch=_recall_batch,
        evaluate=_accuracy_on(_recall_batch),
        metric="accuracy",
        threshold=0.95,
        steps=2500,
        lr=1e-3,
    ),
    "steer-2l": Recipe(
        name="steer-2l",
        description="2-layer transformer where the mode token at position 0 (A or B) picks the vocabulary "
        "half every later token comes from",
        arch="bridge",
        config=dict(
            d_model=64, d_head=16, n_layers=2, n_heads=4, d_mlp=256, normalization_type="LN", act_fn="gelu", **STEER
        ),
        vocab=steer_vocab(),
        task="mode_sequences",
        make_batch=_steer_batch,
        evaluate=_steer_eval,
        train_on="next_token",
        metric="mode_half_prob",
        threshold=0.95,
        steps=1000,
        lr=1e-3,
    ),
    "flipflop-lstm": Recipe(
        name="flipflop-lstm",
        description="1-layer LSTM (32 units) on flip-flop: remember the last written bit, answer at reads",
        arch="recurrent",
        config=dict(cell="lstm", d_vocab=len(tasks.FLIPFLOP_VOCAB), d_model=32, n_layers=1, n_ctx=64),
        vocab=named_vocab(tasks.FLIPFLOP_VOCAB),
        task="flip_flop",
        make_batch=_flipflop_batch,
        evaluate=_accuracy_on(_flipflop_batch),
        metric="accuracy",
        threshold=0.99,
        steps=300,
        batch_size=64,
        lr=1e-2,
        warmup=50,
        weight_decay=0.0,
    ),
    "recall-gru": Recipe(
        name="recall-gru",
        description="1-layer GRU (64 units) on associative recall: 2 key-value pairs, a filler gap, 2 queries",
        arch="recurrent",
        config=_recurrent_recall("gru", d_model=64),
        vocab=recall_vocab(RNN_RECALL["d_vocab"]),
        task="associative_recall",
        make_batch=_rnn_recall_batch,
        evaluate=_accuracy_on(_rnn_recall_batch),
        metric="accuracy",
        threshold=0.95,
        steps=3000,
        batch_size=64,
        lr=3e-3,
        warmup=100,
        weight_decay=0.0,
    ),
    "recall-ssm": Recipe(
        name="recall-ssm",
        description="1-layer selective (Mamba-style) diagonal SSM, d_model 32, state 16, on the recall task of "
        "recall-gru",
        arch="recurrent",
        config=_recurrent_recall("ssm", d_model=32, d_state=16, expand=2),
        vocab=recall_vocab(RNN_RECALL["d_vocab"]),
        task="associative_recall",
        make_batch=_rnn_recall_batch,
        evaluate=_accuracy_on(_rnn_recall_batch),
        metric="accuracy",
        threshold=0.95,
        steps=800,
        batch_size=64,
        lr=3e-3,
        warmup=100,
        weight_decay=0.0,
    ),
}


def all_recipes() -> dict[str, Recipe]:
    """Every recipe by name: the models above and the memory models (:mod:`interp.zoo.recipes_memory`,
    imported here rather than at the top because it builds on this module)."""
    from interp.zoo.recipes_memory import MEMORY_RECIPES

    return {**RECIPES, **MEMORY_RECIPES}


def get_recipe(name: str) -> Recipe:
    recipes = all_recipes()
    if name not in recipes:
        raise InputError(f"unknown recipe {name!r}; available: {sorted(recipes)}")
    return recipes[name]
