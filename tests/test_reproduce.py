"""interp.reproduce without the real model: the bootstrap, verdicts, the registry and its entry
points, the faces' bad input, and the core additions the entries rest on, each against an exact
identity (streaming attention's two methods, head-mask gradients against finite differences,
massive-activation resets, knockouts, self-repair, the lens's set probabilities).  The verdicts
on smollm2-135m are in tests/test_reproduce_real.py (marker ``reproduce``)."""

from __future__ import annotations

import ast
import json
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import circuits.reproduce  # noqa: F401  registers the causal findings (as the faces do)
from apps.cli import app
from interp import reproduce
from interp.errors import InputError, Unsupported
from interp.reproduce.finding import NOT_REPRODUCED, PARTIAL, REPRODUCED, Finding, Published, decide
from interp.reproduce.stats import bootstrap

ROOT = Path(__file__).resolve().parent.parent
IDS = {
    "olsson2022",
    "wu2024",
    "xiao2023",
    "wang2022",
    "todd2023",
    "michel2019",
    "sun2024",
    "mcgrath2023",
    "zhang2023",
    "wendler2024",
    "arora2023",
    "liu2023",
    "meng2022",
    "sharma2024",
    "olsson2022_phase",
    "karpathy2015",
}
SUMMARY_KEYS = {
    "id",
    "paper",
    "claim",
    "model",
    "published",
    "ours",
    "ci_low",
    "ci_high",
    "verdict",
    "seconds",
    "counts",
}


# --- statistics and verdicts --------------------------------------------------------------------


def test_bootstrap_interval_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        x = rng.normal(1.0, 2.0, size=30)
        e = bootstrap(x, n_boot=400, seed=i)
        assert e.low <= e.value <= e.high and e.n == 30
        hits += e.low <= 1.0 <= e.high
    assert 0.88 <= hits / 200 <= 0.99, hits


def test_bootstrap_is_paired_and_refuses_single_samples():
    a = np.arange(10.0)
    # a ratio of paired means: resampling the same rows in both keeps it exactly 2
    e = bootstrap((2 * a + 2, a + 1), lambda x, y: float(x.mean() / y.mean()))
    assert e.value == pytest.approx(2) and e.low == pytest.approx(2) and e.high == pytest.approx(2)
    with pytest.raises(InputError, match="at least 2"):
        bootstrap([1.0])
    with pytest.raises(InputError, match="same first axis"):
        bootstrap((np.ones(3), np.ones(4)), lambda x, y: 0.0)


def test_decide_combines_checks():
    assert decide([("a", True), ("b", True)])[0] == REPRODUCED
    assert decide([("a", True), ("b", False)])[0] == PARTIAL
    verdict, reason = decide([("a", False), ("b", False)])
    assert verdict == NOT_REPRODUCED and reason == "fails: a; fails: b"
    with pytest.raises(ValueError):
        Published(1.0, "m", "Table 1", "guessed")


# --- the registry ------------------------------------------------------------------------------------


def test_registry_lists_the_ten_findings_with_their_sources():
    table = reproduce.list_findings()
    assert set(table["id"]) == IDS
    assert set(table["source"]) <= set(reproduce.SOURCES)
    # every finding states its claim in one sentence, its rule and where the published number is
    for f in reproduce.findings().values():
        assert f.claim.count(". ") == 0 and f.rule and f.published.where and f.protocol
        assert f.published.verified == (f.published.source != "unverified")
    with pytest.raises(InputError, match="unknown finding 'nosuch'; known: .*olsson2022.*zhang2023"):
        reproduce.get("nosuch")


def test_register_refuses_a_second_finding_under_the_same_id():
    dup = Finding(
        "olsson2022",
        "x",
        "x",
        "x",
        Published(None, "m", "w", "unverified"),
        "m",
        "p",
        "r",
        (),
        lambda *a: None,
        module="elsewhere",
    )
    with pytest.raises(InputError, match="already registered"):
        reproduce.register(dup)


def test_causal_findings_are_declared_as_entry_points_and_interp_never_imports_circuits():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["interp.findings"]
    assert set(declared) == {"wang2022", "mcgrath2023", "zhang2023", "meng2022", "sharma2024"}
    for name, target in declared.items():
        module, attr = target.split(":")
        finding = getattr(import_module(module), attr)
        assert isinstance(finding, Finding) and finding.id == name and reproduce.get(name) is finding
    for path in (ROOT / "interp").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n == "circuits" or n.startswith("circuits.") for n in names), path


# --- runs that do not apply, and the faces --------------------------------------------------------


