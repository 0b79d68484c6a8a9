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
    # the zoo's cells' gates, per step (interp.recurrent): a patched gate is what that step uses
    "input_gate",
    "forget_gate",
    "output_gate",
    "cell_candidate",
    "reset_gate",
    "update_gate",
    "candidate",
    "gate",
    # Hugging Face recurrent families (interp.recurrent.hf); a hybrid has them in some layers only
    "mixer_in",
    "mixer_out",
    "conv_in",
    "conv",
    "gate_pre",
    "input_gate_pre",
    "forget_gate_pre",
    "dt",
    "B",
    "C",
    "lru_out",
    "out_proj_in",
    *S.STATE_KINDS,
)
SITES: dict[str, S.Kind] = {name: S.KINDS[name] for name in PATCHABLE}
ALIASES = S.ALIASES
AXES = {"vector": ("pos",), "head": ("pos", "head"), "pattern": ("head", "pos", "src_pos")}


def _present(model, template: str) -> bool:
    return model.cfg.n_layers > 0 and all(model.has_site(template.format(l=l)) for l in range(model.cfg.n_layers))


def _layers_with(model, template: str) -> list[int]:
    return [l for l in range(model.cfg.n_layers) if model.has_site(template.format(l=l))]


def available(model) -> list[str]:
    """Short names of the sites every layer of ``model`` has (and, for a hybrid, the recurrent
    sites of its recurrent layers)."""
    kinds = set(model.site_kinds())
    out = [name for name in SITES if name in kinds or (name == "resid_mid" and "mlp_in" in kinds)]
    return out + [n for n in PARTIAL if n not in out and _layers_with(model, SITES[n].template)]


#: site kinds a sweep may run over the layers that have them (a hybrid's recurrent layers)
PARTIAL = tuple(n for n in PATCHABLE if n not in ("resid_pre", "resid_mid", "resid_post", "mlp_in", "mlp_out"))

#: the per-component site an analysis uses by default, first one the model has: a head's output,
#: else a recurrent mixer's output (Mamba, RWKV, RG-LRU, xLSTM), a toy RNN's hidden state, an
#: attention layer's output, the residual stream
DEFAULT_SITES = ("z", "mixer_out", "hidden", "attn_out", "resid_pre")


def defaults(model, site: str | Sequence[str] | None, by: str | Sequence[str] | None):
    """``(site, by)`` with the model's defaults filled in: the first of :data:`DEFAULT_SITES` it has
    in every layer, swept by layer, position and (per-head sites) head."""
    if site is None:
        kinds = set(model.site_kinds())
        site = next((k for k in DEFAULT_SITES if k in kinds), "resid_pre")
    if by is None:
        layouts = {SITES[s].layout if s in SITES else "vector" for s in ([site] if isinstance(site, str) else site)}
        by = ("layer", "pos", "head") if layouts & {"head", "pattern"} else ("layer", "pos")
    return site, by


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
        if not _present(model, template) and not (name in PARTIAL and _layers_with(model, template)):
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
    have = _layers_with(model, site.template)
    if len(have) < L:  # a hybrid's recurrent site: the layers that have it, one at a time
        if window > 1:
            raise InputError(f"site {site.name!r} is in layers {have} only: sweep it with window=1")
        if layers is None:
            start_layers = have
        elif set(start_layers) - set(have):
            raise InputError(
                f"site {site.name!r} is in layers {have} only, not {sorted(set(start_layers) - set(have))}"
            )
    pos = _choices(positions, seq_len, "positions") if "pos" in axes else [None]
    n_heads = model.cfg.n_kv_heads if site.name in ("k", "v") else model.cfg.n_heads  # k / v: key-value heads
    hs = _choices(heads, n_heads, "heads") if "head" in axes else [None]
    out: list[Cell] = []
    for w in ws:
        for l in start_layers:
            if l + w > L:
                continue
            span = tuple(range(l, l + w))
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
