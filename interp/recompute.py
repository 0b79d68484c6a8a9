"""Exact recomputation downstream of edits: the engine that runs, for each chunk of cells of a
patching sweep (:mod:`interp.cells`), only what lies downstream of the cells, by calling the
model's own layers.

TransformerLens runs one full forward per cell.  A patch at layer ``l``, position ``p`` cannot
change anything before layer ``l`` or before position ``p`` (causal attention), and the metric
reads only a few positions.  So for a chunk of cells that enter at layer ``l`` and position
``p`` this engine

- fills the model's own key-value cache (a transformers ``Cache``: sliding windows, rotary
  conventions, recurrent states and all) with the base run's prefix, positions ``< p``, once
  per ``p``, and tiles it to the chunk's rows;
- runs the model's own forward on positions ``p ..`` only, with the layers before ``l``
  skipped (the residual entering layer ``l`` is the base run's, set by a hook) and the cells'
  patches applied by the ordinary intervention hooks at their sites (so every site the model
  names can be patched);
- stops at the final norm's input and unembeds only the positions and vocabulary columns the
  metric reads, through the model's own final norm and unembedding (:class:`~interp.weights.Readout`);
- runs all the cells of the chunk as one batch (cell-major rows).

No block maths is written here: which models it reproduces is checked empirically once per
model (:func:`why_not`: a recomputation from a middle layer and position must equal the
model's own logits); the others use :mod:`circuits.engine_hooks`, which runs every model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from interp import caches
from interp.cells import LOCAL, Cell, Site, interventions, next_chunk, reaches
from interp.errors import Unsupported
from interp.interventions import hook_fns
from interp.metrics import Metric
from interp.model import reshaping
from interp.tokens import TokenBatch
from interp.weights import Readout, readout, reproduce_tol


class _Stop(Exception):
    """Raised by the hook at the final norm's input: the rest of the forward is not needed."""


class _Skipped(nn.Module):
    """Stands in for a layer before the chunk's entry layer: hands its input on untouched (the
    entry layer's input is then set from the base run), in the form the model's layers return
    (a tensor, or a tuple of ``arity`` whose first entry is the hidden state)."""

    def __init__(self, arity: int | None):
        super().__init__()
        self.arity = arity

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.arity is None else (hidden_states,) + (None,) * (self.arity - 1)


#: the unembedding of a prefix step reads its last row only (the prefix's logits are not needed)
_last_row = reshaping(lambda x, hook: x[:, -1:])


def _layer_output_arity(model, layers: nn.ModuleList) -> int | None:
    """None if the model's layers return a tensor, else the length of the tuple they return."""
    seen: list = []
    handle = layers[0].register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        with torch.no_grad():
            model.module(torch.zeros(1, 2, dtype=torch.long, device=model.device))
    finally:
        handle.remove()
    out = seen[0]
    return len(out) if isinstance(out, tuple) else None


def layer_list(model) -> nn.ModuleList | None:
    """The ``nn.ModuleList`` the Hugging Face model iterates over, holding the bridge's blocks
    in order (None if there is none: then layers cannot be skipped)."""
    bridge = model.module
    blocks = list(getattr(bridge, "blocks", []) or [])
    hf = getattr(bridge, "original_model", None)
    if not blocks or hf is None:
        return None
    for module in hf.modules():
        if isinstance(module, nn.ModuleList) and len(module) == len(blocks):
            if all(a is b for a, b in zip(module, blocks)):
                return module
    return None


def why_not(model) -> str | None:
    """Why this engine cannot reproduce ``model`` (None if it can).  Checked once per model: a
    recomputation entering the middle layer at a middle position must give the model's own
    logits.  It never raises: a failure of the check is a reason to decline."""
    if hasattr(model, "_downstream_reason"):
        return model._downstream_reason
    reason: str | None
    if not model.cfg.causal:
        reason = "the model is not causal (a position may read later ones)"
    elif model.supports_cache and not caches.tileable(model):
        reason = "its decoding cache's rows cannot be copied per cell"
    elif layer_list(model) is None:
        reason = "the model's layers are not a list the engine can skip through"
    elif "final_resid" not in model.site_kinds():
        reason = "the model names no input of its final norm"
    else:
        try:
            Downstream(model, check=False)._check()
            reason = None
        except Unsupported as e:
            reason = str(e)
        except Exception as e:  # a model whose forward does not take a cache prefix this way
            reason = f"recomputing from a cached prefix raised {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    model._downstream_reason = reason
    return reason


