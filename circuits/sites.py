"""The patchable sites and the cells of a sweep.

A *site* is a kind of activation present in every layer (``z``: the per-head attention
output ``blocks.{l}.attn.hook_z``; ``hidden``: an RNN's hidden state per step, ...).  A
*cell* is one patch of a sweep: a window of layers and, where the sweep goes by them, a
position, a head and (attention patterns only) a source position.

Layouts (TransformerLens conventions): ``vector`` sites are ``[batch, pos, ...]``, ``head``
sites ``[batch, pos, head, d_head]``, ``pattern`` sites ``[batch, head, dest_pos, src_pos]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

#: short name -> (hook template, layout, description)
SITES: dict[str, tuple[str, str, str]] = {
    "resid_pre": ("blocks.{l}.hook_resid_pre", "vector", "residual stream entering block l"),
    "resid_mid": ("blocks.{l}.hook_resid_mid", "vector",
                  "residual stream between attention and MLP (the whole stream, skip connection included)"),
    "resid_post": ("blocks.{l}.hook_resid_post", "vector", "residual stream leaving block l"),
    "attn_out": ("blocks.{l}.hook_attn_out", "vector", "attention output (all heads, with bias)"),
    "mlp_in": ("blocks.{l}.ln2.hook_in", "vector",
               "the MLP's copy of the residual stream (what TransformerLens 4.x patches as resid_mid)"),
    "mlp_out": ("blocks.{l}.hook_mlp_out", "vector", "MLP output"),
    "z": ("blocks.{l}.attn.hook_z", "head", "per-head attention output before W_O (a head's output)"),
    "q": ("blocks.{l}.attn.hook_q", "head", "per-head queries"),
    "k": ("blocks.{l}.attn.hook_k", "head", "per-head keys"),
    "v": ("blocks.{l}.attn.hook_v", "head", "per-head values"),
    "pattern": ("blocks.{l}.attn.hook_pattern", "pattern", "attention pattern [head, dest, src]"),
    "hidden": ("blocks.{l}.hook_hidden", "vector", "recurrent hidden state per time step"),
    "state": ("blocks.{l}.hook_state", "vector", "SSM state per time step [d_inner, d_state]"),
    "cell": ("blocks.{l}.hook_cell", "vector", "LSTM cell state per time step"),
}
ALIASES = {"head_out": "z", "head": "z", "attn_head": "z", "result": "z", "resid": "resid_pre"}
AXES = {"vector": ("pos",), "head": ("pos", "head"), "pattern": ("head", "pos", "src_pos")}


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


def _present(model, template: str) -> bool:
    names = set(model.site_names)
    return all(template.format(l=l) in names for l in range(model.cfg.n_layers))


def available(model) -> list[str]:
    """Short names of the sites every layer of ``model`` has."""
    return [name for name, (tpl, _, _) in SITES.items() if _present(model, tpl)
            or (name == "resid_mid" and _present(model, SITES["mlp_in"][0]))]


def resolve(model, site: str) -> Site:
    """The :class:`Site` for a short name (``z``, ``resid_pre``, ``hidden``, ...) or a template
    such as ``blocks.{l}.hook_forget_gate``; raises with the valid choices if the model lacks it."""
    if not isinstance(site, str) or not site:
        raise ValueError(f"site must be a non-empty string, got {site!r}")
    name = ALIASES.get(site, site)
    valid = available(model)
    if name in SITES:
        template, layout, _ = SITES[name]
        if name == "resid_mid" and _present(model, SITES["mlp_in"][0]):
            return Site(name, SITES["mlp_in"][0], layout, via_mlp_in=True)
        if not _present(model, template):
            why = ""
            if layout in ("head", "pattern") and not model.has_attention:
                why = f" ({model.cfg.name or 'this model'} is a {model.cfg.family} model without attention heads)"
            raise ValueError(f"site {site!r} is not in {model.cfg.name or 'this model'}{why}; valid sites: {valid} "
                             "(or a template like 'blocks.{l}.hook_...' naming a site of every layer)")
        return Site(name, template, layout)
    if "{l}" in name:
        if not _present(model, name):
            missing = [name.format(l=l) for l in range(model.cfg.n_layers) if name.format(l=l) not in model.site_names]
            raise ValueError(f"template {name!r} names sites the model does not have ({missing[:3]}); valid sites: "
                             f"{valid}; see Model.hook_names() for every hook")
        return Site(name, name, "vector")
    raise ValueError(f"unknown site {site!r}; valid sites for {model.cfg.name or 'this model'}: {valid} "
                     "(or a template like 'blocks.{l}.hook_...')")


def parse_by(by: str | Sequence[str], site: Site) -> tuple[str, ...]:
    """The swept axes besides ``layer``, in output order (pos, head, src_pos), validated for the site."""
    if isinstance(by, str):
        parts = [p.strip() for p in by.replace("+", ",").split(",") if p.strip()]
    else:
        parts = list(by)
    parts = ["head" if p == "head_index" else "pos" if p == "dest_pos" else p for p in parts]
    allowed = AXES[site.layout]
    bad = [p for p in parts if p != "layer" and p not in allowed]
    if bad:
        raise ValueError(f"cannot sweep site {site.name!r} by {bad}; valid axes: {['layer', *allowed]}")
    if "src_pos" in parts and not ("pos" in parts and "head" in parts):
        raise ValueError("by src_pos needs pos (the destination) and head too: by=('layer', 'head', 'pos', 'src_pos')")
    return tuple(a for a in ("pos", "head", "src_pos") if a in parts)


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


def _choices(given: Iterable[int] | None, n: int, what: str) -> list[int]:
    if given is None:
        return list(range(n))
    out = [int(x) + n if int(x) < 0 else int(x) for x in given]
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise ValueError(f"{what} {bad} out of range: valid 0..{n - 1}")
    return sorted(set(out))


def windows(n_layers: int, window: int) -> list[int]:
    """Window sizes of a sweep: ``[1]`` or ``[1, window]`` (single layers shown beside any window)."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if window > n_layers:
        raise ValueError(f"window {window} runs past the last layer: this model has {n_layers} layers "
                         f"(valid windows 1..{n_layers})")
    return [1] if window == 1 else [1, window]


