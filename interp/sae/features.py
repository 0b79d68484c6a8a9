"""Reading a dictionary's features: where each latent fires (top-activating contexts with the
token), how strongly (activation histograms, density), what it writes (the tokens its decoder
direction promotes and suppresses through the unembedding), and a search over them.

:func:`scan` runs the dictionary over text once and keeps every non-zero activation as
(latent, row, pos, value) triples; the other functions read that scan and return tidy frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.errors import InputError
from interp.memory import check_total, rows_per_chunk
from interp.sae.dictionary import Dictionary
from interp.sae.store import read_sites


@dataclass
class FeatureScan:
    """Every non-zero latent activation over ``tokens [rows, seq_len]``: ``latent``, ``row``,
    ``pos``, ``value`` (``[nnz]`` each), ``n_tokens`` positions read, the dictionary's ``width``."""

    tokens: torch.Tensor
    latent: torch.Tensor
    row: torch.Tensor
    pos: torch.Tensor
    value: torch.Tensor
    n_tokens: int
    width: int


def scan(
    model, d: Dictionary, tokens: torch.Tensor | None = None, *, n_tokens: int = 16384, seq_len: int = 64
) -> FeatureScan:
    """Runs the dictionary over ``tokens`` (default: ``n_tokens`` of held-out corpus text in rows
    of ``seq_len``) and keeps its non-zero activations (position 0 left out when the dictionary
    skipped the BOS)."""
    d.check(model)
    if tokens is None:
        from interp.sae.text import text_tokens

        tokens = text_tokens(model, n_tokens, seq_len=min(seq_len, model.cfg.n_ctx), split="test")
    tokens = model.validate_tokens(tokens)
    rows, length = tokens.shape
    start = 1 if d.cfg.skip_bos else 0
    chunk = rows_per_chunk(4 * length * (20 * model.cfg.d_model + 2 * d.width), "scanning features")
    parts: list[tuple[torch.Tensor, ...]] = []
    held = 0
    with torch.no_grad():
        for lo in range(0, rows, chunk):
            x = read_sites(model, tokens[lo : lo + chunk], [d.cfg.site])[d.cfg.site][:, start:]
            f = d.encode(x)
            r, p, i = f.nonzero(as_tuple=True)
            parts.append((i.cpu(), (r + lo).cpu(), (p + start).cpu(), f[r, p, i].float().cpu()))
            held += len(i) * 20
            check_total(held, "the feature scan's activations")
    cat = [torch.cat([part[j] for part in parts]) for j in range(4)]
    return FeatureScan(tokens.cpu(), cat[0], cat[1], cat[2], cat[3], rows * (length - start), d.width)


def density(s: FeatureScan) -> pd.DataFrame:
    """Per latent: ``density`` (fraction of tokens where it is active), ``mean_activation``
    (over those tokens), ``max_activation``; rows ordered by latent."""
    counts = torch.bincount(s.latent, minlength=s.width).double()
    sums = torch.zeros(s.width, dtype=torch.float64).index_add_(0, s.latent, s.value.double())
    maxes = torch.zeros(s.width).scatter_reduce_(0, s.latent, s.value, reduce="amax")
    return pd.DataFrame(
        {
            "latent": range(s.width),
            "density": (counts / max(s.n_tokens, 1)).numpy(),
            "mean_activation": (sums / counts.clamp(min=1)).numpy(),
            "max_activation": maxes.numpy(),
        }
    )


def _check(s: FeatureScan, latent: int) -> int:
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < s.width:
        raise InputError(f"latent must be an int in 0..{s.width - 1}, got {latent!r}")
    return latent


def top_contexts(model, s: FeatureScan, latent: int, *, n: int = 10, window: int = 8) -> pd.DataFrame:
    """The ``n`` strongest activations of ``latent`` with their context: columns ``latent``,
    ``rank``, ``activation``, ``row``, ``pos``, ``token`` (the token it fired on), ``left`` /
    ``right`` (up to ``window`` tokens of text before / after it)."""
    latent = _check(s, latent)
    where = (s.latent == latent).nonzero()[:, 0]
    order = s.value[where].argsort(descending=True)[:n]
    out = []
    for rank, j in enumerate(where[order].tolist()):
        r, p = int(s.row[j]), int(s.pos[j])
        ids = s.tokens[r]
        out.append(
            {
                "latent": latent,
                "rank": rank,
                "activation": float(s.value[j]),
                "row": r,
                "pos": p,
                "token": model.decode([int(ids[p])]),
                "left": model.decode(ids[max(0, p - window) : p]) if p else "",
                "right": model.decode(ids[p + 1 : p + 1 + window]),
            }
        )
    return pd.DataFrame(out, columns=["latent", "rank", "activation", "row", "pos", "token", "left", "right"])


