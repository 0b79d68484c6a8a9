"""Training dynamics: analyses over a series of training checkpoints (``interp train NAME
--checkpoints N`` writes one on a log-spaced schedule; the zoo ships ``induction-phase``'s).

:func:`over_checkpoints` runs any analysis of one model on every checkpoint and returns one
tidy frame with a ``step`` column; the ready-made analyses (:func:`repeat_loss`,
:func:`icl_score`, :func:`head_scores`) and :func:`phase_curves` give the curves of the
induction phase change (Olsson et al. 2022): the loss on the repeated half of [BOS] r r, the
prefix-matching score of the detected induction heads and the in-context-learning score.
:func:`change_step` reads the step at which a curve changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.model import Model

Checkpoint = str | Path | Model


def _card(c: Checkpoint) -> dict:
    if isinstance(c, Model):
        return dict(c.card or {})
    stem = Path(c)
    card = stem.with_suffix(".json") if stem.suffix in ("", ".safetensors", ".json") else Path(str(stem) + ".json")
    if not card.is_file():
        raise InputError(f"no checkpoint card {card} (a checkpoint is <stem>.safetensors beside <stem>.json)")
    return json.loads(card.read_text())


def _geometry(card: dict) -> tuple:
    """What must agree between checkpoints of one series: the architecture and its config."""
    cfg = {k: v for k, v in (card.get("config") or {}).items() if k not in ("seed", "name")}
    return card.get("arch"), json.dumps(cfg, sort_keys=True)


def _describe(card: dict) -> str:
    """A short name of a card's architecture: ``recurrent lstm d_model 6`` / ``bridge 2 layers d_model 64``."""
    cfg = card.get("config") or {}
    cell = cfg.get("cell") or cfg.get("model_type") or ""
    layers = cfg.get("n_layers", cfg.get("num_hidden_layers"))
    width = cfg.get("d_model", cfg.get("hidden_size"))
    return " ".join(str(x) for x in (card.get("arch"), cell, f"{layers} layers", f"d_model {width}") if x)


def steps_of(checkpoints: Sequence[Checkpoint]) -> list[int]:
    """The training step of each checkpoint (its card's ``step``), checking the series: at least
    one checkpoint, one architecture, every step known and none repeated."""
    if isinstance(checkpoints, str | Path | Model) or not len(checkpoints):
        raise InputError("give a non-empty list of checkpoints (paths of <stem>.json / .safetensors, or Models)")
    cards = [_card(c) for c in checkpoints]
    shapes = {_geometry(c) for c in cards}
    if len(shapes) > 1:
        kinds = sorted({_describe(c) for c in cards})
        raise InputError(
            f"the checkpoints mix {len(shapes)} architectures ({'; '.join(kinds)}): a training series has one"
        )
    steps = []
    for c, card in zip(checkpoints, cards):
        if "step" not in card:
            raise InputError(f"checkpoint {getattr(c, 'name', c)} has no training step in its card (not from a series)")
        steps.append(int(card["step"]))
    if len(set(steps)) != len(steps):
        raise InputError(f"the checkpoints repeat training steps: {steps}")
    return steps


