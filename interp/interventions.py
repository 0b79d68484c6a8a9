"""The one intervention primitive: *where* (a site, positions, heads), *what* (a value) and
*how* (set, add, scale, project out).  Ablation (zero / mean / resample / query masking),
steering (add, project out), activation patching (set from a source run, many cells per
forward), DropHead (scale by a random keep mask) and function vectors (set a head's output
to its clean mean) are presets over it.

    iv = Intervention("blocks.3.attn.hook_z", "set", 0.0, heads=[5])       # zero-ablate L3H5
    with interp.interventions.apply(model, [iv]):
        logits = model(tokens)

Positions are absolute (position 0 = the first token of the prompt), so an intervention
acts on the same tokens whether a run is a whole prompt, a padded batch or a cached
decoding step (:attr:`interp.Model.context` says where the run sits):

- ``None``: every position;
- an int ``p >= 0``: positions ``p`` and later; an int ``p < 0``: the ``|p|``-th position
  from each row's end (-1 = each row's last real token, also in a padded batch; while
  decoding, the newest token);
- ``From(starts)``: positions from ``starts`` on, an int or a LongTensor ``[batch]`` (e.g. each
  row's last prompt token: "decoding only");
- a ``slice`` of absolute positions;
- a LongTensor ``[batch]``: one position per row;
- a BoolTensor ``[pos]`` or ``[batch, pos]`` over absolute positions.

Per-row specs (and by-position values) are indexed by the caller's batch rows, also when
the decoder runs a subset of them (:attr:`interp.model.RunContext.rows`).

``heads`` (head and pattern sites): a list of head indices, or a BoolTensor ``[batch,
heads]``; ``src_positions`` (pattern sites): key positions, same forms as ``positions``.

Values: a number or a tensor broadcast against one position's activation (``[d]``, ``[heads,
d_head]``, ...); with ``by_position=True`` a source activation ``[rows, pos, ...]`` (a whole
run's, e.g. the clean run in patching) read at the same absolute positions (row ``b`` reads
source row ``b % rows``); or a callable ``fn(act, context) -> value`` for values made per run
(DropHead's random mask).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from interp import caches
from interp.errors import InputError
from interp.model import Model, RunContext, reshaping
from interp.tokens import TokenBatch

OPS = ("set", "add", "scale", "project_out")
LAYOUTS = ("vector", "head", "pattern")


@dataclass(frozen=True)
class From:
    """Positions from ``start`` on: an int, or a LongTensor ``[batch]`` of per-row starts."""

    start: int | torch.Tensor


Positions = int | slice | From | torch.Tensor | None


def layout_of(site: str) -> str:
    """The layout of a hook name: ``pattern`` / ``head`` for attention sites, else ``vector``."""
    last = site.rsplit(".", 1)[-1]
    if last in ("hook_pattern", "hook_attn_scores"):
        return "pattern"
    if last in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_rot_q", "hook_rot_k"):
        return "head"
    return "vector"


@dataclass(frozen=True)
class Intervention:
    """One edit of one site (see the module docstring for the forms of each field)."""

    site: str
    op: str
    value: float | torch.Tensor | Callable
    positions: Positions = None
    heads: Sequence[int] | torch.Tensor | None = None
    src_positions: Positions = None
    by_position: bool = False

    def __post_init__(self):
        if self.op not in OPS:
            raise InputError(f"intervention op must be one of {OPS}, got {self.op!r}")
        if (
            isinstance(self.value, torch.Tensor)
            and self.value.is_floating_point()
            and not torch.isfinite(self.value).all()
        ):
            raise InputError(f"the value written at {self.site} has NaN or infinite entries")
        if self.heads is not None and self.layout == "vector":
            raise InputError(f"heads= needs a per-head site (hook_z, hook_q, ...), not {self.site}")
        if self.src_positions is not None and self.layout != "pattern":
            raise InputError("src_positions= applies to attention patterns only")

    @property
    def layout(self) -> str:
        return layout_of(self.site)

    # --- masks ------------------------------------------------------------------------
    def _pos_mask(self, spec: Positions, rows: int, abs_pos: torch.Tensor, ctx: RunContext) -> torch.Tensor | None:
        """``[rows, n]`` bool over the run's positions ``abs_pos`` (None = all)."""
        if spec is None:
            return None
        dev = abs_pos.device
        if isinstance(spec, bool):
            raise InputError("positions must be an int, a slice, From(...), a tensor or None, not a bool")
        if isinstance(spec, From):
            starts = torch.as_tensor(spec.start, device=dev).long().reshape(-1)
            return abs_pos[None] >= starts[ctx.row_index(rows, len(starts), dev), None]
        if isinstance(spec, int):
            if spec >= 0:
                return (abs_pos >= spec)[None].expand(rows, -1)
            # -1 = each row's last real token: its length in a padded batch, else the run's last position
            end = (
                ctx.lengths.to(dev)
                if ctx.lengths is not None
                else torch.full((rows,), int(abs_pos.max()) + 1, device=dev)
            )
            target = end[torch.arange(rows, device=dev) % len(end)] + spec  # lengths are the run's own rows
            return abs_pos[None] == target[:, None]
        if isinstance(spec, slice):
            start = 0 if spec.start is None else spec.start
            stop = int(abs_pos.max()) + 1 if spec.stop is None else spec.stop
            if start < 0 or stop < 0:
                raise InputError("slices of positions are absolute: use non-negative start / stop")
            return ((abs_pos >= start) & (abs_pos < stop))[None].expand(rows, -1)
        t = torch.as_tensor(spec, device=dev)
        if t.dtype == torch.bool:
            if t.ndim == 1:
                t = t[None].expand(rows, -1)
            if t.ndim != 2:
                raise InputError(f"a position mask must be [pos] or [batch, pos], got {tuple(t.shape)}")
            t = t[ctx.row_index(rows, t.shape[0], dev)]
            inside = abs_pos < t.shape[1]
            out = torch.zeros(rows, len(abs_pos), dtype=torch.bool, device=dev)
            out[:, inside] = t[:, abs_pos[inside]]
            return out
        if t.dtype.is_floating_point or t.ndim != 1:
            raise InputError(f"per-row positions must be a LongTensor [batch], got {t.dtype} {tuple(t.shape)}")
        t = t.long()
        return abs_pos[None] == t[ctx.row_index(rows, len(t), dev), None]

    def _head_mask(self, rows: int, n_heads: int, dev, ctx: RunContext) -> torch.Tensor | None:
        if self.heads is None:
            return None
        t = torch.as_tensor(self.heads, device=dev)
        if t.dtype == torch.bool:
            if t.ndim == 1:
                t = t[None]
            if t.shape[-1] != n_heads:
                raise InputError(f"a head mask must have {n_heads} heads, got {tuple(t.shape)}")
            return t.expand(rows, -1) if t.shape[0] == 1 else t[ctx.row_index(rows, t.shape[0], dev)]
        idx = t.long().reshape(-1)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n_heads):
            raise InputError(f"heads {idx.tolist()} out of range for a site with {n_heads} heads at {self.site}")
        m = torch.zeros(n_heads, dtype=torch.bool, device=dev)
        m[idx] = True
        return m[None].expand(rows, -1)

    def mask(self, act: torch.Tensor, ctx: RunContext) -> torch.Tensor | None:
        """Where the edit applies, broadcastable against ``act`` (None = everywhere)."""
        rows, dev, lay = act.shape[0], act.device, self.layout
        pos_axis = 2 if lay == "pattern" else 1
        abs_pos = ctx.positions_of(act.shape[pos_axis], dev)
        pm = self._pos_mask(self.positions, rows, abs_pos, ctx)
        hm = self._head_mask(rows, act.shape[1 if lay == "pattern" else 2], dev, ctx) if lay != "vector" else None
        if lay == "vector":
            m = pm
            return None if m is None else m.view(rows, -1, *([1] * (act.ndim - 2)))
        if lay == "head":
            if pm is None and hm is None:
                return None
            pm = pm if pm is not None else torch.ones(rows, act.shape[1], dtype=torch.bool, device=dev)
            hm = hm if hm is not None else torch.ones(rows, act.shape[2], dtype=torch.bool, device=dev)
            return (pm[:, :, None] & hm[:, None, :]).view(rows, act.shape[1], act.shape[2], *([1] * (act.ndim - 3)))
        keys = ctx.key_positions(act.shape[3], act.shape[2], dev)  # the key axis in absolute positions
        sm = self._pos_mask(self.src_positions, rows, keys, ctx)
        if pm is None and hm is None and sm is None:
            return None
        pm = pm if pm is not None else torch.ones(rows, act.shape[2], dtype=torch.bool, device=dev)
        hm = hm if hm is not None else torch.ones(rows, act.shape[1], dtype=torch.bool, device=dev)
        sm = sm if sm is not None else torch.ones(rows, act.shape[3], dtype=torch.bool, device=dev)
        return hm[:, :, None, None] & pm[:, None, :, None] & sm[:, None, None, :]

    # --- the edit ---------------------------------------------------------------------
    def operand(self, act: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """The value, shaped to broadcast against ``act``."""
        value = self.value(act, ctx) if callable(self.value) else self.value
        if not isinstance(value, torch.Tensor):
            return torch.as_tensor(float(value), dtype=act.dtype, device=act.device)
        value = value.to(device=act.device, dtype=act.dtype if value.is_floating_point() else value.dtype)
        if not self.by_position:
            return value
        rows = ctx.row_index(act.shape[0], value.shape[0], act.device)
        if self.layout == "pattern":
            pos = ctx.positions_of(act.shape[2], act.device)
            return value[rows][:, :, pos][..., ctx.key_positions(act.shape[3], act.shape[2], act.device)]
        pos = ctx.positions_of(act.shape[1], act.device)
        beyond = pos >= value.shape[1]
        if bool(beyond.any()):
            # positions past the source are fine where the edit leaves them alone (decoding past a patched prompt)
            m = self.mask(act, ctx)
            needed = beyond if m is None else beyond & m.reshape(m.shape[0], m.shape[1], -1).any(-1).any(0)
            if bool(needed.any()):
                raise InputError(
                    f"the source activation at {self.site} has {value.shape[1]} positions, the edit reaches "
                    f"position {int(pos[needed].max())}"
                )
            pos = pos.clamp(max=value.shape[1] - 1)
        return value[rows][:, pos]

    def apply(self, act: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """``act`` with the edit applied where :meth:`mask` says (a new tensor)."""
        v = self.operand(act, ctx)
        if self.op == "set":
            new = v.expand_as(act) if v.ndim else torch.full_like(act, float(v))
        elif self.op == "add":
            new = act + v
        elif self.op == "scale":
            new = act * v
        else:
            u = v.reshape(-1)
            u = u / u.norm().clamp(min=1e-12)
            lead = act.shape[:2]
            flat = act.reshape(*lead, -1)
            new = (flat - (flat @ u)[..., None] * u).reshape(act.shape)
        if new.shape != act.shape:
            raise InputError(
                f"the value for {self.site} has shape {tuple(v.shape)}, which does not fit the "
                f"activation {tuple(act.shape)}"
            )
        m = self.mask(act, ctx)
        return new if m is None else torch.where(m, new, act)


def hook_fns(model: Model, interventions: Sequence[Intervention]) -> list[tuple[str, Callable]]:
    """``(site, fn)`` hooks that apply ``interventions`` in order (they read ``model.context``)."""
    out = []
    for iv in interventions:
        model.check_site(iv.site)

        def fn(act: torch.Tensor, hook, iv=iv) -> torch.Tensor:
            return iv.apply(act, model.context)

        out.append((iv.site, fn))
    return out


@contextlib.contextmanager
def apply(model: Model, interventions: Sequence[Intervention]) -> Iterator[Model]:
    """Keeps ``interventions`` active for every run inside the block (composes with other hooks)."""
    with model.hooks(hook_fns(model, list(interventions))):
        yield model


# --- presets -------------------------------------------------------------------------------


def zero(site: str, *, positions: Positions = None, heads=None) -> Intervention:
    """Sets the site (its chosen heads / positions) to 0."""
    return Intervention(site, "set", 0.0, positions, heads)


def set_to(site: str, value: torch.Tensor | float, *, positions: Positions = None, heads=None) -> Intervention:
    """Sets the site to a fixed value (e.g. a head's mean output ``[heads, d_head]``)."""
    return Intervention(site, "set", value, positions, heads)


def patch(
    site: str, source: torch.Tensor, *, positions: Positions = None, heads=None, src_positions: Positions = None
) -> Intervention:
    """Sets the site to a source run's activation ``[rows, pos, ...]`` at the same absolute
    positions (activation patching; resampling from other inputs)."""
    return Intervention(site, "set", source, positions, heads, src_positions, by_position=True)


def add(site: str, vector: torch.Tensor, coef: float = 1.0, *, positions: Positions = None) -> Intervention:
    """Adds ``coef * vector`` (steering)."""
    return Intervention(site, "add", vector * coef, positions)


def project_out(site: str, direction: torch.Tensor, *, positions: Positions = None) -> Intervention:
    """Removes the component along ``direction`` (directional ablation)."""
    return Intervention(site, "project_out", direction, positions)


def scale(
    site: str, factor: torch.Tensor | float | Callable, *, positions: Positions = None, heads=None
) -> Intervention:
    """Multiplies the site by ``factor`` (a number, a tensor, or ``fn(act, ctx)`` per run)."""
    return Intervention(site, "scale", factor, positions, heads)


def drop_heads(site: str, p: float, generator: torch.Generator | None = None) -> Intervention:
    """DropHead (Zhou et al. 2020) on ``hook_z``: each head of each sequence is zeroed with
    probability ``p`` per run, the survivors scaled by ``1 / (1 - p)``."""
    if not 0 <= p < 1:
        raise InputError(f"head dropout rates must be in [0, 1), got {p}")

    def keep(act: torch.Tensor, ctx) -> torch.Tensor:
        k = torch.rand(act.shape[0], 1, act.shape[2], 1, device=act.device, generator=generator) >= p
        return k.to(act.dtype) / (1 - p)

    return Intervention(site, "scale", keep)


# --- many edited runs in one forward --------------------------------------------------------


def run_batched(
    model: Model,
    tokens,
    n_cells: int,
    edits: Callable[[Sequence[int]], list[Intervention]],
    metric,
    *,
    base_hooks: Sequence = (),
    batch_tokens: int = 16384,
    progress: bool = False,
    desc: str = "edited runs",
    last_token_only: bool = False,
) -> torch.Tensor:
    """The metric (batch mean) of ``n_cells`` edited runs of the same prompts: ``[n_cells]``.

    A chunk of cells runs as one forward whose batch repeats the prompts once per cell
    (cell-major rows: rows ``i*B .. (i+1)*B`` belong to the chunk's i-th cell);
    ``edits(cells)`` returns the interventions of a chunk laid out that way (per-row masks of
    ``len(cells) * B`` rows; by-position values of B rows are shared by every cell).
    Positions after the last one the metric reads are cut (a causal model cannot use them)
    and only the read positions are unembedded.  metric: a
    :class:`interp.metrics.Metric` for the B prompts (negative positions = each row's end).

    last_token_only: the edits touch only each prompt's last token and the metric reads only
    it; then, on a model with a key-value cache, each prompt's prefix runs once and a cell
    costs one token per prompt (:func:`_run_last_token`).
    """
    from tqdm.auto import tqdm

    batch = model.tokenize(tokens)
    B, P = batch.tokens.shape
    metric = metric.check(B, P, model.cfg.d_vocab).resolve(P, batch.lengths)
    if last_token_only and caches.tileable(model):
        return _run_last_token(model, batch, n_cells, edits, metric, base_hooks, batch_tokens, progress, desc)
    reads = metric.read_positions(P)
    keep = max(reads) + 1 if model.cfg.causal else P
    ids = batch.tokens[:, :keep]
    lengths = batch.lengths.clamp(max=keep)
    read_t = torch.tensor(reads)
    trim = []
    if "unembed_in" in model.site_kinds():
        trim = [(model.site("unembed_in"), reshaping(lambda x, hook: x[:, read_t.to(x.device)]))]
    per_chunk = max(1, int(batch_tokens) // (B * keep))
    out = torch.empty(n_cells)
    bar = tqdm(total=n_cells, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    with torch.no_grad():
        for start in range(0, n_cells, per_chunk):
            cells = list(range(start, min(n_cells, start + per_chunk)))
            n = len(cells)
            hooks = list(base_hooks) + hook_fns(model, edits(cells)) + trim
            rows = TokenBatch(ids.repeat(n, 1), lengths.repeat(n), batch.pad_id)
            logits = model.run_with_hooks(rows, hooks)
            vals = metric.values(logits.view(n, B, logits.shape[1], -1), positions=reads if trim else None)
            out[start : start + n] = vals.mean(-1).float().cpu()
            bar.update(n)
    bar.close()
    return out


def _run_last_token(
    model: Model,
    batch: TokenBatch,
    n_cells: int,
    edits,
    metric,
    base_hooks,
    batch_tokens: int,
    progress: bool,
    desc: str,
) -> torch.Tensor:
    """:func:`run_batched` for edits at each prompt's last token: per length group, the
    prefixes fill a key-value cache once; each chunk of cells replicates it (cell-major) and
    runs the last token only.  Edits see the caller's row numbering (``cell * B + prompt``)."""

    from tqdm.auto import tqdm

    B = len(batch)
    if (
        not all(int(p) == int(n) - 1 for p, n in zip(metric.pos[:, 0].expand(B), batch.lengths))
        or metric.pos.shape[1] != 1
    ):
        raise InputError("last_token_only needs a metric that reads each prompt's last token only")
    if int(batch.lengths.min()) < 2:
        raise InputError("last_token_only needs prompts of at least 2 tokens")
    out = torch.zeros(n_cells, dtype=torch.float64)
    per_chunk = max(1, int(batch_tokens) // max(1, B))
    bar = tqdm(total=n_cells * len(batch.by_length()), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    with torch.no_grad():
        for group in batch.by_length():
            length = int(batch.lengths[group[0]])
            ids = batch.tokens[group.to(batch.tokens.device), :length]
            prefix_logits, prefix = model.step(ids[:, :-1], None, list(base_hooks))
            del prefix_logits
            sub = metric.rows(group)
            for start in range(0, n_cells, per_chunk):
                cells = list(range(start, min(n_cells, start + per_chunk)))
                n = len(cells)
                cache = caches.tiled(prefix, len(group), n)
                rows = torch.tensor([i * B + int(b) for i in range(n) for b in group])
                hooks = list(base_hooks) + hook_fns(model, edits(cells))
                with model.running(rows=rows):
                    logits, _ = model.step(ids[:, -1:].repeat(n, 1), cache, hooks)
                vals = sub.values(logits.view(n, len(group), 1, -1), positions=[length - 1])  # [n, rows]
                out[start : start + n] += vals.double().sum(-1).cpu()
                bar.update(n)
    bar.close()
    return (out / B).float()


def edit_latents(
    site: str,
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[[torch.Tensor], torch.Tensor],
    edit: Callable[[torch.Tensor], torch.Tensor],
    *,
    positions: Positions = None,
) -> Intervention:
    """Edits the site in another basis (a sparse dictionary's latents): adds
    ``decode(edit(encode(act))) - decode(encode(act))``, so only the edit changes the activation
    and the basis's reconstruction error stays (ablating, clamping or scaling a feature).
    ``edit`` gets a copy of the latents ``[batch, pos, n_latents]`` and returns them edited."""

    def delta(act: torch.Tensor, ctx) -> torch.Tensor:
        f = encode(act)
        return decode(edit(f.clone())) - decode(f)

    return Intervention(site, "add", delta, positions)


def replace_with(site: str, fn: Callable[[torch.Tensor], torch.Tensor], *, positions: Positions = None) -> Intervention:
    """Sets the site to ``fn(act)`` (e.g. a dictionary's reconstruction spliced into the forward)."""
    return Intervention(site, "set", lambda act, ctx: fn(act), positions)
