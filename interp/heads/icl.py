"""In-context learning: loss by position, the in-context-learning score and induction heads
knocked out (Olsson et al. 2022)."""

from __future__ import annotations

import contextlib

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model
from interp.runs import analysis, record
from interp.tasks import TaskBatch
from interp.tasks import loss_by_position as _loss_by_position


def loss_by_position(model: Model, tokens: torch.Tensor | TaskBatch, *, batch_size: int | None = None) -> pd.DataFrame:
    """Next-token loss per position, ``DataFrame[pos, loss, sem, n]``: ``loss`` (nats) is the
    mean over the batch of the cross-entropy of the logits at ``pos`` on token ``pos + 1``;
    ``sem`` its standard error over the ``n`` sequences.  Active hooks apply."""
    if isinstance(tokens, TaskBatch):
        tokens = tokens.tokens
    tokens = model.validate_tokens(tokens)
    if tokens.shape[1] < 2:
        raise InputError("loss by position needs sequences of at least 2 tokens")
    step = tokens.shape[0] if batch_size is None else int(batch_size)
    with torch.no_grad():
        losses = torch.cat(
            [
                _loss_by_position(model(tokens[i : i + step]), tokens[i : i + step])
                for i in range(0, tokens.shape[0], step)
            ]
        )  # [batch, pos-1]
    n = losses.shape[0]
    sem = losses.std(0) / n**0.5 if n > 1 else torch.full((losses.shape[1],), float("nan"))
    return pd.DataFrame(
        {"pos": range(losses.shape[1]), "loss": losses.mean(0).cpu().numpy(), "sem": sem.cpu().numpy(), "n": n}
    )


def icl_score(
    model: Model, tokens: torch.Tensor | TaskBatch, *, early: int | None = None, late: int | None = None
) -> float:
    """In-context-learning score (Olsson et al. 2022): mean loss at position ``late`` minus
    mean loss at position ``early`` (nats; negative = the model predicts better with more
    context).  Defaults: ``early`` = 10% into the sequence, ``late`` = the last predicting
    position (Olsson et al. use tokens 50 and 500 of 512)."""
    frame = loss_by_position(model, tokens)
    last = int(frame["pos"].max())
    early = max(1, round(0.1 * (last + 1))) if early is None else int(early)
    late = last if late is None else int(late)
    for name, p in (("early", early), ("late", late)):
        if not 0 <= p <= last:
            raise InputError(f"{name}={p} is outside the predicting positions [0, {last}]")
    if early >= late:
        raise InputError(f"early ({early}) must come before late ({late})")
    return float(frame.loc[late, "loss"] - frame.loc[early, "loss"])


# --- induction heads on a real model ---------------------------------------------------------


def in_context_gain(model: Model, tokens: torch.Tensor, period: int) -> tuple[float, float]:
    """(first-copy loss, repeated-copy loss) in nats on ``[BOS] r r`` tokens with segment
    length ``period``: the mean next-token loss predicting the first copy's tokens (positions
    1..period-1 predict 2..period) and the second copy's (period..2*period-1).  Their
    difference is the in-context gain; active hooks apply."""
    with torch.no_grad():
        per = _loss_by_position(model(tokens), model.validate_tokens(tokens))  # [batch, pos-1]
    first = per[:, 1:period].mean()
    repeat = per[:, period : 2 * period].mean()
    return float(first), float(repeat)


