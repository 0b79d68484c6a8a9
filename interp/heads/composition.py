"""Weight-based head scores: the OV copying score and Q/K/V composition between heads.

Both read :meth:`interp.Model.weights` (the one weight reader), so they work for every
transformer the loader takes, including grouped-query, bias-free models: a query head's key
and value weights are those of the key-value head it reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.model import Model

COMPOSITION_KINDS = ("Q", "K", "V")


def _weights(model: Model, fold_ln: bool) -> dict[str, torch.Tensor]:
    """Per query head W_Q, W_K, W_V [L, H, d_model, d_head], W_O [L, H, d_head, d_model],
    W_E, W_U, in float64."""
    w = model.weights(fold_ln=fold_ln)
    return {
        "W_Q": w.W_Q.double(),
        "W_K": w.per_query_head("W_K").double(),
        "W_V": w.per_query_head("W_V").double(),
        "W_O": w.W_O.double(),
        "W_E": w.W_E.double(),
        "W_U": w.W_U.double(),
    }


def copying_scores(model: Model, *, fold_ln: bool = True) -> pd.DataFrame:
    """OV-circuit copying score per head, ``DataFrame[layer, head, score]`` in [-1, 1].

    Eigenvalue positivity sum(l) / sum(|l|) of the direct-path OV circuit
    ``W_E W_V W_O W_U`` (TransformerLens convention, [d_vocab, d_vocab]); 1 means the head
    raises the logit of the tokens it attends to.  Computed from the [d_head, d_head]
    matrix ``W_O W_U W_E W_V``, which has the same non-zero eigenvalues.

    fold_ln: fold the gains of ``blocks.{l}.ln1`` into W_V and of ``ln_final`` into W_U and
    centre them over d_model (LayerNorm removes the mean), as TransformerLens's
    ``fold_ln`` does.  Ignored: the normalisation scale (a positive per-token factor),
    biases, positional embeddings, MLPs and other heads (the direct path only).
    """
    w = _weights(model, fold_ln)
    UE = w["W_U"] @ w["W_E"]  # [d_model, d_model]
    small = w["W_O"] @ UE @ w["W_V"]  # [L, H, d_head, d_head]
    lam = torch.linalg.eigvals(small)
    score = (lam.real.sum(-1) / lam.abs().sum(-1).clamp(min=1e-30)).cpu().numpy()
    L, H = score.shape
    return pd.DataFrame(
        {"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L), "score": score.reshape(-1)}
    )


def composition_scores(
    model: Model, kinds: Sequence[str] | str = COMPOSITION_KINDS, *, fold_ln: bool = True, progress: bool = True
) -> pd.DataFrame:
    """Q/K/V composition between every head pair of different layers (Elhage et al. 2021).

    ``DataFrame[kind, src_layer, src_head, dst_layer, dst_head, score]`` for src_layer <
    dst_layer: ``||OV_src R_dst||_F / (||OV_src||_F ||R_dst||_F)`` with OV = W_V W_O and R =
    W_Q W_K^T (Q), W_K W_Q^T (K), W_V W_O (V), as TransformerLens's
    ``all_composition_scores`` (equal to it with ``fold_ln=False``).  Norms are computed
    from [d_head, d_head] Gram matrices, never the [d_model, d_model] products.

    fold_ln: fold each destination layer's ln1 gain into its W_Q / W_K / W_V and centre
    them (see :func:`copying_scores`); the source's W_V is folded with its own ln1.
    Unrelated heads already score well above 0 (about 1/sqrt(d_model) for random
    weights: 0.125 at d_model 64), so compare pairs within one model and to that baseline.
    """
    if isinstance(kinds, str):
        kinds = [kinds]
    bad = [k for k in kinds if k not in COMPOSITION_KINDS]
    if bad or not kinds:
        raise InputError(f"unknown composition kind(s) {bad or kinds}; valid: {list(COMPOSITION_KINDS)}")
    w = _weights(model, fold_ln)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    # left factor of OV_src = A1 B1 with A1 = W_V [d_model, d_head], B1 = W_O [d_head, d_model]
    G1 = w["W_V"].transpose(-1, -2) @ w["W_V"]  # A1^T A1 [L, H, dh, dh]
    left_norm = (G1 * (w["W_O"] @ w["W_O"].transpose(-1, -2))).sum((-1, -2)).sqrt()
    rights = {
        "Q": (w["W_Q"], w["W_K"].transpose(-1, -2)),
        "K": (w["W_K"], w["W_Q"].transpose(-1, -2)),
        "V": (w["W_V"], w["W_O"]),
    }
    parts = []
    bar = tqdm(total=len(kinds) * (L - 1), desc="composition scores", disable=not progress or L < 8, leave=False)
    for kind in kinds:
        A2, B2 = rights[kind]
        H2 = B2 @ B2.transpose(-1, -2)  # [L, H, dh, dh]
        right_norm = ((A2.transpose(-1, -2) @ A2) * H2).sum((-1, -2)).sqrt()
        for dst in range(1, L):
            # ||A1 B1 A2 B2||^2 = tr(M^T G1 M H2) with M = B1 A2 [dh, dh], per (src, dst) pair
            M = torch.einsum("shij,gjk->shgik", w["W_O"][:dst], A2[dst])  # [src_l, src_h, dst_h, dh, dh]
            inner = M.transpose(-1, -2) @ G1[:dst, :, None] @ M
            norm = (inner * H2[dst][None, None]).sum((-1, -2)).clamp(min=0).sqrt()
            score = (norm / left_norm[:dst, :, None] / right_norm[dst][None, None]).cpu().numpy()
            sl, sh, dh = np.meshgrid(np.arange(dst), np.arange(H), np.arange(H), indexing="ij")
            parts.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "src_layer": sl.ravel(),
                        "src_head": sh.ravel(),
                        "dst_layer": dst,
                        "dst_head": dh.ravel(),
                        "score": score.ravel(),
                    }
                )
            )
            bar.update()
    bar.close()
    columns = ["kind", "src_layer", "src_head", "dst_layer", "dst_head", "score"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
