"""Flip-flop reads and where a model looks when it answers them (Liu et al. 2023, "Exposing
Attention Glitches with Flip-Flop Language Modeling").

A sequence of Liu et al.'s flip-flop language (:func:`interp.tasks.flip_flop_ffl`) is
instruction-bit pairs: ``w b`` writes ``b``, ``i b`` is ignored (``b`` a random distractor), ``r b``
reads (``b`` is the last written bit).  A *read* is the position of an ``r``: the model's prediction
there is the read bit (the only graded token).  The *most recent write* of a read is the position of
the bit token after the last ``w`` before it: the token a correct model has to copy.
:func:`read_errors` lists every read with the model's answer; :func:`attention_at_reads` gives, for
chosen reads, the attention of each head from the read position to the most recent write.
Attention analyses decline attention-free models (LSTM, SSM) with :class:`interp.errors.Unsupported`.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model
from interp.tasks import IGNORE, TaskBatch
from interp.tasks.synthetic import FFL_BIT0, FFL_I, FFL_W

CHUNK = (
    250  # sequences per forward (larger chunks are slower on the CPU: the [n, head, pos, pos] scores leave the cache)
)


def _bits_after(tokens: torch.Tensor, instruction: int) -> torch.Tensor:
    """``[batch, pos]`` bool: the bit tokens that follow ``instruction``."""
    out = torch.zeros_like(tokens, dtype=torch.bool)
    out[:, 1:] = tokens[:, :-1] == instruction
    return out


def written_bits(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, pos]`` bool: the positions of written bits (the bit token after each ``w``)."""
    return _bits_after(tokens, FFL_W)


