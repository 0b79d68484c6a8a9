"""Path patching (Wang et al. 2022), direct paths: sender head -> receiver head's q / k / v input, or -> logits.

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

from typing import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from circuits.components import heads_of
from circuits.metrics import Metric
from circuits.runs import check_direction, prepare

COMPONENTS = ("q", "k", "v")
Head = tuple[int, int]


def _heads(spec, model, what: str) -> list[Head]:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if spec == "all":
        return [(l, h) for l in range(L) for h in range(H)]
    out = [tuple(int(v) for v in x) for x in spec]
    bad = [x for x in out if len(x) != 2 or not (0 <= x[0] < L and 0 <= x[1] < H)]
    if bad:
        raise ValueError(f"{what} {bad} are not heads (layer, head) of this model: layers 0..{L - 1}, heads 0..{H - 1}")
    return out


def path_patch(model, clean, corrupt, *, senders: Sequence[Head] | str = "all",
               receivers: Sequence[Head] | str = "logits", components: str | Iterable[str] = COMPONENTS,
               metric: Metric | str = "logit_diff", direction: str = "denoise", batch_tokens: int = 16384,
               progress: bool = True) -> pd.DataFrame:
    """Effect of each direct path sender -> receiver; one row per (sender, receiver, component).

    senders: heads ``[(layer, head), ...]`` or ``"all"``.  receivers: ``"logits"``, heads, or
    ``"all"`` (every head; only heads in later layers than the sender are paired with it).
    components: which inputs of receiving heads (``q``, ``k``, ``v``).  Columns:
    ``sender_layer, sender_head, receiver, receiver_layer, receiver_head, component, value,
    effect, normalised`` (as in :func:`circuits.patching.patch`).
    """
    check_direction(direction)
    heads = heads_of(model)
    comps = [components] if isinstance(components, str) else list(components)
    bad = [c for c in comps if c not in COMPONENTS]
    if bad or not comps:
        raise ValueError(f"components must be among {COMPONENTS}, got {comps}")
    snd = _heads(senders, model, "senders")
    to_logits = isinstance(receivers, str) and receivers == "logits"
    rcv = [] if to_logits else _heads(receivers, model, "receivers")
    cells = [(s, None, None) for s in snd] if to_logits else \
        [(s, r, c) for s in snd for r in rcv if r[0] > s[0] for c in comps]
    if not cells:
        raise ValueError("no sender -> receiver pairs: receivers must sit in later layers than senders")
    runs = prepare(model, clean, corrupt, metric)
    base_tokens, base_hooks, src_tokens, src_hooks = runs.sides(direction)
    s_layers = sorted({s[0] for s in snd})
    r_layers = sorted({r[0] for r in rcv})
    with torch.no_grad():
        _, base = model.run_with_cache(base_tokens, names=[f"blocks.{l}.attn.hook_z" for l in s_layers] +
                                       [f"blocks.{l}.hook_resid_pre" for l in r_layers], fwd_hooks=base_hooks)
        _, src = model.run_with_cache(src_tokens, names=[f"blocks.{l}.attn.hook_z" for l in s_layers],
                                      fwd_hooks=src_hooks)
        delta = {(l, h): (src[f"blocks.{l}.attn.hook_z"][:, :, h] - base[f"blocks.{l}.attn.hook_z"][:, :, h])
                 @ heads.W["O"][l, h] for l, h in snd}                               # [batch, pos, d_model]
        batch, seq_len = base_tokens.shape
        per = max(1, batch_tokens // (batch * seq_len))
        values = torch.empty(len(cells))
        for start in tqdm(range(0, len(cells), per), desc="path patching", disable=not progress, leave=False):
            chunk = cells[start:start + per]
            hooks = _hooks(chunk, delta, base, heads, batch)
            logits = model.run_with_hooks(base_tokens.repeat(len(chunk), 1), base_hooks + hooks)
            values[start:start + len(chunk)] = runs.metric.values(logits.view(len(chunk), batch, seq_len, -1)).mean(-1)
    vals = values.double().numpy()
    df = pd.DataFrame({
        "sender_layer": [s[0] for s, _, _ in cells], "sender_head": [s[1] for s, _, _ in cells],
        "receiver": ["logits" if r is None else f"a{r[0]}.h{r[1]}" for _, r, _ in cells],
        "receiver_layer": [model.cfg.n_layers if r is None else r[0] for _, r, _ in cells],
        "receiver_head": [-1 if r is None else r[1] for _, r, _ in cells],
        "component": ["" if c is None else c for _, _, c in cells],
        "value": vals, "effect": vals - runs.baseline(direction), "normalised": runs.normalise(vals)})
    df.attrs.update(metric=runs.metric.label, direction=direction, clean_value=runs.clean_value,
                    corrupt_value=runs.corrupt_value, baseline=runs.baseline(direction))
    return df


def _hooks(chunk, delta, base, heads, batch: int) -> list:
    """Hooks for a chunk of cells (rows ``i*batch .. (i+1)*batch`` hold cell ``i``)."""
    n = len(chunk)
    groups: dict[tuple, list[int]] = {}
    for i, (s, r, c) in enumerate(chunk):
        groups.setdefault(("logits",) if r is None else (r[0], c), []).append(i)
    hooks = []
    for key, members in groups.items():
        if key == ("logits",):
            add = torch.stack([delta[chunk[i][0]] for i in members])                 # [m, batch, pos, d]

            def to_logits(act, hook, members=members, add=add):
                act = act.clone()
                act.view(n, batch, *act.shape[1:])[members] += add
                return act
            hooks.append(("ln_final.hook_in", to_logits))
            continue
        layer, comp = key
        resid = base[f"blocks.{layer}.hook_resid_pre"]
        x = torch.stack([resid + delta[chunk[i][0]] for i in members])             # [m, batch, pos, d]
        head_idx = torch.tensor([chunk[i][1][1] for i in members])
        # the receiver's input rebuilt for its own head only: [m, batch, pos, d_head]
        new = torch.stack([_project_one(heads, layer, comp, x[j], int(head_idx[j])) for j in range(len(members))])

        def at_input(act, hook, members=members, head_idx=head_idx, new=new):
            act = act.clone()
            act.view(n, batch, *act.shape[1:])[torch.tensor(members), :, :, head_idx] = new
            return act
        hooks.append((f"blocks.{layer}.attn.hook_{comp}", at_input))
    return hooks


def _project_one(heads, layer: int, comp: str, x: torch.Tensor, head: int) -> torch.Tensor:
    """Head ``head``'s ``comp`` from a residual ``x [batch, pos, d]``: ``[batch, pos, d_head]``."""
    c = comp.upper()
    return heads.ln1[layer](x) @ heads.W[c][layer, head] + heads.b[c][layer, head]
