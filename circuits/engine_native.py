"""Exact patching that recomputes only what lies downstream of each patch (native-bridge transformers).

TransformerLens runs one full forward per cell.  A patch at layer ``l``, position ``p``
cannot change anything before layer ``l`` or before position ``p`` (causal attention), and
the metric reads only a few positions.  So for a chunk of cells starting at layer ``l``
this engine

- starts from the base run's cached activations at the patched stage of layer ``l`` (a
  head-output patch starts at ``z``: nothing before ``W_O`` is recomputed in that layer);
- computes only positions ``p_min .. p_max`` (``p_max`` = the last position the metric
  reads), taking keys and values of earlier positions from the base run;
- in the last layer computes queries, outputs and MLPs only at the metric's positions;
- unembeds only the metric's positions;
- and runs all the cells of the chunk as one batch (cell-major rows).

It calls the bridge's own LayerNorm / Linear / MLP modules, so the arithmetic is the
model's; results equal the hook-based patching to float rounding (tested to 1e-4 against
``transformer_lens.patching``).

Supported: TransformerBridge built by ``boot_native`` with standard positional
embeddings, no GQA, no soft-capping (the zoo transformers and random configs).  Other
models use :mod:`circuits.engine_hooks`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.model import RunContext
from interp.weights import raw as _raw
from circuits.metrics import Metric
from circuits.sites import Cell, Site, intervention, reaches

# the stages of a block, in order; a patch at a stage re-enters the block there
STAGES = ("resid_pre", "qkv", "pattern", "z", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")
ENTRY = {"resid_pre": "resid_pre", "q": "qkv", "k": "qkv", "v": "qkv", "pattern": "qkv", "z": "z",
         "attn_out": "attn_out", "resid_mid": "resid_mid", "mlp_in": "mlp_in", "mlp_out": "mlp_out",
         "resid_post": "resid_post"}


def supports(model) -> bool:
    """Whether ``model`` is a native-bridge transformer this engine reproduces exactly."""
    try:
        from transformer_lens.model_bridge.sources.native.model import NativeAttention, NativeModel
    except ImportError:  # pragma: no cover - depends on the transformer-lens version
        return False
    bridge = model.module
    if model.cfg.family != "transformer" or not isinstance(getattr(bridge, "original_model", None), NativeModel):
        return False
    c = bridge.cfg
    if (getattr(c, "positional_embedding_type", "standard") or "standard").lower() != "standard":
        return False
    if float(getattr(c, "attn_scores_soft_cap", -1.0)) > 0 or float(getattr(c, "output_logits_soft_cap", -1.0)) > 0:
        return False
    for block in bridge.blocks:
        attn = _raw(block.attn)
        if not isinstance(attn, NativeAttention) or attn.kv_repeats != 1 or attn.rotary is not None or not attn.causal:
            return False
    return True


class NativeEngine:
    """Partial forwards of a native-bridge transformer from cached activations."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError(f"{model.cfg.name or 'this model'} is not a native-bridge transformer "
                             "(use engine='hooks')")
        bridge = model.module
        self.model = model
        self.n_layers = model.cfg.n_layers
        self.layers = []
        for block in bridge.blocks:
            attn = _raw(block.attn)
            raw_block = _raw(block)
            has_mlp = not raw_block.cfg.attn_only
            self.layers.append(dict(
                ln1=_raw(block.ln1), q=_raw(attn.q), k=_raw(attn.k), v=_raw(attn.v), o=_raw(attn.o),
                n_heads=attn.n_heads, d_head=attn.d_head, scale=attn.scale,
                ln2=_raw(block.ln2) if has_mlp else None, mlp=_raw(block.mlp) if has_mlp else None))
        self.ln_final = _raw(bridge.ln_final)
        self.unembed = _raw(bridge.unembed)

    # --- caches -----------------------------------------------------------------------------
    def base_names(self) -> list[str]:
        """Sites of the base run the engine starts from."""
        names = []
        for l in range(self.n_layers):
            names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.attn.hook_q", f"blocks.{l}.attn.hook_k",
                      f"blocks.{l}.attn.hook_v", f"blocks.{l}.attn.hook_z",
                      f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_resid_post"]
            if self.layers[l]["mlp"] is not None:
                names += [f"blocks.{l}.hook_mlp_out"]
        return names

    # --- the sweep --------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, site: Site, cells: Sequence[Cell], *, base: dict[str, torch.Tensor], base_logits: torch.Tensor,
            source: dict[str, torch.Tensor], metric: Metric, batch_tokens: int = 16384,
            progress: bool = True) -> torch.Tensor:
        """Metric (batch mean) with each cell patched: ``[len(cells)]``.  ``base``: cache of
        :meth:`base_names` from the base run; ``base_logits`` its logits; ``source``: hook name ->
        the source run's activation."""
        if site.name not in ENTRY:
            raise ValueError(f"the native engine patches {sorted(ENTRY)}, not {site.name!r}")
        batch, seq_len = base_logits.shape[:2]
        reads = torch.tensor(metric.read_positions(seq_len))
        p_max = int(reads.max())
        # logit metrics read a few vocabulary columns: unembed only those
        cols = metric.vocab_needed()
        base_at = base_logits[:, reads]                                     # [batch, n_reads, vocab]
        base_value = float(metric.values(base_at, positions=reads.tolist()).mean())
        if cols is not None:
            base_at = base_at[..., cols]
        out = torch.full((len(cells),), base_value)
        # rows per chunk: batch_tokens rows of a 1024-wide model, fewer for wider activations
        width = max(self.model.cfg.d_model, self.model.cfg.d_mlp, self.layers[0]["n_heads"] * (p_max + 1))
        budget = max(1, batch_tokens * 1024 // max(1024, width))
        order = sorted(range(len(cells)), key=lambda i: (cells[i].start, cells[i].first_pos))
        todo = [i for i in order if reaches(cells[i], site, self.model, reads.tolist())]
        bar = tqdm(total=len(cells), desc=f"patching {site.name}", disable=not progress, leave=False)
        bar.update(len(cells) - len(todo))
        k = 0
        while k < len(todo):
            first = cells[todo[k]]
            span = p_max - first.first_pos + 1
            per = max(1, budget // (batch * span))
            chunk = [i for i in todo[k:k + per] if cells[i].start == first.start]
            vals = self._chunk(site, [cells[i] for i in chunk], first.start, first.first_pos, base, base_at,
                               source, metric, reads, cols)
            out[chunk] = vals
            k += len(chunk)
            bar.update(len(chunk))
        bar.close()
        return out

    def _chunk(self, site: Site, chunk: list[Cell], start: int, p_min: int, base: dict, base_at: torch.Tensor,
               source: dict, metric: Metric, reads: torch.Tensor, cols: list[int] | None) -> torch.Tensor:
        """The metric of ``chunk``'s cells, all starting at layer ``start`` and position >= ``p_min``;
        ``base_at``: the base run's logits at the read positions (and vocabulary columns ``cols``)."""
        n = len(chunk)
        batch = base_at.shape[0]
        p_max = int(reads.max())
        rows = torch.arange(p_min, p_max + 1)
        stage_of = site.name if site.name in ("q", "k", "v", "pattern") else ENTRY[site.name]
        layers = sorted({l for c in chunk for l in c.layers})
        patches = {(stage_of, l): intervention(site, l, chunk, source[site.hook(l)], batch, self.layers[l]["n_heads"])
                   for l in layers}

        def rep(t: torch.Tensor) -> torch.Tensor:              # [batch, ...] -> [n*batch, ...] cell-major
            return t.repeat(n, *([1] * (t.ndim - 1)))

        def patch(stage: str, layer: int, act: torch.Tensor, row_pos: torch.Tensor) -> torch.Tensor:
            iv = patches.get((stage, layer))
            return act if iv is None else iv.apply(act, RunContext(positions=row_pos))

        entry = ENTRY[site.name]
        x = None
        for layer in range(start, self.n_layers):
            stage = entry if layer == start else "resid_pre"
            x, rows = self._block(layer, stage, x, rows, base, rep, patch, p_min, reads,
                                  last=layer == self.n_layers - 1)
        x = self.ln_final(x)                                                  # [n*batch, reads >= p_min, d]
        if cols is None:
            logits = self.unembed(x)
        else:
            w, b = self.unembed.weight[cols], self.unembed.bias
            logits = F.linear(x, w, None if b is None else b[cols])
        if int(reads.min()) < p_min:                                          # earlier reads are unchanged
            early = rep(base_at[:, reads < p_min])
            logits = torch.cat([early, logits], dim=1)
        vals = metric.values(logits.view(n, batch, len(reads), -1), positions=reads.tolist(), vocab=cols)
        return vals.mean(-1).float().cpu()

    def _block(self, layer: int, stage: str, x, rows: torch.Tensor, base: dict, rep, patch, p_min: int,
               reads: torch.Tensor, *, last: bool):
        """Block ``layer`` entered at ``stage`` (earlier stages come from the base run); returns the
        block output ``[n*batch, rows, d_model]`` and the absolute positions its rows hold."""
        P = self.layers[layer]
        S = {s: i for i, s in enumerate(STAGES)}
        at = S[stage]
        H, dh = P["n_heads"], P["d_head"]
        keep = reads[reads >= p_min] if last else rows      # the last block only feeds the read positions

        def cached(hook: str, r: torch.Tensor) -> torch.Tensor:
            return rep(base[f"blocks.{layer}.{hook}"][:, r])

        # attention
        if at <= S["z"]:
            if at <= S["pattern"]:
                if at == S["resid_pre"]:
                    x = patch("resid_pre", layer, x if x is not None else cached("hook_resid_pre", rows), rows)
                    h = P["ln1"](x)
                    N, T = h.shape[:2]
                    q, k, v = (P[c](h).view(N, T, H, dh) for c in "qkv")
                else:       # a q / k / v / pattern patch: projections of this layer come from the base run
                    x = cached("hook_resid_pre", rows)
                    q, k, v = (cached(f"attn.hook_{c}", rows) for c in "qkv")
                q, k, v = (patch(c, layer, t, rows) for c, t in zip("qkv", (q, k, v)))
                if p_min > 0:                                    # keys / values of earlier positions
                    k = torch.cat([cached("attn.hook_k", torch.arange(p_min)), k], dim=1)
                    v = torch.cat([cached("attn.hook_v", torch.arange(p_min)), v], dim=1)
                if len(keep) < len(rows):
                    sel = keep - int(rows[0])
                    q, x, rows = q[:, sel], x[:, sel], keep
                scores = torch.einsum("nqhd,nkhd->nhqk", q, k) / P["scale"]
                mask = torch.arange(k.shape[1])[None, :] > rows[:, None]          # [rows, keys]: causal
                pattern = F.softmax(scores.masked_fill(mask, float("-inf")), dim=-1).masked_fill(mask, 0.0)
                pattern = patch("pattern", layer, pattern, rows)
                z = torch.einsum("nhqk,nkhd->nqhd", pattern, v)
            else:
                rows = keep
                x, z = cached("hook_resid_pre", rows), cached("attn.hook_z", rows)
            z = patch("z", layer, z, rows)
            attn_out = P["o"](z.reshape(z.shape[0], z.shape[1], H * dh))
        else:
            rows = keep
            attn_out = cached("hook_attn_out", rows) if at == S["attn_out"] else None
            x = cached("hook_resid_pre", rows) if at <= S["mlp_out"] else None
        if at <= S["attn_out"]:
            x = x + patch("attn_out", layer, attn_out, rows)
        elif at <= S["mlp_out"]:
            x = x + cached("hook_attn_out", rows)                    # resid_mid of the base run
        if at <= S["resid_mid"]:
            x = patch("resid_mid", layer, x, rows)
        if P["mlp"] is not None and at <= S["mlp_out"]:
            if at <= S["mlp_in"]:
                mlp_out = P["mlp"](P["ln2"](patch("mlp_in", layer, x, rows)))
            else:
                mlp_out = cached("hook_mlp_out", rows)
            x = x + patch("mlp_out", layer, mlp_out, rows)
        if at == S["resid_post"]:
            x = cached("hook_resid_post", rows)
        return patch("resid_post", layer, x, rows), rows

