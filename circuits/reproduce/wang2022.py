"""Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object
Identification in GPT-2 small": name movers, S-inhibition, induction / duplicate-token and
previous-token heads found by path patching, and the circuit's faithfulness, completeness and
minimality under mean-ablation knockouts over ABC prompts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.reproduce.finding import Finding, Outcome, Published, decide
from interp.reproduce.registry import register
from interp.reproduce.stats import bootstrap

ROLES = ("name mover", "negative name mover", "s-inhibition", "induction", "duplicate token", "previous token")


def _senders(frame: pd.DataFrame) -> pd.DataFrame:
    """Path-patching effect per sender, summed over its receivers (a sender's path into the whole class)."""
    return frame.groupby(["sender_layer", "sender_head"], as_index=False)["effect"].sum()


def _pick(effects: pd.DataFrame, fm: float, k: int, sign: int, share: float) -> list[tuple[int, int]]:
    """The up to ``k`` senders whose summed effect has sign ``sign`` and size >= ``share`` x F(M)."""
    e = effects.assign(s=sign * effects["effect"]).sort_values("s", ascending=False)
    e = e[e["s"] >= share * abs(fm)].head(k)
    return [(int(l), int(h)) for l, h in zip(e["sender_layer"], e["sender_head"])]


def _paths(model, ioi, senders, receivers, components: str = "qkv") -> pd.DataFrame:
    """Path-patching effects (ABC into clean) of ``senders`` into ``receivers``' ``components``, summed per sender."""
    from circuits import path_patch

    frame = path_patch(
        model,
        ioi.clean,
        ioi.corrupt,
        senders=senders,
        receivers=receivers,
        components=components,
        metric=ioi.metric(),
        direction="noise",
        progress=False,
    )
    return _senders(frame)


def experiment(model, quick: bool, progress: bool) -> Outcome:
    from circuits import attribute, knockout
    from interp import heads as H
    from interp.plots.reproduce import finding_plot
    from interp.tasks import text

    n, pool = (8, 12) if quick else (12, 16)
    ioi = text.ioi(model, n, corruption="ABC", seed=0)
    metric = ioi.metric()
    fm_rows = knockout.knockout_values(model, ioi.clean, metric, {}, ())
    fm = float(fm_rows.mean())
    # candidates: the heads whose ABC output changes the logit difference most (attribution patching)
    attr = attribute(model, ioi.clean, ioi.corrupt, site="z", by="layer,head", metric=metric, direction="noise")
    cand = attr.reindex(attr["effect"].abs().sort_values(ascending=False).index).head(pool)
    candidates = [(int(l), int(h)) for l, h in zip(cand["layer"], cand["head"])]
    # 1. heads -> logits: name movers lower the logit difference when their ABC output reaches the logits
    to_logits = _paths(model, ioi, candidates, "logits")
    movers = _pick(to_logits, fm, 3, -1, 0.05)
    negative = _pick(to_logits, fm, 2, +1, 0.05)
    found: dict[str, list[tuple[int, int]]] = {"name mover": movers, "negative name mover": negative}
    stages = [("name movers", to_logits)]
    if movers:
        # 2. heads -> name movers' queries: S-inhibition
        early = [h for h in candidates if h[0] < max(l for l, _ in movers) and h not in movers + negative]
        s_inh: list[tuple[int, int]] = []
        if early:
            q = _paths(model, ioi, early, movers, "q")
            s_inh = _pick(q, fm, 4, -1, 0.02)
            stages.append(("s-inhibition", q))
        found["s-inhibition"] = s_inh
        if s_inh:
            # 3. heads -> S-inhibition values: induction and duplicate-token heads (told apart by their patterns)
            early = [h for h in candidates if h[0] < max(l for l, _ in s_inh) and h not in sum(found.values(), [])]
            dup_ind: list[tuple[int, int]] = []
            if early:
                v = _paths(model, ioi, early, s_inh, "v")
                dup_ind = _pick(v, fm, 4, -1, 0.02)
                stages.append(("induction / duplicate", v))
            probe = H.scores(
                model, H.default_tokens(model, n=4, length=64), ["induction", "duplicate_token", "previous_token"]
            )
            score = probe.pivot_table(index=["layer", "head"], columns="kind", values="score")
            found["induction"] = [h for h in dup_ind if score.loc[h, "induction"] >= score.loc[h, "duplicate_token"]]
            found["duplicate token"] = [h for h in dup_ind if h not in found["induction"]]
            if found["induction"]:
                # 4. heads -> induction heads' keys: previous-token heads (candidates plus the top detected ones)
                first = min(l for l, _ in found["induction"])
                prev = score["previous_token"].sort_values(ascending=False)
                pool_prev = [h for h in candidates if h[0] < first]
                pool_prev += [h for h in prev.index[:5] if h[0] < first and h not in pool_prev]
                pool_prev = [h for h in pool_prev if h not in sum(found.values(), [])]
                if pool_prev:
                    k = _paths(model, ioi, pool_prev, found["induction"], "k")
                    found["previous token"] = _pick(k, fm, 2, -1, 0.01)
                    stages.append(("previous token", k))
    circuit = list(dict.fromkeys(h for hs in found.values() for h in hs))
    means = knockout.template_means(model, ioi.corrupt, ioi.templates)
    everyone = model.heads()
    outside = [h for h in everyone if h not in circuit]
    fc_rows = knockout.knockout_values(model, ioi.clean, metric, means, outside)
    ours = bootstrap((fc_rows.numpy(), fm_rows.numpy()), lambda c, m: float(c.mean() / m.mean()), unit="prompts")
    # completeness: knock out each class K from the circuit and from the model alike
    completeness: list[dict] = []
    for role, hs in found.items():
        if not hs:
            continue
        c_k = knockout.knockout_values(model, ioi.clean, metric, means, outside + hs).mean()
        m_k = knockout.knockout_values(model, ioi.clean, metric, means, hs).mean()
        completeness.append(
            {"role": role, "F(C\\K)": float(c_k), "F(M\\K)": float(m_k), "incompleteness": float(abs(c_k - m_k) / fm)}
        )
    # minimality: each head v against K = the rest of its class
    minimality: list[dict] = []
    for role, hs in found.items():
        for v in hs:
            rest = [h for h in hs if h != v]
            without_k = knockout.knockout_values(model, ioi.clean, metric, means, outside + rest).mean()
            without_kv = knockout.knockout_values(model, ioi.clean, metric, means, outside + rest + [v]).mean()
            minimality.append(
                {"role": role, "head": f"L{v[0]}H{v[1]}", "score": float(abs(without_kv - without_k) / fm)}
            )
    movers_attend = _attends_io(model, ioi, movers)
    model_ld = bootstrap(fm_rows.numpy(), unit="prompts")
    worst_incomplete = max((float(c["incompleteness"]) for c in completeness), default=float("nan"))
    least_minimal = min((float(m["score"]) for m in minimality), default=float("nan"))
    verdict, reason = decide(
        [
            (
                f"the model does IOI: logit difference F(M) = {model_ld} (> 0)",
                model_ld.above(0),
            ),
            (
                f"name movers found by path patching to the logits ({', '.join(f'L{l}H{h}' for l, h in movers) or 'none'}), "
                f"attending to the IO name more than to S at the end ({movers_attend})",
                bool(movers) and movers_attend.startswith("yes"),
            ),
            (
                f"S-inhibition heads found by path patching to their queries ({', '.join(f'L{l}H{h}' for l, h in found.get('s-inhibition', [])) or 'none'})",
                bool(found.get("s-inhibition")),
            ),
            (f"faithful: F(C)/F(M) = {ours} (interval's lower end >= 0.6; published 0.87)", ours.low >= 0.6),
            (
                f"complete: every class's incompleteness |F(C\\K) - F(M\\K)| <= 20% of F(M) (worst {worst_incomplete:.0%})",
                worst_incomplete <= 0.2,
            ),
            (
                f"minimal: every head's minimality score >= 1% of F(M) (least {least_minimal:.1%})",
                least_minimal >= 0.01,
            ),
        ]
    )
    roles = pd.DataFrame([{"role": r, "layer": l, "head": h} for r, hs in found.items() for l, h in hs])
    steps = pd.concat([s.assign(stage=name) for name, s in stages], ignore_index=True)
    frame = pd.concat(
        [
            steps.assign(measure="path_patching_effect"),
            roles.assign(measure="role"),
            pd.DataFrame(completeness).assign(measure="completeness"),
            pd.DataFrame(minimality).assign(measure="minimality"),
            pd.DataFrame(
                {
                    "measure": "logit_diff",
                    "condition": np.repeat(["model", "circuit"], n),
                    "prompt": np.tile(np.arange(n), 2),
                    "value": np.concatenate([fm_rows.numpy(), fc_rows.numpy()]),
                }
            ),
        ],
        ignore_index=True,
    )
    first = to_logits.assign(head=[f"L{l}H{h}" for l, h in zip(to_logits["sender_layer"], to_logits["sender_head"])])
    first = first.assign(role=[_role(found, (l, h)) for l, h in zip(first["sender_layer"], first["sender_head"])])
    fig = finding_plot(
        first.sort_values("effect"),
        "head",
        "effect",
        group="role",
        kind="bar",
        title=f"Wang et al. 2022 on {model.cfg.name}: path patching heads -> logits (ABC into clean); circuit of "
        f"{len(circuit)} heads, F(C)/F(M) = {ours.value:.2f} (published 0.87)",
        x_title="sender head",
        y_title="change of the logit difference",
    )
    return Outcome(
        frame,
        fig,
        ours,
        verdict,
        reason,
        counts={"prompts": n, "candidates": pool, "circuit_heads": len(circuit), "templates": len(set(ioi.templates))},
        details={
            "F(M)": fm,
            "F(C)": float(fc_rows.mean()),
            "roles": {r: [f"L{l}H{h}" for l, h in hs] for r, hs in found.items()},
            "completeness": completeness,
            "minimality": minimality,
            "name_movers_attend_io": movers_attend,
        },
    )


def _role(found: dict, head: tuple[int, int]) -> str:
    return next((r for r, hs in found.items() if head in hs), "other")


@torch.no_grad()
def _attends_io(model, ioi, movers: list[tuple[int, int]]) -> str:
    """Whether the name movers attend to the IO name more than to S2 from the end (mean over prompts)."""
    if not movers:
        return "no name movers"
    names = sorted({model.site("pattern", l) for l, _ in movers})
    _, cache = model.run_with_cache(ioi.clean, names=names, logits=False)
    rows = torch.arange(len(ioi))
    end, io, s2 = ioi.positions["END"], ioi.positions["IO"], ioi.positions["S2"]
    to_io = np.mean([float(cache[model.site("pattern", l)][rows, h, end, io].mean()) for l, h in movers])
    to_s = np.mean([float(cache[model.site("pattern", l)][rows, h, end, s2].mean()) for l, h in movers])
    return f"{'yes' if to_io > to_s else 'no'}: {to_io:.2f} to IO vs {to_s:.2f} to S2"


FINDING = register(
    Finding(
        id="wang2022",
        paper="Wang et al. 2022",
        citation="K. Wang, A. Variengien, A. Conmy, B. Shlegeris, J. Steinhardt, Interpretability in the Wild: a "
        "Circuit for Indirect Object Identification in GPT-2 small, ICLR 2023 (arXiv:2211.00593)",
        claim="GPT-2 small solves IOI with a circuit of attention heads found by path patching (name movers, "
        "S-inhibition, induction / duplicate-token and previous-token heads) that keeps most of the model's "
        "logit difference when every other head is mean-ablated.",
        published=Published(
            0.87,
            "GPT-2 small",
            "Section 4 (faithfulness: |F(M) - F(C)| = 0.46, 13% of F(M) = 3.56)",
            "paper",
            "F(C) / F(M)",
            "F(M) = 3.56 mean logit difference over 100,000 prompts, IO over S 99.3% of the time (Section 2); name "
            "movers 9.6, 9.9, 10.0 and negative name movers 10.7, 11.10 from path patching to the logits (Section "
            "3.1); 26 heads in 7 classes.  Read in a copy of the paper's text.",
        ),
        also=(
            Published(
                3.56, "GPT-2 small", "Section 2", "paper", "logit difference", "F(M), the model's IOI logit difference"
            ),
        ),
        metric="faithfulness F(C) / F(M): the circuit's mean IO - S logit difference with every other head "
        "mean-ablated, over the model's",
        protocol="IOI prompts from the shipped templates (12; quick: 8) with ABC corruptions; candidates = the 16 "
        "heads (quick: 12) with the largest attribution-patching effect; path patching (ABC into clean, "
        "circuits.path_patch) from candidates to the logits (name movers: drop >= 5% of F(M); negative name "
        "movers: rise), to the name movers' queries (S-inhibition), to the S-inhibition heads' values (induction "
        "vs duplicate-token by their detection scores), to the induction heads' keys (previous-token); knockouts "
        "by mean ablation over the ABC prompts of the same template at each position (circuits.knockout); "
        "completeness per class, minimality per head.",
        rule="reproduced if: F(M) > 0 (interval); name movers found that attend to IO over S2; S-inhibition heads "
        "found; F(C)/F(M) interval's lower end >= 0.6; every class's incompleteness <= 20% of F(M); every "
        "head's minimality >= 1% of F(M).  Partial if some hold.",
        requires=("attention", "text"),
        experiment=experiment,
        text="shipped IOI templates, names, places and objects (interp/tasks/data/ioi.json)",
        module=__name__,
    )
)
