"""Self-repair (McGrath et al. 2023, "The Hydra Effect"): when one layer is ablated, later
layers change what they write and make up part of the loss, so the layer's total effect is
smaller than its direct effect.

For a component (each layer's attention output, or MLP output) and the *centred* logit of the
answer at the last token (its logit minus the mean logit over the vocabulary: the softmax
ignores a shift of every logit, so a change that moves them all alike is no effect):

- *total effect*: the change of the logit when the component's output is resample-ablated
  (replaced, at every position, by its output on another prompt), everything downstream
  recomputed;
- *direct effect*: the change the same replacement makes through the direct path alone: the
  change of the component's output at the last token read through the unembedding with the
  final norm's scale frozen at the clean run's (every later component keeps its clean output);
- *compensation*: direct minus total (positive: later layers repaired part of the change);
  :func:`downstream_changes` says which later components did it, as the change of their own
  direct contributions when the component is ablated.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp import interventions as I
from interp.errors import InputError
from interp.weights import readout

COMPONENTS = ("attn_out", "mlp_out")


def _check(model, tokens, answers, source, component: str):
    if component not in COMPONENTS:
        raise InputError(f"component must be one of {COMPONENTS}, got {component!r}")
    model.site(component, 0)  # raises if the model has no such sites
    batch = model.tokenize(tokens)
    src = model.tokenize(source)
    if batch.padded or src.padded or batch.tokens.shape != src.tokens.shape:
        raise InputError("prompts and resample sources must be equally long rows of the same shape")
    answers = torch.as_tensor(answers, dtype=torch.long).reshape(-1).cpu()
    if len(answers) != len(batch):
        raise InputError(f"{len(answers)} answers for {len(batch)} prompts")
    return batch.tokens, src.tokens, answers


def centred(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """``[n]`` the answer's logit minus the mean logit, from ``logits [n, vocab]``."""
    return (logits[torch.arange(len(answers)), answers.to(logits.device)] - logits.mean(-1)).float().cpu()


def _contributions(model, cache: dict, names: list[str], scale: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """``[len(names), n]`` each site's output at the last token read as the answer's centred logit
    through the final norm frozen at ``scale`` (its linear part: the norm's bias and b_U left out)."""
    ro = readout(model)
    out = []
    for name in names:
        x = cache[name][:, -1].float()  # [n, d]
        zero = torch.zeros_like(x)
        logit = ro.logits_frozen(x, scale) - ro.logits_frozen(zero, scale)  # [n, vocab]
        out.append(centred(logit, answers))
    return torch.stack(out)


@torch.no_grad()
def direct_and_total(
    model, tokens, answers, source, *, component: str = "attn_out", progress: bool = False
) -> pd.DataFrame:
    """For every layer's ``component``, the direct and total effect on each prompt's answer (centred) logit
    of resample-ablating it (see the module docstring): ``DataFrame[layer, prompt, direct, total,
    compensation]`` (logits; ablation reads row ``i`` of ``source``, e.g. the prompts shifted by
    one row).  One forward per layer plus two."""
    from tqdm.auto import tqdm

    ids, src, answers = _check(model, tokens, answers, source, component)
    names = model.sites(component)
    final = [model.site("final_resid")]
    clean_logits, clean = model.run_with_cache(ids, names=names + final)
    _, other = model.run_with_cache(src, names=names, logits=False)
    assert clean_logits is not None  # run_with_cache returns logits unless asked not to
    ro = readout(model)
    scale = ro.scale(clean[final[0]][:, -1])  # [n, 1] the clean run's final-norm scale
    base = centred(clean_logits[:, -1], answers)
    rows = []
    for layer, name in enumerate(tqdm(names, desc="self-repair", disable=not progress, leave=False)):
        delta = {name: other[name] - clean[name]}
        direct = _contributions(model, delta, [name], scale, answers)[0]
        with I.apply(model, [I.patch(name, other[name])]):
            logits = model(ids)
        total = centred(logits[:, -1], answers) - base
        rows += [
            {"layer": layer, "prompt": i, "direct": float(d), "total": float(t), "compensation": float(d - t)}
            for i, (d, t) in enumerate(zip(direct, total))
        ]
    return pd.DataFrame(rows)


@torch.no_grad()
def downstream_changes(model, tokens, answers, source, layer: int, *, component: str = "attn_out") -> pd.DataFrame:
    """When ``component`` of ``layer`` is resample-ablated, how each later attention and MLP output
    changes its direct contribution to the answer's centred logit (final norm frozen at the clean run's
    scale): ``DataFrame[layer, component, prompt, change]``.  A change of opposite sign to the
    ablated layer's direct effect is compensation (the Hydra effect); of the same sign, erasure."""
    ids, src, answers = _check(model, tokens, answers, source, component)
    model.check_layer(layer)
    later = [(l, c) for l in range(layer + 1, model.cfg.n_layers) for c in COMPONENTS if c in model.site_kinds()]
    names = [model.site(c, l) for l, c in later]
    final = model.site("final_resid")
    target = model.site(component, layer)
    _, clean = model.run_with_cache(ids, names=names + [final, target], logits=False)
    _, other = model.run_with_cache(src, names=[target], logits=False)
    with I.apply(model, [I.patch(target, other[target])]):
        _, ablated = model.run_with_cache(ids, names=names, logits=False)
    scale = readout(model).scale(clean[final][:, -1])
    before = _contributions(model, clean, names, scale, answers)
    after = _contributions(model, ablated, names, scale, answers)
    change = after - before  # [later, n]
    return pd.DataFrame(
        [
            {"layer": l, "component": c, "prompt": i, "change": float(change[k, i])}
            for k, (l, c) in enumerate(later)
            for i in range(len(answers))
        ]
    )
