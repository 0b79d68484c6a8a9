"""The architecture matrix: every analysis of the workbench on a tiny random model of every
family in :mod:`tests.families`, each checked against an oracle, or declining up front with the
architectural reason.  Nothing may crash, and nothing may be silently wrong.

For each family, :func:`interp.support` runs every analysis once on a probe: a cell is ``ok``
or ``declines``, never ``fails`` (a failure is a bug).  Which analyses may decline follows from
the model's structure (no heads, heads in some layers only, no recurrent state), never from a
list of families.  Every ``ok`` cell is then checked against an oracle that does not share the
code under test:

- logits: Hugging Face's own forward on the same tokens;
- activation cache: the final residual read through the model's own final norm and
  unembedding gives its logits;
- head scores: TransformerLens's ``detect_head`` on the same tokens (transformers), or the
  scores recomputed from the cached patterns (hybrids);
- exact patching: the downstream-only engine equals the hooks engine, and restoring the whole
  final residual stream gives the clean run exactly;
- attribution patching: a finite-difference derivative of the metric along the same change;
- path patching: a sender's direct path to the logits equals adding its change of write to
  the final residual by a plain hook;
- EAP-IG: the whole graph reproduces the clean run and the empty graph the corrupt run;
- head ablation: zeroing a layer's heads equals setting its ``hook_z`` to zero by a plain hook;
- steering: the vector is the mean difference of the cached activations, and coefficient 0
  changes nothing;
- function-vector effects: the downstream-only engine equals the hooks engine;
- logit lens: its last reading is the model's own distribution;
- tuned lens: its last translator is the identity, so the last reading is the model's too;
- DLA: the pieces add up to the logit difference (to the one before Gemma-2's final cap);
- token saliency: Hugging Face's own gradients, taken at the input of the model's first layer
  (the embedding as that layer reads it), give the same rows, and nothing above the diagonal;
- retrieval decoding: cached and recomputing decoding agree on tokens and attended positions.

The README's table of families is generated from these results
(:func:`test_the_readme_table_is_the_matrix`; ``INTERP_WRITE_README=1`` rewrites it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import interp
from tests.families import FAMILIES, build

ROOT = Path(__file__).resolve().parent.parent
#: family -> analysis -> "ok" | "declines", filled by test_family
RESULTS: dict[str, dict[str, str]] = {}
TOL = 1e-4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: root / f for f in FAMILIES}


GRADIENT_BASED = {"attribution patching", "edge attribution (EAP-IG) and faithfulness", "token saliency"}


def _may_decline(model, analysis: str, reason: str) -> bool:
    """Which analyses a model's structure excuses (the only allowed declines)."""
    from circuits import sites

    heads = {
        "head scores",
        "head ablation",
        "function-vector head effects",
        "retrieval decoding",
        "exact patching (heads)",
        "path patching",
        "edge attribution (EAP-IG) and faithfulness",
    }
    if analysis == "state patching (recurrent)":
        from interp.sites import STATE_KINDS

        return not set(STATE_KINDS) & set(sites.available(model))
    if analysis in GRADIENT_BASED and "in place" in reason:  # the family's own forward blocks gradients
        return True
    if not model.has_attention:
        return analysis in heads
    if model.cfg.family == "hybrid":  # the edge graph needs heads in every layer
        return analysis in {"path patching", "edge attribution (EAP-IG) and faithfulness"}
    return False


