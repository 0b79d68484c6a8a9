"""Path patching (Wang et al. 2022), direct paths: sender head -> receiver head's q / k / v input, or -> logits.

Under grouped-query attention a key-value head's k and v inputs are shared by the query
heads of its group, so k / v receivers are key-value heads (named ``a{l}.kv{g}``, as in
:mod:`circuits.edges`), q receivers query heads.

For a sender head ``s`` and a receiver ``r``, the sender's change of output
``delta = (z_source - z_base)[s] @ W_O[s]`` is added to the residual stream *as only r sees
it*: to r's own copy of its input before LayerNorm (then r's query, key or value is
recomputed from it), or to the final residual before ``ln_final`` for the logits.  Every
other component still reads the base run, so the result is the effect of the single edge
``s -> r``.  Denoising (default) adds clean-minus-corrupt to the corrupt run; noising the
reverse.  Equals TransformerLens's ``get_act_patch_direct_path`` where that runs (bridges
with split q/k/v inputs, e.g. Hugging Face GPT-2; the native bridge has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch

from circuits.edges import Graph, check_rebuild
from circuits.metrics import Metric
from circuits.runs import check_direction, prepare
from interp import interventions as I
from interp.errors import InputError
from interp.runs import analysis, record

COMPONENTS = ("q", "k", "v")
Head = tuple[int, int]


def _heads(spec, model, what: str) -> list[Head]:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if spec == "all":
        return [(l, h) for l in range(L) for h in range(H)]
    out = [tuple(int(v) for v in x) for x in spec]
    bad = [x for x in out if len(x) != 2 or not (0 <= x[0] < L and 0 <= x[1] < H)]
    if bad:
        raise InputError(f"{what} {bad} are not heads (layer, head) of this model: layers 0..{L - 1}, heads 0..{H - 1}")
    return [(l, h) for l, h in out]


@analysis("path_patching")
def path_patch(
    model,
    clean,
    corrupt,
    *,
    senders: Sequence[Head] | str = "all",
    receivers: Sequence[Head] | str = "logits",
    components: str | Iterable[str] = COMPONENTS,
    metric: Metric | str = "logit_diff",
    direction: str = "denoise",
    batch_tokens: int = 16384,
    progress: bool = True,
) -> pd.DataFrame:
    """Effect of each direct path sender -> receiver; one row per (sender, receiver, component).

    senders: heads ``[(layer, head), ...]`` or ``"all"``.  receivers: ``"logits"``, heads, or
    ``"all"`` (every head; only heads in later layers than the sender are paired with it; a
    k / v receiver is the key-value head the given head reads).  components: which inputs of
    receiving heads (``q``, ``k``, ``v``).  Columns: ``sender_layer, sender_head, receiver,
    receiver_layer, receiver_head`` (the query head for q, the key-value head for k / v),
    ``component, value, effect, normalised`` (as in :func:`circuits.patching.patch`).
    """
    check_direction(direction)
    graph = Graph.of(model)  # declines, naming the reason, where heads cannot be nodes
    weights = model.weights()
    check_rebuild(model, weights)
    comps = list(components)  # "qk" or ("q", "k")
    bad = [c for c in comps if c not in COMPONENTS]
    if bad or not comps:
        raise InputError(f"components must be among {COMPONENTS}, got {comps}")
    snd = _heads(senders, model, "senders")
    to_logits = isinstance(receivers, str) and receivers == "logits"
    rcv = [] if to_logits else _heads(receivers, model, "receivers")

    def targets(c: str) -> list[Head]:  # (layer, index of the head or key-value head receiving through c)
        return list(dict.fromkeys(r if c == "q" else (r[0], weights.kv_head(r[1])) for r in rcv))

    cells = (
        [(s, None, None) for s in snd]
        if to_logits
        else [(s, r, c) for s in snd for c in comps for r in targets(c) if r[0] > s[0]]
    )
    if not cells:
        raise InputError("no sender -> receiver pairs: receivers must sit in later layers than senders")
    runs = prepare(model, clean, corrupt, metric)
    base_tokens, base_hooks, src_tokens, src_hooks = runs.sides(direction)
    s_layers = sorted({s[0] for s in snd})
    r_layers = sorted({r[0] for r in rcv})
    z = {l: model.site("z", l) for l in s_layers}
    with torch.no_grad():
        _, base = model.run_with_cache(
            base_tokens, names=list(z.values()) + [model.site("resid_pre", l) for l in r_layers], fwd_hooks=base_hooks
        )
        _, src = model.run_with_cache(src_tokens, names=list(z.values()), fwd_hooks=src_hooks)
        # each sender's change of write (through a post-attention norm at each run's own scale)
        writes = {
            l: (weights.head_outputs(l, src[z[l]].float()), weights.head_outputs(l, base[z[l]].float()))
            for l in s_layers
        }
        delta = {(l, h): writes[l][0][:, :, h] - writes[l][1][:, :, h] for l, h in snd}  # [batch, pos, d_model]
    batch = len(base_tokens)
    values = I.run_batched(
        model,
        base_tokens,
        len(cells),
        lambda idx: _edits(model, [cells[i] for i in idx], delta, base, weights, batch),
        runs.metric,
        base_hooks=base_hooks,
        batch_tokens=batch_tokens,
        progress=progress,
        desc="path patching",
    )
    vals = values.double().numpy()
    df = pd.DataFrame(
        {
            "sender_layer": [s[0] for s, _, _ in cells],
            "sender_head": [s[1] for s, _, _ in cells],
            "receiver": [
                "logits" if r is None else (f"a{r[0]}.h{r[1]}" if c == "q" else graph.kv_node(*r)) for _, r, c in cells
            ],
            "receiver_layer": [model.cfg.n_layers if r is None else r[0] for _, r, _ in cells],
            "receiver_head": [-1 if r is None else r[1] for _, r, _ in cells],
            "component": ["" if c is None else c for _, _, c in cells],
            "value": vals,
            "effect": vals - runs.baseline(direction),
            "normalised": runs.normalise(vals),
        }
    )
    record(
        metric=runs.metric.label,
        direction=direction,
        clean_value=runs.clean_value,
        corrupt_value=runs.corrupt_value,
        baseline=runs.baseline(direction),
    )
    return df


def _edits(model, chunk, delta, base, weights, batch: int) -> list[I.Intervention]:
    """The interventions of a chunk of cells (rows ``i*batch .. (i+1)*batch`` hold cell ``i``)."""
    n = len(chunk)
    groups: dict[tuple, list[int]] = {}
    for i, (_, r, c) in enumerate(chunk):
        groups.setdefault(("logits",) if r is None else (r[0], c), []).append(i)
    out = []
    for key, members in groups.items():
        if key == ("logits",):
            first = delta[chunk[members[0]][0]]
            add = torch.zeros((n * batch,) + tuple(first.shape[1:]), device=first.device)  # [n*batch, pos, d]
            for i in members:
                add[i * batch : (i + 1) * batch] = delta[chunk[i][0]]
            out.append(I.Intervention(model.site("final_resid"), "add", add, by_position=True))
            continue
        layer, comp = key
        resid = base[model.site("resid_pre", layer)].float()
        width = weights.n_heads if comp == "q" else weights.n_kv_heads
        new = torch.zeros((n * batch,) + tuple(resid.shape[1:2]) + (width, weights.W_Q.shape[-1]), device=resid.device)
        heads = torch.zeros(n * batch, width, dtype=torch.bool)
        for i in members:
            (_, _), (_, index), _ = chunk[i]
            rows = slice(i * batch, (i + 1) * batch)
            # the receiver's input rebuilt for its own head only, from the residual plus the sender's change
            new[rows, :, index] = _project_one(weights, layer, comp, resid + delta[chunk[i][0]], index)
            heads[rows, index] = True
        out.append(I.Intervention(model.site(comp, layer), "set", new, heads=heads, by_position=True))
    return out


def _project_one(weights, layer: int, comp: str, x: torch.Tensor, index: int) -> torch.Tensor:
    """Head (or key-value head) ``index``'s ``comp`` from a residual ``x [batch, pos, d]``:
    ``[batch, pos, d_head]``."""
    c = comp.upper()
    norm = weights.ln1[layer]
    h = (norm(x) if norm is not None else x).float()  # a post-norm block's attention reads the raw residual
    return h @ getattr(weights, f"W_{c}")[layer, index] + getattr(weights, f"b_{c}")[layer, index]