def over_checkpoints(
    checkpoints: Sequence[Checkpoint],
    analysis: Callable[[Model], float | dict | pd.DataFrame],
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """``analysis`` run on every checkpoint, as one frame over training steps (sorted by step).

    checkpoints: checkpoint stems / paths (``weights/checkpoints/<name>/step-*``, see
    :func:`interp.zoo.checkpoint_series`) or loaded Models whose card has a ``step``; one
    architecture (a mixed list is refused).  analysis: ``model -> float`` (column ``value``),
    ``-> dict`` (one column per key) or ``-> DataFrame`` (its rows, each with the step).
    Returns ``DataFrame[step, ...]``.
    """
    import interp

    steps = steps_of(checkpoints)
    if not callable(analysis):
        raise InputError(f"analysis must be a callable model -> number / dict / DataFrame, got {analysis!r}")
    frames = []
    order = np.argsort(steps, kind="stable")
    for i in tqdm(order, desc="checkpoints", disable=not progress):
        c = checkpoints[i]
        model = c if isinstance(c, Model) else interp.load(str(Path(c).with_suffix("")))
        with torch.no_grad():
            out = analysis(model)
        if isinstance(out, pd.DataFrame):
            frame = out.copy()
        elif isinstance(out, dict):
            frame = pd.DataFrame([out])
        elif isinstance(out, int | float | np.floating | np.integer):
            frame = pd.DataFrame({"value": [float(out)]})
        else:
            raise InputError(f"the analysis returned {type(out).__name__}; expected a number, a dict or a DataFrame")
        frame.insert(0, "step", steps[i])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --- ready-made analyses ------------------------------------------------------------------


def repeated_text(model: Model, n: int = 32, period: int | None = None, seed: int = 0) -> torch.Tensor:
    """[BOS] r r token rows ``[n, 1 + 2 * period]`` (r: ``period`` random non-BOS tokens; default
    the longest that fits the model's context) to measure induction on."""
    if period is not None and not 1 <= int(period) <= (model.cfg.n_ctx - 1) // 2:
        raise InputError(f"period must be in [1, {(model.cfg.n_ctx - 1) // 2}] so [BOS] r r fits the context")
    from interp import tasks

    period = (model.cfg.n_ctx - 1) // 2 if period is None else int(period)
    batch = tasks.repeated_tokens(n, d_vocab=model.cfg.d_vocab, n_ctx=1 + 2 * period, period=period, seed=seed)
    return batch.tokens


def per_row_losses(model: Model, tokens: torch.Tensor) -> np.ndarray:
    """Next-token loss (nats) ``[rows, pos - 1]``: entry p is the loss of predicting token p + 1."""
    from interp.tasks import loss_by_position

    with torch.no_grad():
        return loss_by_position(model(tokens), model.validate_tokens(tokens)).float().cpu().numpy()


def repeat_loss(tokens: torch.Tensor, period: int) -> Callable[[Model], dict]:
    """An analysis: mean loss (nats) on the first and on the repeated copy of [BOS] r r rows
    (``period`` = len(r)), via :func:`interp.heads.in_context_gain`."""
    from interp.heads import in_context_gain

    def run(model: Model) -> dict:
        first, repeat = in_context_gain(model, tokens, period)
        return {"first_loss": first, "repeat_loss": repeat}

    return run


def icl_score(tokens: torch.Tensor, early: int | None = None, late: int | None = None) -> Callable[[Model], float]:
    """An analysis: the in-context-learning score (loss late in context minus early, nats;
    :func:`interp.heads.icl_score`)."""
    from interp import heads

    return lambda model: heads.icl_score(model, tokens, early=early, late=late)


def head_scores(tokens: torch.Tensor | None = None, kinds: Sequence[str] | str = "prefix_matching") -> Callable:
    """An analysis: :func:`interp.heads.scores` (``DataFrame[layer, head, kind, score]``)."""
    from interp import heads

    return lambda model: heads.scores(model, tokens, kinds)


# --- the induction phase change -----------------------------------------------------------


def phase_curves(
    checkpoints: Sequence[Checkpoint],
    *,
    n: int = 32,
    group: int = 4,
    period: int = 16,
    seed: int = 0,
    heads_from: int = -1,
    k: int | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """The curves of the induction phase change over a checkpoint series, measured on ``n``
    [BOS] r r rows (r: ``period`` random tokens) in units of ``group`` rows (the units an
    interval resamples): the mean loss on the repeated copy and on the first copy (nats), the
    in-context-learning score (mean loss over the last ``period // 2`` predictions minus the
    first ``period // 2`` of the first copy, nats), and the prefix-matching score of the
    induction heads and the best previous-token score of the layers before them
    (:func:`interp.heads.scores`).  The induction heads are detected, never named: the heads
    whose prefix matching on checkpoint ``heads_from`` (default the last) is over 0.3, or its
    top ``k``.

    Returns (``DataFrame[step, unit, measure, value]``, the detected heads); measures:
    ``repeat_loss``, ``first_loss``, ``icl_score``, ``prefix_matching``, ``previous_token``.
    """
    import interp
    from interp import heads

    if n < 2 * group or group < 1:
        raise InputError(f"need at least two units of {group} rows, got n={n}")
    steps = steps_of(checkpoints)
    order = [int(i) for i in np.argsort(steps, kind="stable")]
    models = [c if isinstance(c, Model) else interp.load(str(Path(c).with_suffix(""))) for c in checkpoints]
    last = models[order[heads_from]]
    last.require_attention("the induction phase change")
    tokens = repeated_text(last, n - n % group, period, seed)
    found = heads.scores(last, tokens, "prefix_matching").sort_values("score", ascending=False)
    chosen = found.head(k) if k is not None else found[found["score"] > 0.3]
    if chosen.empty:
        raise InputError(
            f"no induction head on the checkpoint at step {steps[order[heads_from]]} (top prefix-matching score "
            f"{found['score'].iloc[0]:.2f} <= 0.3): nothing to follow over training"
        )
    targets = [(int(l), int(h)) for l, h in zip(chosen["layer"], chosen["head"])]
    first_layer = min(l for l, _ in targets)
    half = max(1, period // 2)
    units = len(tokens) // group
    rows = []
    for i in tqdm(order, desc="checkpoints", disable=not progress):
        model, step = models[i], steps[i]
        per = per_row_losses(model, tokens).reshape(units, group, -1).mean(1)  # [units, 2 * period]
        values: dict[str, list[float]] = {"prefix_matching": [], "previous_token": []}
        for u in range(units):
            s = heads.scores(model, tokens[u * group : (u + 1) * group], ["prefix_matching", "previous_token"])
            s = s.set_index(["layer", "head", "kind"])["score"]
            values["prefix_matching"].append(float(np.mean([s[(l, h, "prefix_matching")] for l, h in targets])))
            prev = s.xs("previous_token", level="kind")
            if first_layer > 0:  # the previous-token heads an induction head composes with sit in earlier layers
                prev = prev[prev.index.get_level_values("layer") < first_layer]
            values["previous_token"].append(float(prev.max()))
        measures = {
            "repeat_loss": per[:, period : 2 * period].mean(1),
            "first_loss": per[:, 1:period].mean(1),
            "icl_score": per[:, -half:].mean(1) - per[:, 1 : 1 + half].mean(1),
            **{k: np.array(v) for k, v in values.items()},
        }
        for name, v in measures.items():
            rows.append(pd.DataFrame({"step": step, "unit": range(units), "measure": name, "value": v}))
    return pd.concat(rows, ignore_index=True), targets


def change_step(steps: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """The step at which a curve over training makes its change: where it first crosses the
    midpoint between its first value and its last (interpolated linearly in log(1 + step)
    between the checkpoints around the crossing).  A rising or falling curve alike; NaN if it
    never crosses."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.shape != v.shape or s.size < 2:
        raise InputError("a change step needs at least two (step, value) points of equal count")
    o = np.argsort(s)
    s, v = s[o], v[o]
    if not np.isfinite(v).all() or v[0] == v[-1]:
        return float("nan")  # no change from first to last (or a value is missing)
    mid = (v[0] + v[-1]) / 2
    sign = np.sign(v - mid)
    for j in range(1, len(v)):
        if sign[j] != sign[0] and sign[j] != 0:
            a, b = v[j - 1], v[j]
            x0, x1 = np.log1p(s[j - 1]), np.log1p(s[j])
            x = x0 + (mid - a) / (b - a) * (x1 - x0) if b != a else x1
            return float(np.expm1(x))
        if sign[j] == 0:
            return float(s[j])
    return float("nan")


def change_steps(curves: pd.DataFrame) -> dict[str, float]:
    """:func:`change_step` of every measure's mean curve in a ``DataFrame[step, measure, value]``
    (:func:`phase_curves`)."""
    from interp.plots import require

    require(curves, ["step", "measure", "value"], "change_steps")
    mean = curves.groupby(["measure", "step"])["value"].mean().unstack(0).sort_index()
    return {str(m): change_step(mean.index, mean[m]) for m in mean.columns}


# --- where series live ----------------------------------------------------------------------


def shipped_series() -> list[str]:
    """Names of the checkpoint series the zoo ships (``weights/checkpoints/<name>/``)."""
    from interp.zoo import WEIGHTS

    folder = WEIGHTS / "checkpoints"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("step-*.json"))) if folder.is_dir() else []
    )


def series(source: str | Path) -> list[Path]:
    """The checkpoint stems of a series, by step: a shipped series' name (:func:`shipped_series`)
    or a folder of ``step-*.json`` / ``.safetensors`` pairs (what ``interp train NAME --checkpoints N``
    writes into ``<out>-checkpoints/``)."""
    from interp import zoo

    text = str(source).strip()
    if not text:
        raise InputError("give a checkpoint series: a shipped name or a folder of step-*.safetensors checkpoints")
    if text in shipped_series():
        stems = zoo.checkpoint_series(text)
    else:
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise InputError(
                f"{text!r} is neither a shipped checkpoint series ({', '.join(shipped_series()) or 'none'}) nor a folder"
            )
        stems = [p.with_suffix("") for p in folder.glob("step-*.json")]
        if not stems:
            raise InputError(f"no step-*.json checkpoints in {folder} (interp train NAME --checkpoints N writes them)")
    steps = steps_of(stems)
    return [s for _, s in sorted(zip(steps, stems))]