@analysis("induction_ablation", figure="interp.plots.heads.induction_bar")
def induction_ablation(
    model: Model,
    *,
    k: int | None = None,
    hows: tuple[str, ...] = ("zero", "mean", "resample"),
    n_random: int = 3,
    period: int = 50,
    n: int = 8,
    seed: int = 0,
    icl_tokens: torch.Tensor | None = None,
    icl_early: int = 50,
    icl_late: int = 500,
) -> pd.DataFrame:
    """Olsson et al.'s induction heads, knocked out: the top ``k`` induction heads (by
    prefix-matching score on ``[BOS] r r`` probes; default k = 5% of the heads) against ``k``
    random other heads (``n_random`` draws), for each ablation in ``hows``.

    The in-context gain (first-copy loss minus repeated-copy loss on held-out ``[BOS] r r``,
    ``r`` of ``period`` random tokens, ``n`` rows) is measured without ablation and with each
    head set.  With ``icl_tokens`` (ordinary text, e.g. :func:`interp.tasks.text.generated_text`),
    also Olsson et al.'s in-context-learning score: loss at token ``icl_late`` minus loss at
    token ``icl_early``.

    Returns ``DataFrame[how, condition ("none" | "induction" | "random"), draw, heads,
    first_loss, repeat_loss, gain, removed, icl]`` (losses in nats; removed = 1 - gain / the
    unablated gain).  Meta (``interp.runs.run(induction_ablation, ...).meta``): ``k``, ``heads`` (the induction heads, best first), their
    ``scores``.
    """
    from interp import heads as H
    from interp.ablation import HOWS, ablate, random_heads
    from interp.tasks import repeated_tokens

    model.require_attention("induction heads")
    total = model.cfg.n_layers * model.cfg.n_heads
    k = max(1, int(0.05 * total)) if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < total:
        raise InputError(f"k must be an int in [1, {total - 1}] (fewer than the model's {total} heads), got {k!r}")
    bad = [h for h in hows if h not in HOWS or h == "query"]
    if bad or not hows:
        raise InputError(f"hows must be among zero, mean, resample; got {list(hows)}")
    length = 1 + 2 * period
    if length > model.cfg.n_ctx:
        raise InputError(f"a period of {period} needs {length} tokens, over n_ctx={model.cfg.n_ctx}")
    probe = H.default_tokens(model, n=n, length=length, seed=seed)
    found = H.scores(model, probe, ["prefix_matching"]).nlargest(k, "score")
    targets = [(int(l), int(h)) for l, h in zip(found["layer"], found["head"])]
    bos = H.bos_id(model)
    tokens = repeated_tokens(n, d_vocab=model.cfg.d_vocab, n_ctx=length, period=period, seed=seed + 1).tokens
    if bos != 0:
        body = tokens[:, 1:]
        tokens[:, 1:] = torch.where(body == bos, torch.zeros_like(body), body)
        tokens[:, 0] = bos

    def reference(how: str, ids: torch.Tensor) -> torch.Tensor | None:
        # mean: the batch's own mean output; resample: each row takes another row's
        return None if how == "zero" else (ids if how == "mean" else ids.roll(1, dims=0))

    def measure(hs: list, how: str) -> dict:
        with contextlib.ExitStack() as stack:
            if hs:
                stack.enter_context(ablate(model, hs, how, reference=reference(how, tokens)))
            first, repeat = in_context_gain(model, tokens, period)
        row = {"first_loss": first, "repeat_loss": repeat, "gain": first - repeat}
        if icl_tokens is not None:
            with contextlib.ExitStack() as stack:
                if hs:
                    stack.enter_context(ablate(model, hs, how, reference=reference(how, icl_tokens)))
                row["icl"] = icl_score(model, icl_tokens, early=icl_early, late=icl_late)
        return row

    base = measure([], "zero")
    rows = [{"how": "none", "condition": "none", "draw": None, "heads": "", **base}]
    sets = [("induction", None, targets)] + [
        ("random", i, random_heads(model, k, exclude=targets, seed=seed + i)) for i in range(n_random)
    ]
    for how in hows:
        for condition, draw, hs in sets:
            rows.append(
                {
                    "how": how,
                    "condition": condition,
                    "draw": draw,
                    "heads": " ".join(f"L{l}H{h}" for l, h in hs),
                    **measure(hs, how),
                }
            )
    df = pd.DataFrame(rows)
    df["removed"] = 1 - df["gain"] / base["gain"]
    record(k=k, heads=targets, scores=[float(s) for s in found["score"]], base_gain=base["gain"])
    return df