def histogram(s: FeatureScan, latent: int, *, bins: int = 30) -> pd.DataFrame:
    """``latent``'s non-zero activations in ``bins`` equal bins: ``lo``, ``hi``, ``count``."""
    latent = _check(s, latent)
    values = s.value[s.latent == latent]
    if not len(values):
        return pd.DataFrame({"latent": [], "lo": [], "hi": [], "count": []})
    hi = float(values.max())
    edges = torch.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
    counts = torch.histc(values, bins=bins, min=0.0, max=float(edges[-1]))
    return pd.DataFrame(
        {"latent": latent, "lo": edges[:-1].numpy(), "hi": edges[1:].numpy(), "count": counts.long().numpy()}
    )


def logit_effects(model, d: Dictionary, latents: list[int] | None = None, *, k: int = 10) -> pd.DataFrame:
    """The tokens each latent's decoder direction promotes and suppresses most through the
    unembedding (the direction times the final norm's gain, then ``W_U``; Bricken et al.'s
    logit weights).  Columns ``latent``, ``effect`` (``promoted`` / ``suppressed``), ``rank``,
    ``token``, ``token_id``, ``value``.  A transcoder's direction is read at its output site."""
    from interp.weights import readout

    ro = readout(model)
    chosen = list(range(d.width)) if latents is None else [d.check_latent(i) for i in latents]
    if not chosen:
        raise InputError("give at least one latent")
    gain = ro.norm.gain if ro.norm is not None else None  # the final norm's gain (Gemma: 1 + w)
    rows = []
    for lo in range(0, len(chosen), 256):
        idx = chosen[lo : lo + 256]
        dirs = d.W_dec.detach()[idx] / d.out_scale
        if gain is not None:
            dirs = dirs * gain.to(dirs)
        logits = dirs.to(ro.W_U) @ ro.W_U  # [n, vocab]
        top = logits.topk(k, dim=-1)
        bottom = (-logits).topk(k, dim=-1)
        for n_i, latent in enumerate(idx):
            for effect, vals, ids, sign in (
                ("promoted", top.values, top.indices, 1),
                ("suppressed", bottom.values, bottom.indices, -1),
            ):
                for rank in range(k):
                    tid = int(ids[n_i, rank])
                    rows.append(
                        {
                            "latent": latent,
                            "effect": effect,
                            "rank": rank,
                            "token": model.decode([tid]),
                            "token_id": tid,
                            "value": sign * float(vals[n_i, rank]),
                        }
                    )
    return pd.DataFrame(rows)


def search(model, s: FeatureScan, query: str, *, n: int = 20, top: int = 20) -> pd.DataFrame:
    """Latents whose strongest activations fall on tokens matching ``query`` (case-insensitive,
    surrounding spaces ignored): columns ``latent``, ``matches`` (of its ``top`` strongest
    activations, how many are on a matching token), ``density``; the ``n`` best."""
    q = str(query).strip().lower()
    if not q:
        raise InputError("type a word to search for")
    vocab_match = {i for i, t in enumerate(model.vocabulary()) if t.strip().lower() == q}
    if not vocab_match:
        raise InputError(f"no token of the vocabulary reads {query!r}")
    on_token = torch.isin(s.tokens[s.row, s.pos], torch.tensor(sorted(vocab_match)))
    dens = density(s).set_index("latent")["density"]
    hits = []
    for latent in s.latent[on_token].unique().tolist():
        where = (s.latent == latent).nonzero()[:, 0]
        best = where[s.value[where].argsort(descending=True)[:top]]
        hits.append({"latent": latent, "matches": int(on_token[best].sum()), "density": float(dens[latent])})
    frame = pd.DataFrame(hits, columns=["latent", "matches", "density"])
    return frame.sort_values(["matches", "density"], ascending=[False, True]).head(n).reset_index(drop=True)
