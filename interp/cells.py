"""The cells of a patching sweep: a resolved :class:`Site`, one patch (:class:`Cell`: a window of
layers and the position / head / source position it touches), the intervention that patches
a chunk of cells in cell-major rows, and which cells can change the positions a metric reads.
Both patching engines (:mod:`interp.recompute`, :mod:`circuits.engine_hooks`) run them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp import interventions as I


@dataclass(frozen=True)
class Site:
    """A site resolved for one model: short ``name``, hook ``template`` (``{l}`` = layer) and layout."""

    name: str
    template: str
    layout: str
    #: resid_mid on a TransformerBridge, whose hook_resid_mid only feeds the MLP: patched as the
    #: MLP's input (ln2.hook_in) plus the same change carried along the skip connection
    via_mlp_in: bool = False

    def hook(self, layer: int) -> str:
        return self.template.format(l=layer)

    @property
    def has_heads(self) -> bool:
        return self.layout in ("head", "pattern")


@dataclass(frozen=True)
class Cell:
    """One patch: ``layers`` (a window), and the pos / head / src_pos it touches (None = all)."""

    layers: tuple[int, ...]
    pos: int | None = None
    head: int | None = None
    src_pos: int | None = None

    @property
    def start(self) -> int:
        return self.layers[0]

    @property
    def first_pos(self) -> int:
        """The earliest position the patch changes: later positions only, in a causal model."""
        return 0 if self.pos is None else self.pos


def intervention(
    site: Site, layer: int, chunk: Sequence[Cell], source: torch.Tensor, batch: int, n_heads: int
) -> I.Intervention | None:
    """The :class:`interp.interventions.Intervention` that patches ``chunk``'s cells in ``layer``
    from ``source`` (``[batch, pos, ...]``, the source run's activation), for cell-major rows
    (rows ``i*batch .. (i+1)*batch`` belong to cell ``i``); None if no cell touches the layer."""
    touching = [i for i, c in enumerate(chunk) if layer in c.layers]
    if not touching:
        return None
    n, pos_len = len(chunk), source.shape[2 if site.layout == "pattern" else 1]
    pos = torch.zeros(n * batch, pos_len, dtype=torch.bool)
    heads = torch.zeros(n * batch, n_heads, dtype=torch.bool) if site.has_heads else None
    src = torch.zeros(n * batch, source.shape[-1], dtype=torch.bool) if site.layout == "pattern" else None
    for i in touching:
        c, rows = chunk[i], slice(i * batch, (i + 1) * batch)
        pos[rows, slice(None) if c.pos is None else c.pos] = True
        if heads is not None:
            heads[rows, slice(None) if c.head is None else c.head] = True
        if src is not None:
            src[rows, slice(None) if c.src_pos is None else c.src_pos] = True
    return I.patch(site.hook(layer), source, positions=pos, heads=heads, src_positions=src)


def interventions(
    model, site: Site, chunk: Sequence[Cell], source: dict[str, torch.Tensor], batch: int
) -> list[I.Intervention]:
    """Every intervention that patches ``chunk``'s cells (cell-major rows) from ``source`` (hook
    name -> the source run's activation ``[batch, ...]``), over the layers the cells touch.
    ``resid_mid`` on a bridge is patched at the MLP's input with the same change carried along
    the skip connection (:func:`_resid_mid`)."""
    out: list[I.Intervention] = []
    for layer in sorted({l for c in chunk for l in c.layers}):
        name = site.hook(layer)
        heads = source[name].shape[1 if site.layout == "pattern" else 2] if site.has_heads else model.cfg.n_heads
        iv = intervention(site, layer, chunk, source[name], batch, heads)
        if iv is not None:
            out += _resid_mid(model, layer, iv) if site.via_mlp_in else [iv]
    return out


def _resid_mid(model, layer: int, iv: I.Intervention) -> list[I.Intervention]:
    """The bridge's resid_mid hook only feeds the MLP: patch it there, then add the same change to the
    block output so that the skip connection carries it too (true residual-stream patching)."""
    change: dict[str, torch.Tensor] = {}

    def at_mlp_in(act, ctx):
        new = iv.apply(act, ctx)
        change["delta"] = new - act
        return new - act

    def carry(act, ctx):
        return change.pop("delta")

    return [I.Intervention(iv.site, "add", at_mlp_in), I.Intervention(model.site("resid_post", layer), "add", carry)]


def entries(act: torch.Tensor, layout: str, cell: Cell) -> torch.Tensor:
    """The part of a ``[batch, ...]`` activation that ``cell`` patches."""
    every = slice(None)
    pos = every if cell.pos is None else cell.pos
    head = every if cell.head is None else cell.head
    if layout == "vector":
        return act[:, pos]
    if layout == "head":
        return act[:, pos, head]
    return act[:, head, pos, every if cell.src_pos is None else cell.src_pos]


#: transformer sites whose patch at a position changes only that position of the block output
LOCAL = ("q", "pattern", "z", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")


def reaches(cell: Cell, site: Site, model, reads: Sequence[int]) -> bool:
    """Whether patching ``cell`` can change the logits at positions ``reads`` (causal models).

    Cells that cannot are given the unpatched value exactly instead of a recomputation that
    differs from it by rounding."""
    if not model.cfg.causal:
        return True
    if cell.first_pos > max(reads):
        return False
    if (
        model.cfg.family == "transformer"
        and site.name in LOCAL
        and cell.pos is not None
        and cell.layers == (model.cfg.n_layers - 1,)
    ):
        return cell.pos in set(reads)
    return True


#: what one forward costs beyond its tokens, per layer, in tokens' worth of compute: a forward of a
#: few rows x one token is dominated by the per-layer cost of launching its operations (measured on
#: the 2-core CPU with smollm2-135m: 5 rows x 1 token cost about a third of 5 x 11), so cells entering
#: at different layers are better run as one forward from the earliest when their rows are few
FORWARD_OVERHEAD_TOKENS = 32


def next_chunk(
    cells: Sequence[Cell], todo: Sequence[int], k: int, per: int, tokens: int, n_layers: int, same_pos: bool = True
) -> list[int]:
    """The cells of the next chunk of a downstream engine: ``todo[k:]`` (ordered by entry position,
    then entry layer), at most ``per``, all entering at the first one's position (``same_pos``) and
    layer, and also those entering at later layers where running them from the first's layer costs
    less than a forward of their own (``tokens``: rows x positions one cell recomputes; the extra
    layers' compute against :data:`FORWARD_OVERHEAD_TOKENS` per layer saved).  A prefix of
    ``todo[k:]``, so the caller advances ``k`` by its length."""
    first = cells[todo[k]]
    chunk = [todo[k]]
    j = k + 1
    while j < len(todo) and len(chunk) < per:
        c = cells[todo[j]]
        if same_pos and c.first_pos != first.first_pos:
            break
        if c.start != first.start:  # the group of cells entering at this later layer
            group = [i for i in todo[j : k + per] if cells[i].start == c.start and cells[i].first_pos == c.first_pos]
            extra = (c.start - first.start) * len(group) * tokens
            if extra > (n_layers - c.start) * FORWARD_OVERHEAD_TOKENS:
                break
            take = group[: per - len(chunk)]
            chunk += take
            j += len(take)
            continue
        chunk.append(todo[j])
        j += 1
    return chunk