def cells(model, site: Site, axes: tuple[str, ...], seq_len: int, *, window: int = 1,
          layers: Iterable[int] | None = None, positions: Iterable[int] | None = None,
          heads: Iterable[int] | None = None) -> list[Cell]:
    """Every cell of a sweep, layer-major then pos, head, src_pos (the order of the output rows)."""
    L = model.cfg.n_layers
    ws = windows(L, window)
    start_layers = _choices(layers, L, "layers")
    pos = _choices(positions, seq_len, "positions") if "pos" in axes else [None]
    hs = _choices(heads, model.cfg.n_heads, "heads") if "head" in axes else [None]
    out = []
    for w in ws:
        for l in start_layers:
            if l + w > L:
                continue
            span = tuple(range(l, l + w))
            for p in pos:
                for h in hs:
                    srcs = range(p + 1) if "src_pos" in axes else [None]   # causal: src <= dest
                    out.extend(Cell(span, p, h, s) for s in srcs)
    if not out:
        raise ValueError("the sweep has no cells (check layers / window)")
    return out


def by_layer(chunk: Sequence[Cell]) -> dict[int, dict]:
    """For each layer the chunk patches, the :func:`scatter` arguments of its cells:
    ``cell_idx`` (index in the chunk) and ``pos`` / ``head`` / ``src_pos`` index tensors (or None)."""
    import torch

    members: dict[int, list[int]] = {}
    for i, c in enumerate(chunk):
        for l in c.layers:
            members.setdefault(l, []).append(i)
    out = {}
    for layer, idx in members.items():
        spec = {"cell_idx": torch.tensor(idx)}
        for axis in ("pos", "head", "src_pos"):
            vals = [getattr(chunk[i], axis) for i in idx]
            spec[axis] = None if vals[0] is None else torch.tensor(vals)
        out[layer] = spec
    return out


def entries(act: "torch.Tensor", layout: str, cell: Cell) -> "torch.Tensor":
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
    if model.cfg.family == "custom":
        return True
    if cell.first_pos > max(reads):
        return False
    if (model.cfg.family == "transformer" and site.name in LOCAL and cell.pos is not None
            and cell.layers == (model.cfg.n_layers - 1,)):
        return cell.pos in set(reads)
    return True


def scatter(act: "torch.Tensor", layout: str, n_cells: int, cell_idx: "torch.Tensor", src: "torch.Tensor", *,
            pos: "torch.Tensor | None" = None, head: "torch.Tensor | None" = None,
            src_pos: "torch.Tensor | None" = None, row_pos: "torch.Tensor | None" = None) -> None:
    """Writes the source values of several cells into a cell-batched activation, in place.

    act: ``[n_cells * batch, ...]`` (cell-major: rows ``i*batch .. (i+1)*batch`` belong to cell
    ``i``), contiguous.  src: ``[batch, ...]`` the source run's activation over every position.
    cell_idx / pos / head / src_pos: ``[m]`` one entry per patch (None = every index of that axis).
    row_pos: the absolute positions held by ``act``'s position axis when it holds only some
    (default: positions ``0 .. n-1``); patches at positions it does not hold are dropped
    (they cannot change what is computed).
    """
    import torch

    batch = src.shape[0]
    a = act.view(n_cells, batch, *act.shape[1:])
    pos_axis = 2 if layout == "pattern" else 1               # in the per-row layout (batch = axis 0)
    if row_pos is not None:
        if pos is not None:
            lookup = torch.full((int(max(int(row_pos.max()), int(pos.max()))) + 1,), -1, dtype=torch.long)
            lookup[row_pos] = torch.arange(len(row_pos))
            loc = lookup[pos]
            keep = loc >= 0
            if not keep.all():
                cell_idx, loc = cell_idx[keep], loc[keep]
                head = head[keep] if head is not None else None
                src_pos = src_pos[keep] if src_pos is not None else None
            pos = loc
        src = src.index_select(pos_axis, row_pos.to(src.device))
    if layout == "pattern":
        src = src[..., : a.shape[-1]]                         # key axis: absolute positions 0..keys-1
    elif row_pos is None and src.shape[1] != a.shape[2]:
        src = src[:, : a.shape[2]]                            # a truncated sequence
    if len(cell_idx) == 0:
        return
    every = slice(None)
    if layout == "vector":
        idx = (pos if pos is not None else every,)
    elif layout == "head":
        idx = (pos if pos is not None else every, head if head is not None else every)
    else:
        idx = (head if head is not None else every, pos if pos is not None else every,
               src_pos if src_pos is not None else every)
    dev = a.device
    idx = tuple(i.to(dev) if isinstance(i, torch.Tensor) else i for i in idx)
    cell_idx = cell_idx.to(dev)
    a[(cell_idx, every, *idx)] = src[None][(torch.zeros_like(cell_idx), every, *idx)].to(a.dtype)