def _metric(clean):
    from circuits import metrics

    return metrics.logit_diff(answer=int(clean[0, -1]), wrong=int(clean[0, 0]), pos=-1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family(family, folders):
    hf, folder = build(family, folders[family])
    model = interp.load(folder)
    table = interp.support(model)
    failed = table[table["status"] == "fails"]
    assert failed.empty, failed[["analysis", "reason"]].to_string()
    status = dict(zip(table["analysis"], table["status"]))
    reasons = dict(zip(table["analysis"], table["reason"]))
    for analysis, st in status.items():
        if st == "declines":
            assert _may_decline(model, analysis, reasons[analysis]), (
                f"{family}: {analysis} declines: {reasons[analysis]}"
            )
            assert len(reasons[analysis]) > 20, reasons[analysis]  # a sentence naming the reason
    clean, corrupt = interp.capabilities.probe_tokens(model)
    for analysis, st in status.items():
        if st == "ok" and analysis in ORACLES:
            ORACLES[analysis](model, hf, clean, corrupt)
    if status.get("exact patching (residual stream)") == "ok":  # causal tracing restores through that engine
        _causal_tracing(model, hf, clean, corrupt)
    RESULTS[family] = status


# --- the oracles ------------------------------------------------------------------------------


def _logits(model, hf, clean, corrupt):
    with torch.no_grad():
        assert (model(clean) - hf(clean).logits).abs().max() < TOL


def _cache(model, hf, clean, corrupt):
    from interp.weights import readout

    if "final_resid" not in model.site_kinds():
        return
    with torch.no_grad():
        logits, cache = model.run_with_cache(clean, names=[model.site("final_resid")])
        assert (readout(model).logits(cache[model.site("final_resid")]) - logits).abs().max() < TOL


def _head_scores(model, hf, clean, corrupt):
    from transformer_lens.head_detector import detect_head

    from interp import heads
    from interp.compat import TokenizedPrompts

    tokens = heads.default_tokens(model, n=2, length=16)
    ours = heads.scores(model, tokens, ["previous_token", "induction"])
    if model.cfg.family == "transformer":
        proxy = TokenizedPrompts(model, tokens)
        for kind, name in (("previous_token", "previous_token_head"), ("induction", "induction_head")):
            ref = detect_head(proxy, proxy.prompts(), name).double()
            got = ours[ours["kind"] == kind].sort_values(["layer", "head"])["score"].to_numpy()
            assert (torch.tensor(got).view_as(ref) - ref).abs().max() < 1e-5, kind
    else:  # previous-token score from the cached patterns: mean attention to the previous position
        _, cache = model.run_with_cache(tokens, names=model.attn_sites("pattern"))
        for l in model.cfg.attn_layers:
            a = cache[model.site("pattern", l)]  # [batch, head, dest, src]
            want = a.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / a.sum((-1, -2))  # detect_head's "mul"
            got = ours[(ours["kind"] == "previous_token") & (ours["layer"] == l)].sort_values("head")["score"]
            assert (torch.tensor(got.to_numpy()) - want.mean(0).double()).abs().max() < 1e-5


def _patch_resid(model, hf, clean, corrupt):
    from circuits.patching import patch

    metric = _metric(clean)
    fast = patch(model, clean, corrupt, site="resid_pre", by="layer,pos", metric=metric, progress=False)
    slow = patch(model, clean, corrupt, site="resid_pre", by="layer,pos", metric=metric, engine="hooks", progress=False)
    assert (fast["value"] - slow["value"]).abs().max() < TOL
    # restoring the whole final residual stream restores the clean run (the readout reads only it;
    # the first layer's input is not enough everywhere: Zamba2 feeds the embeddings to later layers too)
    last = model.cfg.n_layers - 1
    whole = interp.runs.run(
        patch, model, clean, corrupt, site="resid_post", by="layer", layers=[last], metric=metric, progress=False
    )
    assert abs(whole.frame["value"].iloc[0] - whole.meta["clean_value"]) < TOL


def _patch_heads(model, hf, clean, corrupt):
    from circuits.patching import patch

    metric = _metric(clean)
    fast = patch(model, clean, corrupt, site="z", metric=metric, progress=False)
    slow = patch(model, clean, corrupt, site="z", metric=metric, engine="hooks", progress=False)
    assert (fast["value"] - slow["value"]).abs().max() < TOL


def _attribute(model, hf, clean, corrupt):
    from circuits.attribution import attribute

    metric = _metric(clean)
    est = attribute(model, clean, corrupt, site="resid_pre", by="layer,pos", metric=metric)
    resolved = metric.check(*clean.shape, model.cfg.d_vocab).resolve(clean.shape[1])
    _, src = model.run_with_cache(clean, names=model.sites("resid_pre"))
    _, base = model.run_with_cache(corrupt, names=model.sites("resid_pre"))
    p, layer, eps = clean.shape[1] // 2, model.cfg.n_layers - 1, 1e-3
    name = model.site("resid_pre", layer)
    delta = (src[name] - base[name])[:, p]

    def nudged(scale):
        def fn(x, hook):
            x = x.clone()
            x[:, p] += scale * delta
            return x

        with torch.no_grad():
            return float(resolved(model.run_with_hooks(corrupt, [(name, fn)])))

    fd = (nudged(eps) - nudged(-eps)) / (2 * eps)  # d metric / d t along the change, at the corrupt run
    row = est[(est["layer"] == layer) & (est["pos"] == p)]
    assert abs(float(row["effect"].iloc[0]) - fd) < 1e-2 * (1 + abs(fd)), (float(row["effect"].iloc[0]), fd)


def _path_patch(model, hf, clean, corrupt):
    from circuits.path_patching import path_patch

    metric = _metric(clean)
    df = path_patch(model, clean, corrupt, metric=metric, progress=False)
    l, h = model.cfg.n_layers - 1, 0
    w = model.weights()
    _, src = model.run_with_cache(clean, names=[model.site("z", l)])
    _, base = model.run_with_cache(corrupt, names=[model.site("z", l)])
    delta = (
        w.head_outputs(l, src[model.site("z", l)].float())[:, :, h]
        - w.head_outputs(l, base[model.site("z", l)].float())[:, :, h]
    )
    resolved = metric.check(*clean.shape, model.cfg.d_vocab).resolve(clean.shape[1])
    with torch.no_grad():
        want = float(resolved(model.run_with_hooks(corrupt, [(model.site("final_resid"), lambda x, hook: x + delta)])))
    got = df[(df["sender_layer"] == l) & (df["sender_head"] == h)]["value"].iloc[0]
    assert abs(got - want) < TOL


def _eap(model, hf, clean, corrupt):
    from circuits.attribution import edge_attribution

    metric = _metric(clean)
    circuit = edge_attribution(model, clean, corrupt, metric=metric, method="eap-ig", steps=2, progress=False)
    assert abs(circuit.faithfulness(model, clean, corrupt, metric) - 1.0) < 1e-3
    empty = circuit.prune(top_k=0)
    assert abs(empty.faithfulness(model, clean, corrupt, metric)) < 1e-3


def _ablation(model, hf, clean, corrupt):
    from interp.ablation import ablate

    l = model.cfg.attn_layers[0]
    with torch.no_grad():
        with ablate(model, [(l, h) for h in range(model.cfg.n_heads)], "zero"):
            ours = model(clean)
        plain = model.run_with_hooks(clean, [(model.site("z", l), lambda z, hook: torch.zeros_like(z))])
    assert (ours - plain).abs().max() < TOL


def _steering(model, hf, clean, corrupt):
    from interp.steering import SteeringVector

    layer = model.cfg.n_layers // 2
    vector = SteeringVector.from_pairs(model, clean, corrupt, layer=layer)
    _, a = model.run_with_cache(clean, names=[vector.site])
    _, b = model.run_with_cache(corrupt, names=[vector.site])
    want = (a[vector.site][:, -1] - b[vector.site][:, -1]).mean(0)
    assert (vector.vector.to(want.device) - want).abs().max() < TOL
    with torch.no_grad():
        plain = model(clean)
        with vector.apply(model, coef=0.0):
            assert torch.equal(model(clean), plain)
        with vector.apply(model, coef=1.0):
            assert not torch.equal(model(clean), plain)


def _fv(model, hf, clean, corrupt):
    from interp import function_vectors as fv

    answers = clean[:, -1]
    auto = fv.head_indirect_effects(model, clean, corrupt, answers, progress=False).sort_values(["layer", "head"])
    hooks = fv.head_indirect_effects(model, clean, corrupt, answers, engine="hooks", progress=False).sort_values(
        ["layer", "head"]
    )
    assert (auto["p_patched"].to_numpy() - hooks["p_patched"].to_numpy()).__abs__().max() < 1e-5


def _logit_lens(model, hf, clean, corrupt):
    from interp.lens import logit_lens

    frame = logit_lens(model, clean[:1], k=1)
    last = frame[frame["layer"] == frame["layer"].max()].sort_values("pos")
    with torch.no_grad():
        want = model(clean[:1])[0].log_softmax(-1).max(-1).values
    assert (torch.tensor(last["logprob"].to_numpy()) - want.double()).abs().max() < 1e-4


def _tuned_lens(model, hf, clean, corrupt):
    from interp.lens import train_tuned_lens

    lens = train_tuned_lens(model, clean, steps=2, progress=False)
    assert torch.equal(lens.A[-1], torch.eye(model.cfg.d_model)) and not lens.b[-1].any()


def _dla(model, hf, clean, corrupt):
    from interp.lens import dla

    meta = interp.runs.run(dla, model, clean[:1], int(clean[0, -1]), int(clean[0, 0])).meta
    want = meta.get("pre_cap", meta["logit"])
    assert abs(meta["total"] - want) < 1e-4 * (1 + abs(want))
    if "pre_cap" not in meta:
        assert abs(meta["total"] - meta["logit"]) < 1e-4 * (1 + abs(want))


def _retrieval(model, hf, clean, corrupt):
    from interp.retrieval import decode_attention

    prompt = clean[:, :-2]
    g1, a1 = decode_attention(model, prompt, 2, use_cache=True, progress=False)
    g2, a2 = decode_attention(model, prompt, 2, use_cache=False, progress=False)
    assert torch.equal(g1, g2) and torch.equal(a1, a2)


def _causal_tracing(model, hf, clean, corrupt):
    """Causal tracing (Meng et al.) on the probe: restoring every residual state at once gives the
    clean probability of the model's own next token back, and restoring the last layer's residual
    state at the last position alone does too (the readout sees nothing else)."""
    from circuits.tracing import causal_tracing, restore
    from interp.tasks.text.facts import FactSet

    tokens = clean[0]
    with torch.no_grad():
        answer = int(model(clean)[0, -1].argmax())
    facts = FactSet([tokens], [(1, 3)], [answer], ["probe"], ["probe"], ["probe"], {})
    whole = restore(model, facts, "resid", samples=2)
    assert (whole["restored"] - whole["clean"]).abs().max() < 1e-4
    assert (whole["corrupted"] - whole["clean"]).abs().max() > 0  # the noise did something to undo
    trace = causal_tracing(model, facts, components="resid", window=1, samples=2, progress=False)
    last = trace[(trace["layer"] == model.cfg.n_layers - 1) & (trace["pos"] == len(tokens) - 1)]
    assert len(last) == 1 and abs(float(last["prob"].iloc[0] - last["clean"].iloc[0])) < 1e-4


def _saliency(model, hf, clean, corrupt):
    from interp.saliency import token_saliency

    sal = token_saliency(model, clean[0])
    assert sal.triu(1).abs().max() == 0  # causal: no position reads a later token
    # the reference: Hugging Face's gradient at the input of its first layer, which differs from the
    # embedding by added positions or a constant scale (the same normalised rows) or is it (BLOOM's
    # embedding LayerNorm comes before it, as before the embed site)
    layers = [m for m in hf.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == model.cfg.n_layers]
    seen: list[torch.Tensor] = []
    hook = layers[0][0].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    try:
        with torch.enable_grad():
            logits = hf(clean[:1], use_cache=False).logits[0]  # no cache: RWKV writes its state in place
            rows = []
            for t in range(logits.shape[0]):
                (g,) = torch.autograd.grad(logits[t, int(logits[t].argmax())], [seen[0]], retain_graph=True)
                rows.append(g[0].float().norm(dim=-1))
    finally:
        hook.remove()
    ref = torch.stack(rows)
    ref = ref / ref.sum(-1, keepdim=True)
    assert (sal - ref).abs().max() < 1e-4, float((sal - ref).abs().max())


ORACLES = {
    "logits": _logits,
    "activation cache": _cache,
    "head scores": _head_scores,
    "exact patching (residual stream)": _patch_resid,
    "exact patching (heads)": _patch_heads,
    "attribution patching": _attribute,
    "path patching": _path_patch,
    "edge attribution (EAP-IG) and faithfulness": _eap,
    "head ablation": _ablation,
    "steering": _steering,
    "function-vector head effects": _fv,
    "logit lens": _logit_lens,
    "tuned lens": _tuned_lens,
    "direct logit attribution": _dla,
    "token saliency": _saliency,
    "retrieval decoding": _retrieval,
}


# --- the README's table ------------------------------------------------------------------------

BEGIN, END = "<!-- families: generated by tests/test_families.py -->", "<!-- end of families -->"
SHORT = {
    "activation cache": "cache",
    "function-vector head effects": "FV effects",
    "direct logit attribution": "DLA",
    "retrieval decoding": "retrieval",
    "exact patching (residual stream)": "patch resid",
    "exact patching (heads)": "patch heads",
    "attribution patching": "attribution",
    "path patching": "path patch",
    "edge attribution (EAP-IG) and faithfulness": "EAP-IG",
    "state patching (recurrent)": "patch state",
    "token saliency": "saliency",
}


def matrix_table(results: dict[str, dict[str, str]]) -> str:
    """The markdown table of families x analyses (ok / declines)."""
    analyses = list(next(iter(results.values())))
    short = {a: SHORT.get(a, a) for a in analyses}
    head = "| family | " + " | ".join(short[a] for a in analyses) + " |"
    rule = "|---" * (len(analyses) + 1) + "|"
    rows = [
        f"| {family} | " + " | ".join("✓" if res[a] == "ok" else "–" for a in analyses) + " |"
        for family, res in results.items()
    ]
    return "\n".join([head, rule, *rows])


def test_the_readme_table_is_the_matrix(folders):
    for family in FAMILIES:  # when run alone: fill in the families not run yet
        if family not in RESULTS:
            test_family(family, folders)
    table = matrix_table({f: RESULTS[f] for f in FAMILIES})
    readme = (ROOT / "README.md").read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    if os.environ.get("INTERP_WRITE_README"):
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), block, readme, flags=re.S)
        (ROOT / "README.md").write_text(readme)
    assert block in readme, "the README's table of families differs from the matrix: run with INTERP_WRITE_README=1"
