"""Flip-flop reads and where a model looks when it answers them (Liu et al. 2023, "Exposing
Attention Glitches with Flip-Flop Language Modeling").

A flip-flop sequence (:func:`interp.tasks.flip_flop`) writes bits (``W0`` / ``W1``), ignores
(``IGN``) and reads (``READ``: the answer is the last written bit).  :func:`read_errors` lists
every read with the model's answer; :func:`attention_at_reads` gives, for chosen reads, the
attention of each head from the read position to the most recent write, the position a correct
model has to retrieve from.  Attention analyses decline attention-free models (LSTM, SSM) with
:class:`interp.errors.Unsupported`.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model
from interp.tasks import IGNORE, TaskBatch

W0, W1, READ = 1, 2, 4  # token ids of interp.tasks.FLIPFLOP_VOCAB
CHUNK = (
    250  # sequences per forward (larger chunks are slower on the CPU: the [n, head, pos, pos] scores leave the cache)
)


def last_writes(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, pos]``: the position of the most recent write (``W0`` / ``W1``) at or before each
    position, -1 before the first."""
    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    marked = torch.where((tokens == W0) | (tokens == W1), pos, torch.full_like(pos, -1))
    return marked.cummax(dim=1).values


def _check_batch(batch: TaskBatch) -> None:
    if not isinstance(batch, TaskBatch) or batch.tokens.ndim != 2:
        raise InputError("a flip-flop analysis takes an interp.tasks.flip_flop batch (TaskBatch of [batch, pos])")
    if int(batch.tokens.max()) > READ + 2 or not bool((batch.tokens[:, 1:] != 0).all()):
        raise InputError("the batch is not a flip-flop batch (tokens outside BOS W0 W1 IGN READ 0 1)")


@torch.no_grad()
def read_errors(model: Model, batch: TaskBatch, *, chunk: int = CHUNK) -> pd.DataFrame:
    """Every read of ``batch`` with the model's answer (argmax over the whole vocabulary).

    Returns ``DataFrame[sequence, pos, label, predicted, correct, last_write, distance]``: ``label``
    / ``predicted`` token ids ("0" = 5, "1" = 6), ``last_write`` the position of the write the
    answer comes from and ``distance`` = pos - last_write (tokens).  Forwards ``chunk`` sequences
    at a time."""
    _check_batch(batch)
    if model.cfg.d_vocab < READ + 3:
        raise InputError(f"{model.cfg.name or 'the model'} has {model.cfg.d_vocab} tokens; flip-flop needs 7")
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
    position: to the most recent write (``to_last_write``), to all writes together
    (``to_writes``), the most attended position (``argmax_src``) and whether it is the most recent
    write.  Returns ``DataFrame[sequence, pos, correct, distance, layer, head, to_last_write,
    to_writes, argmax_src, argmax_is_last_write]``.  Needs attention heads (an LSTM or SSM raises
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
                *("to_last_write", "to_writes", "argmax_src", "argmax_is_last_write"),
            ]
        )
    layers = list(range(model.cfg.n_layers))
    seqs = sorted(set(int(s) for s in reads["sequence"]))
    index = {s: i for i, s in enumerate(seqs)}
    tokens = batch.tokens[seqs]
    writes = (tokens == W0) | (tokens == W1)  # [n, pos]
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
        for l in layers:
            att = cache[pattern_site(l)][i, :, p].float()  # [reads, head, src]
            to_last = att.gather(2, lw.clamp(min=0)[:, None, None].expand(-1, att.shape[1], 1))[..., 0]
            to_last = torch.where(lw[:, None] >= 0, to_last, torch.zeros_like(to_last))
            to_writes = (att * w[:, None, :]).sum(-1)
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
