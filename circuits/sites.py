"""The patchable sites and the cells of a sweep.

A *site* is a kind of activation present in every layer (``z``: the per-head attention
output ``blocks.{l}.attn.hook_z``; ``hidden``: an RNN's hidden state per step, ...).  A
*cell* is one patch of a sweep: a window of layers and, where the sweep goes by them, a
position, a head and (attention patterns only) a source position.

Layouts (TransformerLens conventions): ``vector`` sites are ``[batch, pos, ...]``, ``head``
sites ``[batch, pos, head, d_head]``, ``pattern`` sites ``[batch, head, dest_pos, src_pos]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from interp import sites as S
from interp.cells import Cell, Site
from interp.errors import InputError

#: the patchable site kinds (:mod:`interp.sites` holds their templates, layouts and descriptions)
PATCHABLE = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_in",
    "mlp_out",
    "z",
    "q",
    "k",
    "v",
    "pattern",
    "hidden",
    "state",
    "cell",
)
SITES: dict[str, S.Kind] = {name: S.KINDS[name] for name in PATCHABLE}
ALIASES = S.ALIASES
AXES = {"vector": ("pos",), "head": ("pos", "head"), "pattern": ("head", "pos", "src_pos")}


def _present(model, template: str) -> bool:
    return model.cfg.n_layers > 0 and all(model.has_site(template.format(l=l)) for l in range(model.cfg.n_layers))


def _in_attention_layers(model, kind: S.Kind) -> bool:
    """Whether a hybrid has attention site ``kind`` in every one of its attention layers."""
    attn = model.cfg.attn_layers or ()
    return kind.layout in ("head", "pattern") and bool(attn) and all(model.has_site(kind.hook(l)) for l in attn)


def available(model) -> list[str]:
    """Short names of the sites every layer of ``model`` has (attention sites: every attention layer)."""
    kinds = set(model.site_kinds())
    return [
        name
        for name in SITES
        if name in kinds or (name == "resid_mid" and "mlp_in" in kinds) or _in_attention_layers(model, SITES[name])
    ]


def resolve(model, site: str) -> Site:
    """The :class:`Site` for a short name (``z``, ``resid_pre``, ``hidden``, ...) or a template
    such as ``blocks.{l}.hook_forget_gate``; raises with the valid choices if the model lacks it."""
    if not isinstance(site, str) or not site:
        raise InputError(f"site must be a non-empty string, got {site!r}")
    name = ALIASES.get(site, site)
    valid = available(model)
    if name in SITES:
        template, layout = SITES[name].template, SITES[name].layout
        if name == "resid_mid" and _present(model, SITES["mlp_in"].template):
            return Site(name, SITES["mlp_in"].template, layout, via_mlp_in=True)
        if not _present(model, template) and _in_attention_layers(model, SITES[name]):
            return Site(name, template, layout, layers=tuple(model.cfg.attn_layers))
        if not _present(model, template):
            why = ""
            if layout in ("head", "pattern") and not model.has_attention:
                why = f" ({model.cfg.name or 'this model'} is a {model.cfg.family} model without attention heads)"
            raise InputError(
                f"site {site!r} is not in {model.cfg.name or 'this model'}{why}; valid sites: {valid} "
                "(or a template like 'blocks.{l}.hook_...' naming a site of every layer)"
            )
        return Site(name, template, layout)
    if "{l}" in name:
        if not _present(model, name):
            missing = [name.format(l=l) for l in range(model.cfg.n_layers) if not model.has_site(name.format(l=l))]
            raise InputError(
                f"template {name!r} names sites the model does not have ({missing[:3]}); valid sites: "
                f"{valid}; see Model.hook_names() for every hook"
            )
        return Site(name, name, "vector")
    raise InputError(
        f"unknown site {site!r}; valid sites for {model.cfg.name or 'this model'}: {valid} "
        "(or a template like 'blocks.{l}.hook_...')"
    )


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
        raise InputError(f"cannot sweep site {site.name!r} by {bad}; valid axes: {['layer', *allowed]}")
    if "src_pos" in parts and not ("pos" in parts and "head" in parts):
        raise InputError("by src_pos needs pos (the destination) and head too: by=('layer', 'head', 'pos', 'src_pos')")
    return tuple(a for a in ("pos", "head", "src_pos") if a in parts)


def _choices(given: Iterable[int] | None, n: int, what: str) -> list[int]:
    if given is None:
        return list(range(n))
    out = [int(x) + n if int(x) < 0 else int(x) for x in given]
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise InputError(f"{what} {bad} out of range: valid 0..{n - 1}")
    return sorted(set(out))


def windows(n_layers: int, window: int) -> list[int]:
    """Window sizes of a sweep: ``[1]`` or ``[1, window]`` (single layers shown beside any window)."""
    if not isinstance(window, int) or window < 1:
        raise InputError(f"window must be a positive int, got {window!r}")
    if window > n_layers:
        raise InputError(
            f"window {window} runs past the last layer: this model has {n_layers} layers (valid windows 1..{n_layers})"
        )
    return [1] if window == 1 else [1, window]


def cells(
    model,
    site: Site,
    axes: tuple[str, ...],
    seq_len: int,
    *,
    window: int = 1,
    layers: Iterable[int] | None = None,
    positions: Iterable[int] | None = None,
    heads: Iterable[int] | None = None,
) -> list[Cell]:
    """Every cell of a sweep, layer-major then pos, head, src_pos (the order of the output rows)."""
    L = model.cfg.n_layers
    ws = windows(L, window)
    start_layers = _choices(layers, L, "layers")
    if site.layers is not None:  # a hybrid's attention site: its attention layers only
        start_layers = [l for l in start_layers if l in site.layers]
    pos = _choices(positions, seq_len, "positions") if "pos" in axes else [None]
    n_heads = model.cfg.n_kv_heads if site.name in ("k", "v") else model.cfg.n_heads  # k / v: key-value heads
    hs = _choices(heads, n_heads, "heads") if "head" in axes else [None]
    out: list[Cell] = []
    for w in ws:
        for l in start_layers:
            if l + w > L:
                continue
            span = tuple(range(l, l + w))
            if site.layers is not None and not set(span) <= set(site.layers):
                continue
            for p in pos:
                for h in hs:
                    srcs: Sequence[int | None] = [None]
                    if "src_pos" in axes:
                        assert p is not None  # a src_pos axis comes with a pos axis (parse_by)
                        srcs = range(p + 1)  # causal: src <= dest
                    out.extend(Cell(span, p, h, s) for s in srcs)
    if not out:
        raise InputError("the sweep has no cells (check layers / window)")
    return out