@pytest.mark.parametrize(
    "fid, source, why",
    [
        ("wu2024", "flipflop-lstm", "without attention"),
        ("xiao2023", "induction-2l", "context|rotary"),
        ("wang2022", "induction-2l", "text tokenizer"),
        ("olsson2022", "induction-2l", "context"),
    ],
)
def test_a_finding_that_does_not_apply_says_why(fid, source, why):
    import interp

    result = reproduce.run(fid, interp.load(source))
    s = result.summary
    assert s["verdict"] == "not applicable" and s["ours"] is None
    assert __import__("re").search(why, s["reason"]), s["reason"]
    assert SUMMARY_KEYS <= set(s) and s["model"] == source
    json.dumps(result.to_json())  # JSON-ready


def test_cli_lists_runs_and_refuses(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["reproduce", "--list"])
    assert out.exit_code == 0, out.output
    for fid in IDS:
        assert fid in out.output
    bad = runner.invoke(app, ["reproduce", "nosuch"])
    assert bad.exit_code == 2 and "known: " in bad.output and "wendler2024" in bad.output
    assert runner.invoke(app, ["reproduce", "wu2024", "--json", str(tmp_path / "x.txt")]).exit_code == 2
    target = tmp_path / "wu.json"
    done = runner.invoke(app, ["reproduce", "wu2024", "--model", "flipflop-lstm", "--json", str(target)])
    assert done.exit_code == 0, done.output
    assert "not applicable" in done.output
    data = json.loads(target.read_text())
    assert (
        SUMMARY_KEYS <= set(data)
        and data["verdict"] == "not applicable"
        and data["published"] == pytest.approx(33 / 1024)
    )


# --- the core additions, against exact identities -----------------------------------------------------


def test_streaming_mask_equals_the_cache_loop_and_sinks_matter(tiny_llama):
    from interp import streaming
    from interp.tasks import loss_by_position

    ids = torch.randint(2, 100, (2, 40), generator=torch.Generator().manual_seed(0))
    for sinks, window in [(0, 8), (2, 6), (4, 12)]:
        mask = streaming.streaming_losses(tiny_llama, ids, window=window, sinks=sinks, method="mask")
        loop = streaming.streaming_losses(tiny_llama, ids, window=window, sinks=sinks, method="cache")
        assert (mask - loop).abs().max() < 1e-4, (sinks, window)
    # before the cache fills nothing is evicted: the loss equals full attention's; after, the sinks change it
    with torch.no_grad():
        full = loss_by_position(tiny_llama(ids), ids)
    window_only = streaming.streaming_losses(tiny_llama, ids, window=8, sinks=0)
    with_sinks = streaming.streaming_losses(tiny_llama, ids, window=6, sinks=2)
    assert (window_only[:, :8] - full[:, :8]).abs().max() < 1e-4
    assert (window_only[:, 10:] - with_sinks[:, 10:]).abs().max() > 1e-4
    assert (streaming.streaming_losses(tiny_llama, ids, window=100, sinks=0) - full).abs().max() < 1e-4
    frame = streaming.streaming_perplexity(tiny_llama, ids, cache_size=8, sinks=2)
    assert set(frame["condition"]) == {"window", "sinks", "full"} and len(frame) == 3 * 2 * 39


def test_streaming_refuses_models_without_rotary(hf_gpt2):
    from interp import streaming

    with pytest.raises(Unsupported, match="rotary"):
        streaming.streaming_losses(hf_gpt2, torch.randint(2, 100, (1, 12)), window=4, sinks=1)


def test_head_mask_gradient_equals_finite_differences(induction_model):
    from interp import heads, interventions
    from interp.tasks import loss_by_position, repeated_tokens

    tokens = repeated_tokens(1, d_vocab=induction_model.cfg.d_vocab, n_ctx=40, period=12, seed=3).tokens
    frame = heads.head_importance(induction_model, tokens).set_index(["layer", "head"])
    eps = 1e-3

    def loss(layer, head, factor):
        iv = interventions.scale(induction_model.site("z", layer), factor, heads=[head])
        with torch.no_grad(), interventions.apply(induction_model, [iv]):
            return float(loss_by_position(induction_model(tokens), tokens).mean())

    for layer, head in [(0, 1), (1, 2), (1, 0)]:
        numeric = abs(loss(layer, head, 1 + eps) - loss(layer, head, 1 - eps)) / (2 * eps)
        assert frame.loc[(layer, head), "raw"] == pytest.approx(numeric, rel=2e-2, abs=1e-5)
    per_layer = frame["importance"].groupby(level="layer").apply(lambda s: float(np.sqrt((s**2).sum())))
    assert np.allclose(per_layer.to_numpy(), 1.0)
    order = heads.pruning_order(frame.reset_index())
    curve = heads.pruning_curve(
        induction_model, tokens, {"importance": order, "random": heads.random_order(induction_model, 0)}, [0, 0.5]
    )
    assert set(curve["n_pruned"]) == {0, 4}