def last_writes(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, pos]``: the position of the most recent written bit (the bit token after a ``w``)
    at or before each position, -1 before the first."""
    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    marked = torch.where(written_bits(tokens), pos, torch.full_like(pos, -1))
    return marked.cummax(dim=1).values


def _check_batch(batch: TaskBatch) -> None:
    if not isinstance(batch, TaskBatch) or batch.tokens.ndim != 2 or batch.tokens.shape[1] % 2:
        raise InputError(
            "a flip-flop analysis takes an interp.tasks.flip_flop_ffl batch (TaskBatch of [batch, pos], pos even)"
        )
    t = batch.tokens
    if not bool(
        (t[:, 0::2] < FFL_BIT0).all() and (t[:, 1::2] >= FFL_BIT0).all() and (t[:, 1::2] <= FFL_BIT0 + 1).all()
    ):
        raise InputError("the batch is not a flip-flop (FFL) batch: instruction-bit pairs of w / i / r and 0 / 1")


@torch.no_grad()
def read_errors(model: Model, batch: TaskBatch, *, chunk: int = CHUNK) -> pd.DataFrame:
    """Every read of ``batch`` with the model's answer (argmax over the whole vocabulary).

    Returns ``DataFrame[sequence, pos, label, predicted, correct, last_write, distance]``: ``pos``
    the ``r`` position (its prediction is the read bit), ``label`` / ``predicted`` token ids
    ("0" = 3, "1" = 4), ``last_write`` the position of the written bit the answer must copy and
    ``distance`` = pos - last_write (tokens).  Forwards ``chunk`` sequences at a time."""
    _check_batch(batch)
    if model.cfg.d_vocab != FFL_BIT0 + 2:
        raise InputError(
            f"{model.cfg.name or 'the model'} has {model.cfg.d_vocab} tokens; flip-flop (FFL) models have 5"
        )
    preds = torch.cat([model(batch.tokens[i : i + chunk]).argmax(-1) for i in range(0, len(batch.tokens), chunk)])
    seq, pos = torch.nonzero(batch.labels != IGNORE, as_tuple=True)
    label = batch.labels[seq, pos]
    predicted = preds[seq, pos]
    last = last_writes(batch.tokens)[seq, pos]
    return pd.DataFrame(
        {
            "sequence": seq.numpy(),
            "pos": pos.numpy(),
            "label": label.numpy(),
            "predicted": predicted.numpy(),
            "correct": (label == predicted).numpy(),
            "last_write": last.numpy(),
            "distance": (pos - last).numpy(),
        }
    )


@torch.no_grad()
def attention_at_reads(model: Model, batch: TaskBatch, reads: pd.DataFrame) -> pd.DataFrame:
    """For each read in ``reads`` (rows of :func:`read_errors`), each head's attention from the read
    position: to the most recent written bit (``to_last_write``), to all written bits together
    (``to_writes``), to the ignored instructions' distractor bits (``to_ignored_bits``), the most
    attended position (``argmax_src``) and whether it is the most recent write.  Returns
    ``DataFrame[sequence, pos, correct, distance, layer, head, to_last_write, to_writes,
    to_ignored_bits, argmax_src, argmax_is_last_write]``.  Needs attention heads (an LSTM or SSM raises
    :class:`interp.errors.Unsupported`)."""
    from interp.attention import pattern_site

    model.require_attention("attention at flip-flop reads")
    _check_batch(batch)
    need = {"sequence", "pos", "correct", "last_write", "distance"}
    if not need <= set(reads.columns):
        raise InputError(f"reads must be rows of read_errors (columns {sorted(need)}), got {list(reads.columns)}")
    rows = []
    if reads.empty:
        return pd.DataFrame(
            columns=[
                *("sequence", "pos", "correct", "distance", "layer", "head"),
                *("to_last_write", "to_writes", "to_ignored_bits", "argmax_src", "argmax_is_last_write"),
            ]
        )
    layers = list(range(model.cfg.n_layers))
    seqs = sorted(set(int(s) for s in reads["sequence"]))
    index = {s: i for i, s in enumerate(seqs)}
    tokens = batch.tokens[seqs]
    writes = written_bits(tokens)  # [n, pos]
    ignored = _bits_after(tokens, FFL_I)
    slot = reads["sequence"].map(lambda s: index[int(s)]).to_numpy()  # row of each read in ``tokens``
    for start in range(0, len(seqs), CHUNK):
        part = tokens[start : start + CHUNK]
        _, cache = model.run_with_cache(part, names=[pattern_site(l) for l in layers], logits=False)
        inside = (slot >= start) & (slot < start + CHUNK)
        here = reads[inside]
        i = torch.tensor(slot[inside] - start, dtype=torch.long)
        p = torch.tensor(here["pos"].to_numpy(), dtype=torch.long)
        lw = torch.tensor(here["last_write"].to_numpy(), dtype=torch.long)
        w = writes[start : start + CHUNK][i].float()  # [reads, src]
        ig = ignored[start : start + CHUNK][i].float()
        for l in layers:
            att = cache[pattern_site(l)][i, :, p].float()  # [reads, head, src]
            to_last = att.gather(2, lw.clamp(min=0)[:, None, None].expand(-1, att.shape[1], 1))[..., 0]
            to_last = torch.where(lw[:, None] >= 0, to_last, torch.zeros_like(to_last))
            to_writes = (att * w[:, None, :]).sum(-1)
            to_ignored = (att * ig[:, None, :]).sum(-1)
            arg = att.argmax(-1)
            for h in range(att.shape[1]):
                rows.append(
                    pd.DataFrame(
                        {
                            "sequence": here["sequence"].to_numpy(),
                            "pos": here["pos"].to_numpy(),
                            "correct": here["correct"].to_numpy(),
                            "distance": here["distance"].to_numpy(),
                            "layer": l,
                            "head": h,
                            "to_last_write": to_last[:, h].numpy(),
                            "to_writes": to_writes[:, h].numpy(),
                            "to_ignored_bits": to_ignored[:, h].numpy(),
                            "argmax_src": arg[:, h].numpy(),
                            "argmax_is_last_write": (arg[:, h] == lw).numpy(),
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


@torch.no_grad()
def read_pattern(model: Model, tokens: torch.Tensor, pos: int) -> pd.DataFrame:
    """The attention row of read position ``pos`` in one sequence ``tokens`` ``[pos]``: every
    layer and head over the source positions.  ``DataFrame[layer, head, src, token, attention]``."""
    from interp.attention import attention_patterns

    model.require_attention("the attention pattern of a flip-flop read")
    tokens = tokens.reshape(-1)
    if not 0 <= int(pos) < len(tokens):
        raise InputError(f"pos {pos} is outside the sequence of {len(tokens)} tokens")
    pats = attention_patterns(model, tokens)[:, :, int(pos), : int(pos) + 1]  # [layer, head, src]
    n_layers, n_heads, n_src = pats.shape
    l, h, s = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), torch.arange(n_src), indexing="ij")
    return pd.DataFrame(
        {
            "layer": l.reshape(-1).numpy(),
            "head": h.reshape(-1).numpy(),
            "src": s.reshape(-1).numpy(),
            "token": tokens[s.reshape(-1)].numpy(),
            "attention": pats.reshape(-1).numpy(),
        }
    )
