"""The hand-written block engine: recomputation downstream of patches for the transformers whose
block maths it implements (TransformerLens native bridges, GPT-2, Llama-family: rotary, RMSNorm,
gated MLP, grouped-query attention, no biases; Gemma-2-style attention soft-capping).

It does what :class:`interp.recompute.Downstream` does (only the layers and positions downstream
of each cell, the base run's keys and values for earlier positions, only the metric's positions
and vocabulary columns unembedded), but on the raw torch modules with its own attention:

- it starts at the patched stage (a head-output patch starts at ``W_O``: nothing before it is
  recomputed in that layer), and a position-local patch recomputes only its own position in
  its own layer;
- in the last layer it computes queries, outputs and MLPs only at the metric's positions;
- it reads the base run's earlier keys and values broadcast over the cells, without copies.

It is kept beside the generic engine because ``benchmarks/patching.py`` shows it faster on the
models it covers (smollm2-135m's IOI sweep: see the benchmark's engine line).  Whether it
reproduces a model is checked empirically once per model (an unpatched recomputation of a probe
must equal the model's logits); :func:`supports` never raises: any failure declines, and the
generic engine or :mod:`circuits.engine_hooks` runs the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from interp.cells import Cell, Site, intervention, next_chunk, reaches
from interp.errors import InputError
from interp.metrics import Metric
from interp.model import RunContext
from interp.sharding import onloaded
from interp.weights import raw, reproduce_tol

# the stages of a block, in order; a patch at a stage re-enters the block there
STAGES = ("resid_pre", "qkv", "pattern", "z", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")
ENTRY = {
    "resid_pre": "resid_pre",
    "q": "qkv",
    "k": "qkv",
    "v": "qkv",
    "pattern": "qkv",
    "z": "z",
    "attn_out": "attn_out",
    "resid_mid": "resid_mid",
    "mlp_in": "mlp_in",
    "mlp_out": "mlp_out",
    "resid_post": "resid_post",
}


@dataclass
class Layer:
    """The modules and constants of one block, as the engine calls them."""

    ln1: Callable
    q: Callable
    k: Callable
    v: Callable
    o: Callable
    ln2: Callable | None
    mlp: Callable | None
    n_heads: int
    n_kv: int
    d_head: int
    scale: float  # multiplies q.k
    softcap: float | None = None  # Gemma-2 attention-score soft-capping
    window: int | None = None  # sliding-window attention (keys within `window` positions)


class Unsupported(Exception):
    """The model has a feature the engine does not reproduce (internal: :func:`supports` declines)."""


def _layers(model) -> tuple[list[Layer], Callable | None, Callable, nn.Module, float | None]:
    """(layers, rotary module or None, final norm, unembed, final-logit soft-cap) of a bridge."""
    bridge = model.module
    c = bridge.cfg
    if model.cfg.family != "transformer" or not hasattr(bridge, "blocks"):
        raise Unsupported("not a TransformerBridge transformer")
    if getattr(c, "parallel_attn_mlp", False) or getattr(c, "use_parallel_residual", False):
        raise Unsupported("parallel attention and MLP")
    pos_type = (getattr(c, "positional_embedding_type", "standard") or "standard").lower()
    if pos_type not in ("standard", "rotary"):
        raise Unsupported(f"positional embedding {pos_type!r}")
    hf = getattr(bridge, "original_model", None)
    hf_cfg = getattr(hf, "config", None)
    out = []
    for block in bridge.blocks:
        attn = block.attn
        raw_attn = raw(attn)
        q, k, v, o = (getattr(attn, n, None) for n in ("q", "k", "v", "o"))
        if q is None or k is None or v is None or o is None or getattr(block, "ln1", None) is None:
            raise Unsupported("no separate q / k / v / o projections")
        n_heads = model.cfg.n_heads
        n_kv = model.cfg.n_kv_heads
        d_head = model.cfg.d_head
        if hasattr(raw_attn, "scaling"):  # HF Llama / Gemma / Mistral / Qwen
            # (torch types a module's unknown attributes as Tensor | Module; these are floats)
            scale = float(raw_attn.scaling)  # type: ignore[arg-type]
        elif hasattr(raw_attn, "scale") and not hasattr(raw_attn, "c_attn"):  # TransformerLens native
            scale = 1.0 / float(raw_attn.scale)  # type: ignore[arg-type]
        elif hf_cfg is not None and getattr(hf_cfg, "model_type", "") == "gpt2":
            if getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(
                hf_cfg, "reorder_and_upcast_attn", False
            ):
                raise Unsupported("GPT-2 with layer-scaled attention")
            scale = d_head**-0.5 if getattr(hf_cfg, "scale_attn_weights", True) else 1.0
        else:
            raise Unsupported(f"attention module {type(raw_attn).__name__}")
        if getattr(raw_attn, "rotary", None) is not None or getattr(raw_attn, "causal", True) is False:
            raise Unsupported("native rotary or non-causal attention")
        softcap = getattr(raw_attn, "attn_logit_softcapping", None)
        window = getattr(raw_attn, "sliding_window", None)
        has_mlp = getattr(block, "mlp", None) is not None and model.cfg.d_mlp > 0
        if has_mlp and getattr(block, "ln2", None) is None:
            raise Unsupported("an MLP without a norm before it (parallel or norm-free blocks)")
        out.append(
            Layer(
                raw(block.ln1),
                raw(q),
                raw(k),
                raw(v),
                raw(o),
                raw(block.ln2) if has_mlp else None,
                raw(block.mlp) if has_mlp else None,
                n_heads,
                n_kv,
                d_head,
                scale,
                float(softcap) if softcap else None,
                int(window) if window else None,
            )
        )
    rotary = raw(bridge.rotary_emb) if pos_type == "rotary" and hasattr(bridge, "rotary_emb") else None
    if pos_type == "rotary" and rotary is None:
        raise Unsupported("rotary model without a shared rotary module")
    final_cap = getattr(hf_cfg, "final_logit_softcapping", None) if hf_cfg is not None else None
    return out, rotary, raw(bridge.ln_final), raw(bridge.unembed), float(final_cap) if final_cap else None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half convention) of ``x [N, T, H, dh]`` at ``cos/sin [T, dh]``."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[None, :, None].to(x.dtype) + rot * sin[None, :, None].to(x.dtype)


def supports(model) -> bool:
    """Whether this engine reproduces ``model`` (checked once per model on a probe; never raises)."""
    cached = getattr(model, "_block_engine_ok", None)
    if cached is not None:
        return cached
    try:
        BlockEngine(model, check=True)
        ok = True
    except Exception:  # a feature it does not implement, or a module it cannot call this way
        ok = False
    model._block_engine_ok = ok
    return ok


class BlockEngine:
    """Partial forwards of a transformer from cached activations (see the module docstring)."""

    def __init__(self, model, check: bool = False):
        self.model = model
        self.layers, self.rotary, self.ln_final, self.unembed, self.final_cap = _layers(model)
        self.n_layers = model.cfg.n_layers
        self._cos_sin: dict = {}
        self._early_kv: dict = {}
        if check:
            self._check()

    # --- pieces ---------------------------------------------------------------------------
    def _rope(self, positions: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (int(positions.min()), int(positions.max()), len(positions))
        if self.rotary is None:
            raise RuntimeError("no rotary module")
        if key not in self._cos_sin or len(self._cos_sin) > 64:
            if len(self._cos_sin) > 64:
                self._cos_sin.clear()
            cos, sin = self.rotary(like, positions.to(like.device)[None])
            self._cos_sin[key] = (cos[0], sin[0])
        return self._cos_sin[key]

    def _logits(self, x: torch.Tensor, cols: list[int] | None) -> torch.Tensor:
        x = self.ln_final(x)
        if cols is None:
            logits = self.unembed(x)
        else:
            with onloaded(self.unembed):  # offloaded by accelerate: its weight holds values only while loaded
                weight = self.unembed.weight
                assert isinstance(weight, torch.Tensor)  # the unembedding's parameter
                w = weight[cols]
                b = getattr(self.unembed, "bias", None)
                logits = F.linear(x, w, None if b is None else b[cols])
        if self.final_cap:
            logits = torch.tanh(logits / self.final_cap) * self.final_cap
        return logits

    def _check(self) -> None:
        """An unpatched recomputation of every layer of a probe must equal the model's logits."""
        m = self.model
        probe = (torch.arange(min(9, m.cfg.n_ctx), device=m.device)[None] * 7 + 3) % m.cfg.d_vocab
        with torch.no_grad():
            logits, base = m.run_with_cache(probe, names=self.base_names())
            x = None
            rows = torch.arange(probe.shape[1])
            for layer in range(self.n_layers):
                x, rows = self._block(
                    layer, "resid_pre", x, rows, base, lambda t: t, lambda s, l, a, r: a, 0, rows, last=False
                )
            assert x is not None  # a transformer has layers
            got = self._logits(x, None)
        self._early_kv.clear()
        if got.shape != logits.shape or (got - logits).abs().max() > reproduce_tol(m.dtype) * (1 + logits.abs().max()):
            raise Unsupported("the engine's recomputation differs from the model's own forward")

    def base_names(self) -> list[str]:
        """Sites of the base run the engine starts from."""
        m = self.model
        names = []
        for l in range(self.n_layers):
            names += [m.site(k, l) for k in ("resid_pre", "q", "k", "v", "z", "attn_out", "resid_post")]
            if self.layers[l].mlp is not None:
                names.append(m.site("mlp_out", l))
        return names

    # --- the sweep --------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        site: Site,
        cells: Sequence[Cell],
        *,
        base: dict[str, torch.Tensor],
        base_logits: torch.Tensor,
        source: dict[str, torch.Tensor],
        metric: Metric,
        base_tokens=None,
        base_hooks=(),
        batch_tokens: int = 16384,
        progress: bool = True,
    ) -> torch.Tensor:
        """Metric (batch mean) with each cell patched: ``[len(cells)]``.  ``base``: cache of
        :meth:`base_names` from the base run; ``base_logits`` its logits; ``source``: hook name ->
        the source run's activation (``base_tokens`` / ``base_hooks``: not needed here, taken for
        the generic engine's signature)."""
        if site.name not in ENTRY:
            raise InputError(f"the fast engine patches {sorted(ENTRY)}, not {site.name!r}")
        self._early_kv.clear()
        batch, seq_len = base_logits.shape[:2]
        reads = torch.tensor(metric.read_positions(seq_len))
        cols = metric.vocab_needed()  # logit metrics read a few vocabulary columns: unembed only those
        base_at = base_logits[:, reads]  # [batch, n_reads, vocab]
        base_value = float(metric.values(base_at, positions=reads.tolist()).mean())
        if cols is not None:
            base_at = base_at[..., cols]
        out = torch.full((len(cells),), base_value)
        width = max(self.model.cfg.d_model, self.model.cfg.d_mlp, self.layers[0].n_heads * (int(reads.max()) + 1))
        budget = max(1, batch_tokens * 1024 // max(1024, width))  # rows per chunk, fewer for wide activations
        order = sorted(range(len(cells)), key=lambda i: (cells[i].first_pos, cells[i].start))
        todo = [i for i in order if reaches(cells[i], site, self.model, reads.tolist())]
        bar = tqdm(total=len(cells), desc=f"patching {site.name}", disable=not progress, leave=False, mininterval=1.0)
        bar.update(len(cells) - len(todo))
        k = 0
        while k < len(todo):
            first = cells[todo[k]]
            span = int(reads.max()) - first.first_pos + 1
            per = max(1, budget // (batch * span))
            # one entry position per chunk (a cell at p recomputes positions p.. only) and one entry
            # layer, unless the forwards are so small that one from the earliest layer costs less
            chunk = next_chunk(cells, todo, k, per, batch * span, self.n_layers)
            out[chunk] = self._chunk(
                site,
                [cells[i] for i in chunk],
                first.start,
                first.first_pos,
                base,
                base_at,
                source,
                metric,
                reads,
                cols,
            )
            k += len(chunk)
            bar.update(len(chunk))
        bar.close()
        return out

    def _chunk(
        self,
        site: Site,
        chunk: list[Cell],
        start: int,
        p_min: int,
        base: dict,
        base_at: torch.Tensor,
        source: dict,
        metric: Metric,
        reads: torch.Tensor,
        cols: list[int] | None,
    ) -> torch.Tensor:
        """The metric of ``chunk``'s cells, all starting at layer ``start`` and position >= ``p_min``."""
        n = len(chunk)
        batch = base_at.shape[0]
        p_max = int(reads.max())
        rows = torch.arange(p_min, p_max + 1)
        stage_of = site.name if site.name in ("q", "k", "v", "pattern") else ENTRY[site.name]
        layers = sorted({l for c in chunk for l in c.layers})
        heads = {
            l: source[site.hook(l)].shape[1 if site.layout == "pattern" else 2] if site.has_heads else 1 for l in layers
        }
        patches = {(stage_of, l): intervention(site, l, chunk, source[site.hook(l)], batch, heads[l]) for l in layers}

        def rep(t: torch.Tensor) -> torch.Tensor:  # [batch, ...] -> [n*batch, ...] cell-major
            return t.repeat(n, *([1] * (t.ndim - 1)))

        def patch(stage: str, layer: int, act: torch.Tensor, row_pos: torch.Tensor) -> torch.Tensor:
            iv = patches.get((stage, layer))
            return act if iv is None else iv.apply(act, RunContext(positions=row_pos))

        x = None
        entry = ENTRY[site.name]
        local = STAGES.index(entry) >= STAGES.index("z") and all(c.pos == p_min for c in chunk)
        for layer in range(start, self.n_layers):
            last = layer == self.n_layers - 1
            if layer == start and local and not last and p_max > p_min:
                # a patch from z on changes its own position only in its layer: recompute that row, and
                # take the later rows from the base run's block output
                x, _ = self._block(layer, entry, None, rows[:1], base, rep, patch, p_min, reads, last=False)
                rest = rep(base[self.model.site("resid_post", layer)][:, p_min + 1 : p_max + 1])
                x = torch.cat([x, rest], dim=1)
                continue
            x, rows = self._block(
                layer, entry if layer == start else "resid_pre", x, rows, base, rep, patch, p_min, reads, last=last
            )
        assert x is not None  # the chunk's cells start at a layer of the model
        logits = self._logits(x, cols)  # [n*batch, reads >= p_min, cols]
        if int(reads.min()) < p_min:  # earlier reads are unchanged
            logits = torch.cat([rep(base_at[:, reads < p_min]), logits], dim=1)
        vals = metric.values(logits.view(n, batch, len(reads), -1), positions=reads.tolist(), vocab=cols)
        return vals.mean(-1).float().cpu()

    def _early(self, layer: int, base: dict, p_min: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The base run's keys (rotated at their own positions) and values of positions
        ``< p_min``, ``[B, p_min, H_kv, d_head]``: shared by every cell of a chunk, never copied."""
        m = self.model
        key = (layer, id(base))
        if key not in self._early_kv:
            k = base[m.site("k", layer)]
            if self.rotary is not None:
                k = _rotate(k, *self._rope(torch.arange(k.shape[1]), k))
            self._early_kv[key] = (k, base[m.site("v", layer)])
        k, v = self._early_kv[key]
        return k[:, :p_min], v[:, :p_min]

    def _attend(
        self,
        P: Layer,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        p_min: int,
        base: dict,
        patch,
    ) -> torch.Tensor:
        """Attention of queries ``q [N, T, H, dh]`` (N = cells x batch, cell-major) over the
        base run's earlier keys (shared, broadcast over cells) and the recomputed ones ``k / v
        [N, T', H_kv, dh]`` (positions ``p_min..``); grouped-query heads without copying keys."""
        N, T, H, dh = q.shape
        K = P.n_kv
        g = H // K
        qg = q.view(N, T, K, g, dh)
        parts = [torch.einsum("ntkgd,nskd->nkgts", qg, k)]  # [N, K, g, T, T']
        k_e = v_e = None
        if p_min > 0:
            k_e, v_e = self._early(layer, base, p_min)  # [B, S, K, dh]
            B = k_e.shape[0]
            early = torch.einsum("cbtkgd,bskd->cbkgts", qg.view(N // B, B, T, K, g, dh), k_e)
            parts.insert(0, early.reshape(N, K, g, T, p_min))
        scores = torch.cat(parts, dim=-1).reshape(N, H, T, -1) * P.scale
        if P.softcap:
            scores = torch.tanh(scores / P.softcap) * P.softcap
        keys = torch.arange(scores.shape[-1])
        mask = keys[None, :] > rows[:, None]  # [rows, keys]: causal
        if P.window:
            mask |= keys[None, :] <= rows[:, None] - P.window
        mask = mask.to(scores.device)
        pattern = F.softmax(scores.float().masked_fill(mask, float("-inf")), dim=-1).to(q.dtype)
        pattern = patch("pattern", layer, pattern.masked_fill(mask, 0.0), rows)
        pg = pattern.view(N, K, g, T, -1)
        z = torch.einsum("nkgts,nskd->ntkgd", pg[..., p_min:], v)
        if p_min > 0:
            assert v_e is not None  # read above when p_min > 0
            B = v_e.shape[0]
            z = z + torch.einsum(
                "cbkgts,bskd->cbtkgd", pg[..., :p_min].reshape(N // B, B, K, g, T, p_min), v_e
            ).reshape(N, T, K, g, dh)
        return z.reshape(N, T, H, dh)

    def _block(
        self,
        layer: int,
        stage: str,
        x,
        rows: torch.Tensor,
        base: dict,
        rep,
        patch,
        p_min: int,
        reads: torch.Tensor,
        *,
        last: bool,
    ):
        """Block ``layer`` entered at ``stage`` (earlier stages come from the base run); returns the
        block output ``[n*batch, rows, d_model]`` and the absolute positions its rows hold."""
        P = self.layers[layer]
        m = self.model
        S = {s: i for i, s in enumerate(STAGES)}
        at = S[stage]
        keep = reads[reads >= p_min] if last else rows  # the last block only feeds the read positions

        def cached(kind: str, r: torch.Tensor) -> torch.Tensor:
            return rep(base[m.site(kind, layer)][:, r.to(base[m.site(kind, layer)].device)])

        if at <= S["z"]:
            if at <= S["pattern"]:
                if at == S["resid_pre"]:
                    x = patch("resid_pre", layer, x if x is not None else cached("resid_pre", rows), rows)
                    h = P.ln1(x)
                    N, T = h.shape[:2]
                    q, k, v = (
                        P.q(h).view(N, T, P.n_heads, P.d_head),
                        P.k(h).view(N, T, P.n_kv, P.d_head),
                        P.v(h).view(N, T, P.n_kv, P.d_head),
                    )
                else:  # a q / k / v / pattern patch: projections of this layer come from the base run
                    x = cached("resid_pre", rows)
                    q, k, v = (cached(c, rows) for c in "qkv")
                q, k, v = (patch(c, layer, t, rows) for c, t in zip("qkv", (q, k, v)))
                if self.rotary is not None:
                    k = _rotate(k, *self._rope(rows, k))
                if len(keep) < len(rows):
                    sel = keep - int(rows[0])
                    q, x, rows = q[:, sel], x[:, sel], keep
                if self.rotary is not None:
                    q = _rotate(q, *self._rope(rows, q))
                z = self._attend(P, layer, q, k, v, rows, p_min, base, patch)
            else:
                rows = keep
                x, z = cached("resid_pre", rows), cached("z", rows)
            z = patch("z", layer, z, rows)
            attn_out = P.o(z.reshape(z.shape[0], z.shape[1], P.n_heads * P.d_head))
        else:
            rows = keep
            attn_out = cached("attn_out", rows) if at == S["attn_out"] else None
            x = cached("resid_pre", rows) if at <= S["mlp_out"] else None
        if at <= S["attn_out"]:
            x = x + patch("attn_out", layer, attn_out, rows)
        elif at <= S["mlp_out"]:
            x = x + cached("attn_out", rows)  # resid_mid of the base run
        if at <= S["resid_mid"]:
            x = patch("resid_mid", layer, x, rows)
        if P.mlp is not None and at <= S["mlp_out"]:
            if at <= S["mlp_in"]:
                assert P.ln2 is not None  # _layers declines MLP blocks without ln2
                mlp_out = P.mlp(P.ln2(patch("mlp_in", layer, x, rows)))
            else:
                mlp_out = cached("mlp_out", rows)
            x = x + patch("mlp_out", layer, mlp_out, rows)
        if at == S["resid_post"]:
            x = cached("resid_post", rows)
        return patch("resid_post", layer, x, rows), rows