def supports(model) -> bool:
    """Whether this engine reproduces ``model`` (see :func:`why_not`)."""
    return why_not(model) is None


def engine_for(model, site: str):
    """The fastest downstream-only engine that reproduces ``model`` for patches at ``site`` (a
    site kind): the hand-written :class:`interp.recompute_blocks.BlockEngine` where it applies,
    else :class:`Downstream`; None where neither does (use :mod:`circuits.engine_hooks`)."""
    from interp import recompute_blocks

    if site in recompute_blocks.ENTRY and recompute_blocks.supports(model):
        return recompute_blocks.BlockEngine(model)
    return Downstream(model) if supports(model) else None


class Downstream:
    """Partial forwards of a model from a cached prefix and a layer's base input (see the module
    docstring).  Raises :class:`~interp.errors.Unsupported` for a model it does not reproduce."""

    def __init__(self, model, check: bool = True):
        if check:
            reason = why_not(model)
            if reason is not None:
                raise Unsupported(
                    f"the downstream engine does not reproduce {model.cfg.name or 'this model'}: {reason}"
                )
        self.model = model
        #: whether earlier positions come from a cached prefix (else every position is recomputed)
        self.cached = bool(model.supports_cache)
        layers = layer_list(model)
        assert layers is not None  # why_not() found the list
        self.layers: nn.ModuleList = layers
        self.arity = _layer_output_arity(model, layers)
        self.readout: Readout = readout(model)
        self._prefixes: dict = {}

    def base_names(self) -> list[str]:
        """Sites of the base run the engine starts from: the residual entering and leaving every layer."""
        return self.model.sites("resid_pre") + self.model.sites("resid_post")

    # --- one partial forward --------------------------------------------------------------
    def prefix(self, tokens: torch.Tensor, hooks: Sequence, p: int):
        """The model's cache after the base run's first ``p`` positions (None for ``p = 0``, or
        without a cache).  Prefixes are built incrementally (the cache of the last ``p`` asked
        for, extended by the positions up to the new one), so a sweep over positions in
        increasing order costs about one forward of the prompt."""
        if p == 0 or not self.cached:
            return None
        key = (p, id(tokens))
        if key not in self._prefixes:
            done = max((q for q, t in self._prefixes if t == id(tokens) and q < p), default=0)
            cache = copy.deepcopy(self._prefixes[(done, id(tokens))]) if done else None
            trim = [(self.model.site("unembed_in"), _last_row)] if "unembed_in" in self.model.site_kinds() else []
            with torch.no_grad(), self.model.running(offset=done):
                self._prefixes[key] = self.model.step(tokens[:, done:p], cache, [*hooks, *trim])[1]
        return self._prefixes[key]

    def _partial(
        self,
        ids: torch.Tensor,
        start: int,
        p: int,
        entry: torch.Tensor,
        hooks: Sequence,
        prefix,
        stop_site: str,
        rows: torch.Tensor,
        batch: int,
    ) -> torch.Tensor:
        """One forward of ``ids`` (positions ``p ..``) with the layers before ``start`` skipped,
        ``entry`` as the residual entering layer ``start``, ``hooks`` on the way, stopped at
        ``stop_site``, whose activation at ``rows`` (relative positions) it returns."""
        m = self.model
        got: dict[str, torch.Tensor] = {}

        def enter(x: torch.Tensor, hook) -> torch.Tensor:
            return entry.to(x.dtype)

        def stop(x: torch.Tensor, hook) -> None:
            got["x"] = x[:, rows.to(x.device)]
            raise _Stop

        cache = None if prefix is None else caches.tiled(prefix, batch, ids.shape[0] // batch)
        layers = self.layers
        saved = [layers[i] for i in range(start)]
        for i in range(start):
            layers[i] = _Skipped(self.arity)
        try:
            with torch.no_grad(), m.running(offset=p):
                run_hooks = [(m.site("resid_pre", start), enter), *hooks, (stop_site, stop)]
                m.step(ids, cache, run_hooks) if self.cached else m.run_with_hooks(ids, run_hooks)
        except _Stop:
            pass
        finally:
            for i, layer in enumerate(saved):
                layers[i] = layer
        if "x" not in got:
            raise RuntimeError(f"the forward finished without reaching {stop_site}")
        return got["x"]

    def forward(
        self,
        tokens: torch.Tensor,
        start: int,
        p: int,
        n: int,
        entry: torch.Tensor,
        hooks: Sequence,
        reads: Sequence[int],
        cols: list[int] | None,
        prefix,
        local_exit: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[n * batch, len(reads), cols]`` of ``n`` copies of the base run (cell-major
        rows) recomputed from layer ``start`` and position ``p``: ``entry`` ``[batch, pos - p,
        d_model]`` is the residual entering layer ``start`` at positions ``p ..``; ``hooks`` (the
        cells' patches) act on the way; ``reads`` are absolute positions ``>= p``.

        ``local_exit``: given when every patch acts in layer ``start`` alone and changes its
        position ``p`` only (a head's output, an MLP's output, ...): the base run's residual
        leaving layer ``start`` at positions ``p ..``.  Then layer ``start`` is run at position
        ``p`` alone and the later layers from its output and ``local_exit``'s later positions."""
        m = self.model
        rel = torch.tensor([r - p for r in reads])
        ids = tokens[:, p:].repeat(n, 1)
        last = m.cfg.n_layers - 1
        if local_exit is not None and ids.shape[1] > 1:
            row = self._partial(
                ids[:, :1],
                start,
                p,
                entry[:, :1].repeat(n, 1, 1),
                hooks,
                prefix,
                m.site("resid_post", start),
                torch.tensor([0]),
                tokens.shape[0],
            )
            after = torch.cat([row, local_exit[:, 1:].repeat(n, 1, 1).to(row.dtype)], dim=1)
            if start == last:
                return self.readout.logits(after[:, rel.to(after.device)], cols)
            start, entry, hooks, tiled = start + 1, after, [], True
        else:
            tiled = False
        if not tiled:
            entry = entry.repeat(n, 1, 1)
        x = self._partial(ids, start, p, entry, hooks, prefix, m.site("final_resid"), rel, tokens.shape[0])
        return self.readout.logits(x, cols)

    def _check(self) -> None:
        """An unedited recomputation entering the middle layer at a middle position must equal
        the model's own logits (the engine's correctness, per model)."""
        m = self.model
        P = min(9, m.cfg.n_ctx)
        probe = (torch.arange(P, device=m.device)[None] * 7 + 3) % m.cfg.d_vocab
        probe = torch.cat([probe, probe.flip(1)])
        start, p = m.cfg.n_layers // 2, (P // 2 if self.cached else 0)
        with torch.no_grad():
            logits, base = m.run_with_cache(probe, names=[m.site("resid_pre", start)])
            reads = list(range(p, P))
            got = self.forward(
                probe, start, p, 2, base[m.site("resid_pre", start)][:, p:], [], reads, None, self.prefix(probe, [], p)
            )
        self._prefixes.clear()
        want = logits[:, p:].repeat(2, 1, 1)
        if got.shape != want.shape or (got - want).abs().max() > reproduce_tol(m.dtype) * (1 + want.abs().max()):
            raise Unsupported("a recomputation from a cached prefix differs from the model's own forward")

    # --- the sweep --------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        site: Site,
        cells: Sequence[Cell],
        *,
        base_tokens: torch.Tensor,
        base_hooks: Sequence,
        base: dict[str, torch.Tensor],
        base_logits: torch.Tensor,
        source: dict[str, torch.Tensor],
        metric: Metric,
        batch_tokens: int = 16384,
        progress: bool = True,
    ) -> torch.Tensor:
        """Metric (batch mean) with each cell patched: ``[len(cells)]``.  ``base``: the base run's
        :meth:`base_names`; ``base_logits`` its logits; ``source``: hook name -> the source run's
        activation; ``base_hooks``: hooks of the base run (corruptions of the embedding)."""
        m = self.model
        self._prefixes.clear()
        if isinstance(base_tokens, TokenBatch):  # right-padded: padding is never read by a causal model
            base_tokens = base_tokens.tokens
        batch, seq_len = base_logits.shape[:2]
        reads_all = metric.read_positions(seq_len)
        cols = metric.vocab_needed()  # logit metrics read a few vocabulary columns: unembed only those
        base_at = base_logits[:, reads_all]
        base_value = float(metric.values(base_at, positions=reads_all).mean())
        if cols is not None:
            base_at = base_at[..., cols]
        out = torch.full((len(cells),), base_value)
        order = sorted(range(len(cells)), key=lambda i: (cells[i].first_pos if self.cached else 0, cells[i].start))
        todo = [i for i in order if reaches(cells[i], site, m, reads_all)]
        bar = tqdm(total=len(cells), desc=f"patching {site.name}", disable=not progress, leave=False, mininterval=1.0)
        bar.update(len(cells) - len(todo))
        k = 0
        while k < len(todo):
            first = cells[todo[k]]
            # one entry position per chunk (its prefix); layers from the chunk's earliest on.  Without
            # a cache every chunk starts at position 0.
            p = first.first_pos if self.cached else 0
            span = max(reads_all) - p + 1
            per = max(1, batch_tokens // (batch * span))
            # one entry layer per chunk too (a cell entering later recomputes earlier layers), unless
            # the cells' forwards are so small that one forward for several entry layers costs less
            chunk = next_chunk(cells, todo, k, per, batch * span, m.cfg.n_layers, same_pos=self.cached)
            start = min(cells[i].start for i in chunk)
            chunk_cells = [cells[i] for i in chunk]
            hooks = hook_fns(m, interventions(m, site, chunk_cells, source, batch))
            reads = [r for r in reads_all if r >= p]
            # patches that change their own position of their own layer only
            local = site.name in LOCAL and all(c.layers == (start,) and c.pos == p for c in chunk_cells)
            logits = self.forward(
                base_tokens,
                start,
                p,
                len(chunk),
                base[m.site("resid_pre", start)][:, p:],
                hooks,
                reads,
                cols,
                self.prefix(base_tokens, base_hooks, p),
                local_exit=base[m.site("resid_post", start)][:, p:] if local and self.cached else None,
            )
            n = len(chunk)
            if len(reads) < len(reads_all):  # earlier reads are unchanged
                early = base_at[:, [r < p for r in reads_all]].repeat(n, 1, 1)
                logits = torch.cat([early, logits.to(early.dtype)], dim=1)
            vals = metric.values(logits.view(n, batch, len(reads_all), -1), positions=reads_all, vocab=cols)
            out[chunk] = vals.mean(-1).float().cpu()
            k += len(chunk)
            bar.update(len(chunk))
        bar.close()
        self._prefixes.clear()
        return out


def downstream_flops(
    model, cells: Sequence[Cell], site: Site, batch: int, reads: Sequence[int], vocab: int | None = None
) -> float:
    """Multiply-adds x 2 that any exact method must spend downstream of each cell, summed: every
    layer from the cell's on at every position from the cell's to the last read one (attention
    over all earlier keys), and the unembedding at the read positions only (``vocab`` columns of
    it: the metric's tokens for a logit metric, default the whole vocabulary).  A floor for
    benchmarks (the entry layer is counted whole)."""
    c = model.cfg
    d, dh, H, K = c.d_model, c.d_head, c.n_heads, c.n_kv_heads
    gated = bool(getattr(getattr(model.module, "cfg", None), "gated_mlp", False))
    per_tok = 2 * d * dh * (H + 2 * K) + 2 * H * dh * d + (2 * (3 if gated else 2) * d * (c.d_mlp or 0))
    p_max = max(reads)
    total = 0.0
    for cell in cells:
        if not reaches(cell, site, model, list(reads)):
            continue
        p0 = cell.first_pos
        n_layers = c.n_layers - cell.start
        n_pos = p_max - p0 + 1
        keys = sum(range(p0 + 1, p_max + 2))
        total += batch * n_layers * (n_pos * per_tok + 4 * H * dh * keys)
        total += batch * len(reads) * 2 * d * (vocab or c.d_vocab)
    return total
