"""Evaluating a dictionary on held-out text, beside a PCA baseline with as many components as
the dictionary's mean L0.

Definitions (every number over the held-out tokens' positions the dictionary reads: from
position 1 on when it skipped the BOS):

- ``l0``: mean number of active latents per token;
- ``fvu``: fraction of variance unexplained, ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2``
  (``y`` the target site's activation, its mean over the held-out tokens);
- ``ce_clean`` / ``ce_spliced`` / ``ce_zero``: next-token cross-entropy (nats) of the clean
  run, with the reconstruction spliced in at the target site, and with that site zeroed at the
  same positions; ``ce_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)``;
- ``kl``: mean KL(clean || spliced) of the next-token distributions (nats);
- ``dead``: fraction of latents never active on these tokens; ``dense``: fraction active on
  more than 10% of them.

The PCA baseline (``method="pca"``) is fitted on training activations (a store or a tensor)
and reconstructs with its top ``round(l0)`` components plus the mean; it has no dead / dense
latents.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp import interventions as I
from interp.errors import InputError
from interp.memory import rows_per_chunk
from interp.runs import analysis, record
from interp.sae.dictionary import Dictionary
from interp.sae.store import ActivationStore, read_sites

DENSE = 0.1


class PCA:
    """Principal components of activations ``[n, d]``: ``mean [d]``, ``components [d, d]``
    (columns, by decreasing variance), reconstruction with the top ``n_components``."""

    def __init__(self, acts: torch.Tensor):
        acts = acts.double()
        self.mean = acts.mean(0)
        cov = (acts - self.mean).T @ (acts - self.mean) / max(1, len(acts) - 1)
        vals, vecs = torch.linalg.eigh(cov)
        order = vals.argsort(descending=True)
        self.variance, self.components = vals[order].float(), vecs[:, order].float()
        self.mean = self.mean.float()

    def reconstruct(self, x: torch.Tensor, n_components: int) -> torch.Tensor:
        P = self.components[:, :n_components].to(x.device)
        m = self.mean.to(x.device)
        return (x.float() - m) @ P @ P.T + m


def _training_acts(d: Dictionary, fit: ActivationStore | torch.Tensor | None, n: int = 65536) -> torch.Tensor | None:
    if isinstance(fit, torch.Tensor):
        return fit.float()
    if fit is None and d.card.get("store"):
        try:
            fit = ActivationStore.open(d.card["store"])
        except (FileNotFoundError, InputError):
            return None
    if isinstance(fit, ActivationStore):
        return fit.load(min(n, fit.n_tokens), out=d.cfg.transcoder)
    return None


def _ce(logits: torch.Tensor, tokens: torch.Tensor, start: int) -> torch.Tensor:
    """Per-position next-token loss ``[batch, pos - 1 - start]`` predicting tokens ``start+1..``."""
    lp = logits[:, start:-1].float().log_softmax(-1)
    return -lp.gather(-1, tokens[:, start + 1 :, None].to(lp.device))[..., 0]


@analysis("sae evaluation")
def evaluate(
    model,
    d: Dictionary,
    tokens: torch.Tensor | None = None,
    *,
    n_tokens: int = 16384,
    seq_len: int = 128,
    fit: ActivationStore | torch.Tensor | None = None,
    pca: bool = True,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """One row per method (``dictionary``, and ``pca`` when ``pca`` and training activations
    are at hand: ``fit`` or the store on the dictionary's card) with the columns of the module
    docstring, on ``tokens`` (default: ``n_tokens`` of the held-out corpus split, or the
    model's own generations with another seed)."""
    d.check(model)
    if tokens is None:
        from interp.sae.text import text_tokens

        tokens = text_tokens(model, n_tokens, seq_len=min(seq_len, model.cfg.n_ctx), split="test")
    tokens = model.validate_tokens(tokens)
    rows, length = tokens.shape
    start = 1 if d.cfg.skip_bos else 0
    if length - start < 2:
        raise InputError("evaluation needs sequences of at least 3 tokens")
    site, target = d.cfg.site, d.cfg.target_site
    train = _training_acts(d, fit) if pca else None
    basis = PCA(train) if train is not None else None
    bytes_per_row = 4 * length * (3 * model.cfg.d_vocab + 20 * model.cfg.d_model + d.width)
    chunk = rows_per_chunk(bytes_per_row, "evaluating a dictionary", batch_size)
    counts = torch.zeros(d.width, dtype=torch.float64)
    n_tok = 0
    l0_total = 0.0
    ys, yhats, pcas = [], [], []
    ce: dict[str, list] = {"clean": [], "dictionary": [], "zero": [], "pca": []}
    kls: dict[str, list] = {"dictionary": [], "pca": []}
    pos = start if start else None
    # first pass: the activations (forwards stopped at the sites), L0, density, FVU
    with torch.no_grad():
        for lo in range(0, rows, chunk):
            got = read_sites(model, tokens[lo : lo + chunk], list(dict.fromkeys([site, target])))
            f = d.encode(got[site][:, start:])
            active = f > 0
            l0_total += float(active.sum())
            counts += active.reshape(-1, d.width).sum(0).double().cpu()
            n_tok += active.shape[0] * active.shape[1]
            y = got[target][:, start:]
            ys.append(y.reshape(-1, y.shape[-1]).float().cpu())
            yhats.append(d.decode(f).reshape(-1, y.shape[-1]).float().cpu())
    n_comp = max(1, round(l0_total / max(n_tok, 1)))
    # second pass: the loss with each reconstruction spliced in, and zero-ablated
    with torch.no_grad():
        for i, lo in enumerate(range(0, rows, chunk)):
            batch = tokens[lo : lo + chunk]
            clean_logits = model(batch)
            ce["clean"].append(_ce(clean_logits, batch, start).cpu())
            clean_lp = clean_logits[:, start:-1].float().log_softmax(-1)
            shape = (len(batch), length - start, -1)
            recons = {"dictionary": yhats[i].view(shape)}
            if basis is not None:
                recons["pca"] = basis.reconstruct(ys[i], n_comp).view(shape)
                pcas.append(recons["pca"].reshape(-1, recons["pca"].shape[-1]))
            for method, value in recons.items():
                full = torch.zeros(len(batch), length, value.shape[-1], dtype=model.dtype, device=model.device)
                full[:, start:] = value.to(full)
                with I.apply(model, [I.patch(target, full, positions=pos)]):
                    out = model(batch)
                ce[method].append(_ce(out, batch, start).cpu())
                lp = out[:, start:-1].float().log_softmax(-1)
                kls[method].append((clean_lp.exp() * (clean_lp - lp)).sum(-1).cpu())
            with I.apply(model, [I.zero(target, positions=pos)]):
                ce["zero"].append(_ce(model(batch), batch, start).cpu())
    Y = torch.cat(ys)
    total_var = float((Y - Y.mean(0)).pow(2).sum())
    l0 = l0_total / n_tok
    ce_clean = float(torch.cat(ce["clean"]).mean())
    ce_zero = float(torch.cat(ce["zero"]).mean())

    def row(method: str, recon: torch.Tensor) -> dict:
        ce_s = float(torch.cat(ce[method]).mean())
        return {
            "method": method,
            "l0": l0 if method == "dictionary" else float(n_comp),
            "fvu": float((Y - recon).pow(2).sum()) / total_var,
            "ce_clean": ce_clean,
            "ce_spliced": ce_s,
            "ce_zero": ce_zero,
            "ce_recovered": (ce_zero - ce_s) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan"),
            "kl": float(torch.cat(kls[method]).mean()),
            "dead": float((counts == 0).double().mean()) if method == "dictionary" else float("nan"),
            "dense": float((counts / n_tok > DENSE).double().mean()) if method == "dictionary" else float("nan"),
            "tokens": n_tok,
        }

    out_rows = [row("dictionary", torch.cat(yhats))]
    if basis is not None and pcas:
        out_rows.append(row("pca", torch.cat(pcas)))
    frame = pd.DataFrame(out_rows)
    record(site=target, density=(counts / max(n_tok, 1)).float())
    return frame