def test_massive_activations_found_and_reset(induction_model):
    from interp import massive

    tokens = torch.randint(1, 60, (2, 16), generator=torch.Generator().manual_seed(1))
    site = induction_model.site("resid_post", 0)

    def inject(x, hook):
        x = x.clone()
        x[:, 0, 3] += 1e4
        return x

    with induction_model.hooks([(site, inject)]):
        found = massive.massive_activations(induction_model, tokens)
        first = found[found["layer"] == 0]
        assert set(zip(first["pos"], first["dim"])) == {(0, 3)} and len(first) == 2
        with massive.reset_massive(induction_model, 0, [3], "zero"):
            _, cache = induction_model.run_with_cache(tokens, names=[site])
        assert float(cache[site][:, 0, 3].abs().max()) == 0.0
        with massive.reset_massive(induction_model, 0, [3], "mean", means={(True, 3): 7.0}):
            _, cache = induction_model.run_with_cache(tokens, names=[site])
        assert torch.allclose(cache[site][:, 0, 3], torch.full((2,), 7.0))
    top = massive.layer_magnitudes(induction_model, tokens)
    assert list(top.groupby("layer")["rank"].max()) == [3, 3] and (top["ratio"] > 0).all()


def test_token_set_probs_last_reading_is_the_model(induction_model):
    from interp.lens import token_set_probs

    tokens = torch.randint(1, 60, (3, 10), generator=torch.Generator().manual_seed(2))
    sets = {"a": [[5, 7], [9], [11, 12, 13]]}
    frame = token_set_probs(induction_model, tokens, sets)
    last = frame[frame["layer"] == frame["layer"].max()].sort_values("prompt")
    with torch.no_grad():
        probs = induction_model(tokens)[:, -1].softmax(-1)
    want = [float(probs[i, ids].sum()) for i, ids in enumerate(sets["a"])]
    assert np.allclose(last["prob"].to_numpy(), want, atol=1e-5)


def test_knockout_with_own_means_changes_nothing_and_selfrepair_of_itself_is_zero(induction_model):
    from circuits import knockout, selfrepair
    from interp import metrics

    tokens = torch.randint(1, 60, (3, 12), generator=torch.Generator().manual_seed(4))
    metric = metrics.logit(torch.tensor([5, 6, 7]))
    means = knockout.template_means(induction_model, tokens, [0, 1, 2])  # each row its own template
    plain = knockout.knockout_values(induction_model, tokens, metric, means)
    every = knockout.knockout_values(induction_model, tokens, metric, means, induction_model.heads())
    assert torch.allclose(plain, every, atol=1e-4)
    shared = knockout.template_means(induction_model, tokens, [0, 0, 0])
    assert not torch.allclose(
        knockout.knockout_values(induction_model, tokens, metric, shared, induction_model.heads()), plain
    )
    same = selfrepair.direct_and_total(induction_model, tokens, torch.tensor([5, 6, 7]), tokens)
    assert same[["direct", "total"]].abs().max().max() < 1e-4
    other = selfrepair.direct_and_total(induction_model, tokens, torch.tensor([5, 6, 7]), tokens.roll(1, 0))
    last = other[other["layer"] == induction_model.cfg.n_layers - 1]
    # the last layer has nothing after it to compensate: only the final norm's rescaling separates the two
    assert np.corrcoef(last["direct"], last["total"])[0, 1] > 0.9


def test_text_builders_refuse_models_without_text(tiny_llama, induction_model):
    from interp.tasks import text

    with pytest.raises(InputError, match="natural-language"):
        text.translation(induction_model)
    with pytest.raises(InputError, match="natural-language"):
        text.facts(induction_model, 4)
    # a text tokenizer without these words: the builders say how few are usable
    with pytest.raises(InputError, match="only 0 words"):
        text.translation(tiny_llama)
    with pytest.raises(InputError, match="single tokens|usable"):
        text.facts(tiny_llama, 4)


def test_a_package_registers_findings_through_the_entry_point(tmp_path, monkeypatch):
    """The plugin path end to end: an installed distribution declaring ``interp.findings`` is found by
    importlib.metadata and its Finding registered (how circuits' findings arrive once installed)."""
    from interp.reproduce import registry

    (tmp_path / "plugin_findings_demo.py").write_text(
        "from interp.reproduce import Finding, Published\n"
        "FINDING = Finding('demo2099', 'Demo 2099', 'c', 'A demo claim.', Published(None, 'm', 'w', 'unverified'),"
        " 'm', 'p', 'r', (), lambda *a: None, module='plugin_findings_demo')\n"
    )
    info = tmp_path / "plugin_findings_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-findings-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[interp.findings]\ndemo2099 = plugin_findings_demo:FINDING\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry._LOADED, "plugins", False)
    try:
        assert reproduce.get("demo2099").module == "plugin_findings_demo"
    finally:
        registry._REGISTRY.pop("demo2099", None)
