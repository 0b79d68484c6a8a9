"""Training a recipe: seeded, with a progress bar, writing safetensors weights and a card."""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp import interventions as I
from interp import sites as S
from interp.backends import logits_of
from interp.checkpoint import build_module, save_checkpoint
from interp.errors import InputError
from interp.loading import from_module
from interp.model import Model, RunContext
from interp.tasks import masked_loss
from interp.zoo.recipes import Recipe, get_recipe

HISTORY_EVERY = 10  # the card's loss history: the mean training loss of every 10 steps


def log_schedule(steps: int, n: int) -> list[int]:
    """``n`` checkpoint steps spaced evenly in log(step) from 1 to ``steps``, plus step 0 (the
    initialisation): early training changes fastest, so a log-spaced schedule resolves it.
    Fewer are returned where rounding makes steps coincide."""
    import numpy as np

    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise InputError(f"the number of checkpoints must be an int >= 2, got {n!r}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    return sorted({0, *(int(round(x)) for x in np.geomspace(1, steps, n - 1))})


def train(
    recipe: Recipe | str,
    *,
    seed: int | None = None,
    steps: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    checkpoints: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_dtype: torch.dtype | None = None,
) -> tuple[Model, dict]:
    """Trains ``recipe`` from scratch and returns the model and its card.

    seed / steps override the recipe's.  ``out``: a checkpoint stem (``dir/name``) to write
    ``.safetensors`` + ``.json`` to (atomically, after training).  The card records the
    config, recipe, seed, metrics on held-out batches, the training time in seconds and the
    loss history (``history``: the mean training loss of every :data:`HISTORY_EVERY` steps).

    checkpoints: also save this many checkpoints on a log-spaced schedule (:func:`log_schedule`,
    step 0 included) into ``checkpoint_dir`` (default ``<out>-checkpoints``), each
    ``step-NNNNNN.safetensors`` + card with its ``step`` and the loss history so far;
    :func:`interp.dynamics.over_checkpoints` analyses such a series.  checkpoint_dtype: store
    them in this dtype (``torch.float16`` halves them; they load back as float32).
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    seed = recipe.seed if seed is None else int(seed)
    steps = recipe.steps if steps is None else int(steps)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    schedule: set[int] = set()
    if checkpoints is not None:
        schedule = set(log_schedule(steps, checkpoints))
        if checkpoint_dir is None:
            if out is None:
                raise InputError("checkpoints need a folder: give checkpoint_dir= (or out=)")
            checkpoint_dir = Path(str(out) + "-checkpoints")
        checkpoint_dir = Path(checkpoint_dir)
    torch.manual_seed(seed)
    card: dict[str, Any] = {
        "name": recipe.name,
        "arch": recipe.arch,
        "config": {**recipe.config, "seed": seed},
        "vocab": recipe.vocab,
        "task": recipe.task,
        "description": recipe.description,
    }
    module = build_module(card).train()
    hooks = _head_dropout_hooks(recipe.head_dropout)
    opt = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, recipe.warmup)))
    start = time.perf_counter()
    history: dict[str, list] = {"step": [], "loss": []}
    window: list[float] = []

    def snapshot(step: int) -> None:
        assert checkpoint_dir is not None  # set whenever the schedule is
        at = {**card, "step": step, "history": {k: list(v) for k, v in history.items()}}
        at["recipe"] = recipe.hyperparameters(steps=steps, seed=seed)
        save_checkpoint(module, at, Path(checkpoint_dir) / f"step-{step:06d}", dtype=checkpoint_dtype)

    if 0 in schedule:
        snapshot(0)
    bar = tqdm(range(steps), desc=f"train {recipe.name}", disable=not progress, mininterval=1.0)
    for step in bar:
        batch_seed = seed * 1_000_003 + step
        if recipe.curriculum is not None:
            batch = recipe.curriculum(recipe.batch_size, batch_seed, step / steps)
        else:
            batch = recipe.make_batch(recipe.batch_size, batch_seed)
        labels = batch.labels if recipe.train_on == "labels" else batch.next_token_labels()
        # a hook-point module (bridge or HookedRecurrent); nn.Module types its attributes as Tensor | Module
        with module.hooks(fwd_hooks=hooks) if hooks else nullcontext():  # type: ignore[operator]
            loss = masked_loss(logits_of(module(batch.tokens)), labels)
        total = loss + (
            head_sparsity_penalty(module, recipe.head_sparsity)
            if recipe.head_sparsity and step >= recipe.sparsity_from
            else 0.0
        )
        opt.zero_grad(set_to_none=True)
        total.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), recipe.grad_clip)
        opt.step()
        warmup.step()
        window.append(loss.item())
        if len(window) == HISTORY_EVERY:
            history["step"].append(step + 1)
            history["loss"].append(round(sum(window) / len(window), 5))
            window = []
        if step % 50 == 0:
            bar.set_postfix(loss=f"{window[-1] if window else history['loss'][-1]:.3f}")
        if step + 1 in schedule:
            module.eval()
            snapshot(step + 1)
            module.train()
    seconds = time.perf_counter() - start
    module.eval()
    # a Hugging Face module is rewritten in place when wrapped (the bridge): wrap a copy, save the original
    model = from_module(copy.deepcopy(module) if recipe.arch == "hf" else module, card)
    with torch.no_grad():
        metrics = recipe.evaluate(model)
    card.update(
        {
            "recipe": recipe.hyperparameters(steps=steps, seed=seed),
            "seed": seed,
            "metrics": metrics,
            "metric": {
                "name": recipe.metric,
                "threshold": recipe.threshold,
                "higher_is_better": recipe.higher_is_better,
            },
            "train_seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "history": history,
        }
    )
    model.card = card
    if out is not None:
        save_checkpoint(module, card, out)
    return model, card


def _head_dropout_hooks(rates: dict) -> list:
    """DropHead (:func:`interp.interventions.drop_heads`) on each layer's ``hook_z`` while
    training the raw module: one keep/drop draw per sequence and head, survivors scaled by 1/(1-p)."""
    edits = [I.drop_heads(S.kind("z").hook(int(layer)), float(p)) for layer, p in rates.items()]
    return [(iv.site, lambda act, hook, iv=iv: iv.apply(act, RunContext())) for iv in edits]


def head_sparsity_penalty(module, strengths: dict, eps: float = 1e-3) -> torch.Tensor:
    """sum over layers l and heads h of lambda_l * sqrt(norm_lh + eps), where norm_lh adds the
    Frobenius norms of head h's query-key weights (W_Q, b_Q, W_K, b_K), value weights (W_V, b_V)
    and output weights (its W_O columns).  The square root makes the penalty concave, so under
    it a layer's redundant heads die one by one rather than all shrinking together (plain
    group lasso shrinks them alike).  Native TransformerBridge modules only."""
    total = torch.zeros(())
    for layer, lam in strengths.items():
        attn = module.blocks[int(layer)].attn
        n, d = attn.config.n_heads, attn.config.d_head

        def sq(lin, n=n, d=d) -> torch.Tensor:  # [n_heads]: squared norm of each head's rows
            return lin.weight.view(n, d, -1).pow(2).sum((1, 2)) + lin.bias.view(n, d).pow(2).sum(1)

        norm = (
            (sq(attn.q) + sq(attn.k)).sqrt()
            + sq(attn.v).sqrt()
            + attn.o.weight.view(-1, n, d).pow(2).sum((0, 2)).sqrt()
        )
        total = total + float(lam) * (norm + eps).sqrt().sum()
    return total


def meets_card(card: dict, metrics: dict | None = None) -> bool:
    """Whether ``metrics`` (default: the card's own) reach the card's threshold."""
    m = card["metric"]
    value = (metrics or card["metrics"])[m["name"]]
    return value >= m["threshold"] if m["higher_is_better"] else value <= m["threshold"]
