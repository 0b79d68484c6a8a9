"""The bad-input sweep: wrong inputs to the CLI, the Python API and the app, each answered by
one clear line (CLI: exit code 2, no traceback; API: an ``interp.errors.InputError`` or a
missing file naming the problem; app: an ``st.error``, no exception box), never a hang or a
silent wrong result; and a crash inside the library shown as a bug (traceback, exit code 1),
never as bad input.  Also: pickled and corrupt weight files, the memory
cap, hooks that return the wrong shape or NaN, and the README's snippets run as written."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import interp
from apps.cli import app as cli_app
from interp.errors import BUG_REPORT, USER_ERRORS, InputError
from tests.conftest import build_hf_model

ROOT = Path(__file__).resolve().parent.parent


# --- files a user might hand us -------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Hugging Face folders with bad weights, and pairs files good and bad."""
    root = tmp_path_factory.mktemp("bad")
    out: dict[str, Path] = {}
    hf, _ = build_hf_model("gpt2", root / "good")
    out["good"] = root / "good"
    weights = (root / "good" / "model.safetensors").read_bytes()

    def variant(name: str, write) -> None:
        folder = root / name
        folder.mkdir()
        for f in (root / "good").iterdir():
            if f.suffix != ".safetensors":
                (folder / f.name).write_bytes(f.read_bytes())
        write(folder)
        out[name] = folder

    variant("pickle_only", lambda d: torch.save(hf.state_dict(), d / "pytorch_model.bin"))
    variant("random_bytes", lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)))
    variant("truncated", lambda d: (d / "model.safetensors").write_bytes(weights[: len(weights) // 2]))
    variant("renamed_pickle", lambda d: torch.save(hf.state_dict(), d / "model.safetensors"))
    other, _ = build_hf_model("gpt2", root / "other", n_ctx=64)
    bigger = {k: torch.zeros(3, 3) if v.ndim == 2 else v for k, v in other.state_dict().items()}
    variant("mismatched_bin", lambda d: torch.save(bigger, d / "pytorch_model.bin"))
    (root / "empty").mkdir()
    out["empty"] = root / "empty"
    pairs = {
        "pairs_ok": {"positive": ["B b40 b41", "B b42 b43"], "negative": ["A a5 a6", "A a7 a8"]},
        "pairs_unequal": {"positive": ["B b40 b41", "B b42"], "negative": ["A a5 a6"]},
        "pairs_missing": {"positive": ["B b40 b41"]},
        "pairs_empty": {"positive": [], "negative": []},
        "pairs_wrong_type": {"positive": "B b40", "negative": 3},
        "pairs_unknown_token": {"positive": ["B zebra"], "negative": ["A a5"]},
        "pairs_blank": {"positive": ["  "], "negative": ["A a5"]},
    }
    for name, content in pairs.items():
        out[name] = root / f"{name}.json"
        out[name].write_text(json.dumps(content))
    out["pairs_not_json"] = root / "pairs_not_json.json"
    out["pairs_not_json"].write_text("positive: [a], negative: [b]")
    out["pairs_not_utf8"] = root / "pairs_not_utf8.json"
    out["pairs_not_utf8"].write_bytes(b'{"positive": ["\xff\xfe"], "negative": ["a"]}')
    out["not_a_wheel"] = root / "x.whl"
    out["not_a_wheel"].write_text("not a zip")
    return out


# --- the CLI --------------------------------------------------------------------------------

CLI_CASES = [
    # models and files
    (("info", "no-such-model"), "no model at 'no-such-model'"),
    (("info", ""), "no model given"),
    (("info", "models/smol"), "no such folder"),
    (("info", "{pickle_only}"), "--allow-unsafe-pickle"),
    (("info", "{random_bytes}"), "model.safetensors is not a valid safetensors file"),
    (("info", "{truncated}"), "model.safetensors is not a valid safetensors file"),
    (("info", "{renamed_pickle}"), "model.safetensors is not a valid safetensors file"),
    (("info", "{mismatched_bin}", "--allow-unsafe-pickle"), "cannot load the model in"),
    (("info", "{empty}"), "config.json"),
    (("info", "induction-2l", "--layer", "99"), "layer 99"),
    (("info", "induction-2l", "--layer", "-5"), "layer -5"),
    (("info", "induction-2l", "--grep", "["), "--grep"),
    (("train", "no-such-recipe"), "available"),
    (("train", "steer-2l", "--steps", "0"), "--steps"),
    (("train", "steer-2l", "--steps", "-1"), "--steps"),
    (("fetch", "no-such-model"), "unknown"),
    (("fetch", "induction-2l"), "not a real model"),
    (("fetch", "smollm2-135m", "--wheel", "/no/such.whl"), "no such"),
    (("fetch", "smollm2-135m", "--wheel", "{not_a_wheel}"), "not a"),
    (("app", "--port", "80"), "port"),
    (("app", "--port", "70000"), "port"),
    (("app", "--model", "no-such-model"), "no model at"),
    # heads
    (("heads", "induction-2l", "--sequences", "0"), "--sequences"),
    (("heads", "induction-2l", "--sequences", "-3"), "--sequences"),
    (("heads", "induction-2l", "--top", "-1"), "--top"),
    (("heads", "induction-2l", "--top", "0"), "--top"),
    (("heads", "induction-2l", "--kinds", "bogus"), "bogus"),
    (("heads", "induction-2l", "--length", "1"), "length"),
    (("heads", "induction-2l", "--length", "100000"), "length"),
    (("heads", "induction-2l", "--out", "scores.txt"), ".csv"),
    (("heads", "recall-gru"), "attention"),
    (("heads", "induction-2"), "did you mean"),
    # steer
    (("steer", "steer-2l", "--pairs", "/no/such.json", "--layer", "1", "--coef", "2"), "no pairs file"),
    (("steer", "steer-2l", "--pairs", "{pairs_not_json}", "--layer", "1", "--coef", "2"), "JSON"),
    (("steer", "steer-2l", "--pairs", "{pairs_not_utf8}", "--layer", "1", "--coef", "2"), "UTF-8"),
    (("steer", "steer-2l", "--pairs", "{pairs_missing}", "--layer", "1", "--coef", "2"), "negative"),
    (("steer", "steer-2l", "--pairs", "{pairs_unequal}", "--layer", "1", "--coef", "2"), "negative"),
    (("steer", "steer-2l", "--pairs", "{pairs_empty}", "--layer", "1", "--coef", "2"), "at least 1 item"),
    (("steer", "steer-2l", "--pairs", "{pairs_wrong_type}", "--layer", "1", "--coef", "2"), "list"),
    (("steer", "steer-2l", "--pairs", "{pairs_unknown_token}", "--layer", "1", "--coef", "2"), "zebra"),
    (("steer", "steer-2l", "--pairs", "{pairs_blank}", "--layer", "1", "--coef", "2"), "empty"),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "9", "--coef", "2"), "layer 9"),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "nan"), "--coef"),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "inf"), "--coef"),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--method", "bogus"), "method"),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--method", "actadd"), "one"),
    (
        ("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--start-pos", "1000"),
        "start_pos 1000",
    ),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--start-pos", "-5"), "start_pos"),
    (
        ("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--new-tokens", "0"),
        "--new-tokens",
    ),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--site", "bogus"), "bogus"),
    (("steer", "steer-2l", "--pairs", "{pairs_ok}", "--layer", "1", "--coef", "2", "--prompt", ""), "empty"),
    # patch
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--by", "layer,foo"), "foo"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--site", "bogus"), "bogus"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--metric", "bogus"), "--metric"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--pos", "100"), "100"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--pos", "-100"), "-100"),
    (
        ("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--answer", "zebra", "--wrong", "t1"),
        "zebra",
    ),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--answer", "t5"), "--wrong"),
    (
        ("patch", "induction-2l", "--clean", "t1 t2 t3", "--clean", "t4 t5 t6", "--corrupt", "t1 t2 t4"),
        "one corrupt per clean",
    ),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2"), "aligned"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--direction", "sideways"), "direction"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--window", "0"), "window"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--window", "9"), "window"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--method", "magic"), "--method"),
    (
        (
            "patch",
            "induction-2l",
            "--clean",
            "t1 t2 t3",
            "--corrupt",
            "t1 t2 t4",
            "--method",
            "attribution",
            "--window",
            "2",
        ),
        "--window",
    ),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--out", "x.txt"), ".csv"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--top", "-1"), "--top"),
    (("patch", "induction-2l", "--clean", "", "--corrupt", "t1 t2 t4"), "empty prompt"),
    (("patch", "induction-2l", "--clean", "t1 t2 zebra", "--corrupt", "t1 t2 t4"), "zebra"),
    (("patch", "induction-2l", "--clean", "t1 t2 t3", "--corrupt", "t1 t2 t4", "--site", "hidden"), "hidden"),
    # lens
    (("lens", "induction-2l", "--prompt", "t1 t2", "--norm", "cached"), "norm must be"),
    (("lens", "induction-2l", "--prompt", "t1 t2", "--contrast", "zebra"), "zebra"),
    (("lens", "induction-2l", "--prompt", "t1 t2", "--target", "99999"), "outside the vocabulary"),
    (("lens", "induction-2l", "--prompt", "t1 t2", "--top", "0"), "--top"),
    (("lens", "recall-gru", "--prompt", "k2 v12", "--stage", "mid"), "no middle"),
]


@pytest.mark.parametrize("args, message", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(args, message, files):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    result = CliRunner().invoke(cli_app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output


def test_cli_pickle_opt_in_loads(files):
    result = CliRunner().invoke(
        cli_app, ["info", str(files["pickle_only"]), "--allow-unsafe-pickle"], catch_exceptions=False
    )
    assert result.exit_code == 0 and "n_layers: 2" in result.output, result.output


def test_cli_non_utf8_prompt(smollm2):
    """What a shell passes for undecodable bytes (surrogate escapes) is refused, not a torch error."""
    result = CliRunner().invoke(cli_app, ["lens", "smollm2-135m", "--prompt", "caf\udce9"], catch_exceptions=False)
    assert result.exit_code == 2 and "UTF-8" in result.output, result.output


def test_a_crash_inside_the_library_is_shown_as_a_bug(monkeypatch):
    """An internal TypeError (here forced inside heads.scores) is not a refusal: the CLI prints the
    traceback and says it is a bug, with exit code 1 (bad input keeps exit code 2, above)."""
    from interp import heads

    def broken(*args, **kwargs):
        raise TypeError("forward() missing 1 required positional argument: 'layer_type'")

    monkeypatch.setattr(heads, "scores", broken)
    result = CliRunner().invoke(cli_app, ["heads", "induction-2l"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.output and "layer_type" in result.output
    assert BUG_REPORT in " ".join(result.output.split())
    assert not any(line.startswith("error:") for line in result.output.splitlines())


# --- the Python API -------------------------------------------------------------------------


def _api_cases():
    from circuits.graph import Circuit
    from circuits.patching import patch
    from interp import heads, lens, metrics, retrieval, steering
    from interp.ablation import ablation_effect
    from interp.logits import next_token_probs
    from interp.tasks import repeated_tokens, text
    from interp.tasks.functions import FunctionPrompts

    ind = lambda: interp.load("induction-2l")
    smol = functools.cache(lambda: interp.load("smollm2-135m"))  # one load for every case that needs it
    toks = torch.tensor([[0, 5, 6, 7, 5, 6]])
    return [
        ("load empty", lambda f: interp.load(""), InputError, "no model given"),
        ("load relative path", lambda f: interp.load("models/smol"), FileNotFoundError, "no such folder"),
        ("load pickle", lambda f: interp.load(f["pickle_only"]), InputError, "allow_unsafe_pickle=True"),
        ("load random bytes", lambda f: interp.load(f["random_bytes"]), InputError, "not a valid safetensors"),
        ("load truncated", lambda f: interp.load(f["truncated"]), InputError, "not a valid safetensors"),
        ("load renamed pickle", lambda f: interp.load(f["renamed_pickle"]), InputError, "not a valid safetensors"),
        (
            "load mismatched bin",
            lambda f: interp.load(f["mismatched_bin"], allow_unsafe_pickle=True),
            InputError,
            "cannot load the model",
        ),
        ("load empty folder", lambda f: interp.load(f["empty"]), FileNotFoundError, "config.json"),
        ("load bad device", lambda f: interp.load("induction-2l", device="tpu"), InputError, "device"),
        ("load bad dtype", lambda f: interp.load("induction-2l", dtype="float13"), InputError, "dtype"),
        ("bytes prompt", lambda f: ind().to_tokens(b"t1 t2"), InputError, "bytes"),
        ("non-UTF-8 text", lambda f: smol().to_tokens("caf\udce9"), InputError, "UTF-8"),
        ("empty batch", lambda f: ind().tokenize([]), InputError, "no prompts"),
        (
            "ablation positions string",
            lambda f: ablation_effect(
                ind(), repeated_tokens(4, d_vocab=64, n_ctx=16, period=6), [(1, 2)], positions="last"
            ),
            InputError,
            "positions must be 'default'",
        ),
        (
            "function prompts without an answer",
            lambda f: FunctionPrompts(toks, toks, toks).metric(),
            InputError,
            "neither answers nor targets",
        ),
        ("bool token", lambda f: ind().token_id(True), InputError, "token"),
        ("token id range", lambda f: ind().token_id(10**9), InputError, "outside the vocabulary"),
        ("ids out of vocab", lambda f: ind()(torch.tensor([[1, 10**6]])), InputError, "vocabulary"),
        ("float tokens", lambda f: ind()(torch.ones(1, 3)), InputError, "int"),
        ("too long", lambda f: ind()(torch.zeros(1, 500, dtype=torch.long)), InputError, "n_ctx"),
        ("unknown site kind", lambda f: ind().site("zz", 0), InputError, "zz"),
        ("site layer", lambda f: ind().site("z", 99), InputError, "99"),
        (
            "wrong-shape hook",
            lambda f: ind().run_with_hooks(toks, [("blocks.0.hook_resid_post", lambda x, hook: x[:, :2])]),
            InputError,
            "returned shape",
        ),
        (
            "non-tensor hook",
            lambda f: ind().run_with_hooks(toks, [("blocks.0.hook_resid_post", lambda x, hook: 1)]),
            InputError,
            "returned an object of type int",
        ),
        (
            "uncallable hook",
            lambda f: ind().run_with_hooks(toks, [("blocks.0.hook_resid_post", 3)]),
            InputError,
            "not callable",
        ),
        ("head kinds", lambda f: heads.scores(ind(), toks, ["bogus"]), InputError, "bogus"),
        (
            "heads on rnn",
            lambda f: heads.scores(interp.load("recall-gru"), torch.tensor([[0, 2, 3]])),
            InputError,
            "attention",
        ),
        ("next token pos", lambda f: next_token_probs(ind(), toks, pos=100), InputError, "pos 100"),
        ("next token k", lambda f: next_token_probs(ind(), toks, k=0), InputError, "k must be"),
        ("patch by", lambda f: patch(ind(), toks, toks.flip(1), site="z", by=("layer", "foo")), InputError, "foo"),
        ("metric answer", lambda f: metrics.logit_diff(10**6, 1).check(1, 6, 64), InputError, "vocabulary"),
        ("metric kind", lambda f: metrics.Metric("bogus", torch.tensor([[-1]])), InputError, "bogus"),
        (
            "steer method",
            lambda f: steering.SteeringVector.from_pairs(ind(), toks, toks, layer=0, method="bogus"),
            InputError,
            "method",
        ),
        (
            "steer unequal",
            lambda f: steering.SteeringVector.from_pairs(ind(), toks, torch.cat([toks, toks]), layer=0),
            InputError,
            "negative",
        ),
        ("steer layer", lambda f: steering.SteeringVector.from_pairs(ind(), toks, toks, layer=7), InputError, "7"),
        (
            "steer coef nan",
            lambda f: (
                steering.SteeringVector.from_pairs(ind(), toks, toks.flip(1), layer=0)
                .apply(ind(), coef=float("nan"))
                .__enter__()
            ),
            InputError,
            "coef",
        ),
        (
            "generations start",
            lambda f: steering.compare_generations(
                ind(), steering.SteeringVector.from_pairs(ind(), toks, toks.flip(1), layer=0), toks, 1.0, start_pos=1000
            ),
            InputError,
            "start_pos 1000",
        ),
        (
            "sweep coefs",
            lambda f: steering.sweep(ind(), (toks, toks.flip(1)), [0], [float("nan")], toks, metrics.set_prob([5])),
            InputError,
            "coef",
        ),
        (
            "sweep metric",
            lambda f: steering.sweep(ind(), (toks, toks.flip(1)), [0], [1.0], toks, "prob"),
            InputError,
            "Metric",
        ),
        ("lens stage", lambda f: lens.logit_lens(ind(), toks, stage="middle"), InputError, "stage must be"),
        ("lens k", lambda f: lens.logit_lens(ind(), toks, k=0), InputError, "k must be"),
        ("lens layers", lambda f: lens.logit_lens(ind(), toks, layers=[5]), InputError, "out of range"),
        ("dla multi-token", lambda f: lens.dla(smol(), "Hello", " Parisian London"), InputError, "tokens, not one"),
        ("dla pos", lambda f: lens.dla(ind(), toks, 5, pos=6), InputError, "outside the prompt"),
        (
            "tuned lens pickle",
            lambda f: lens.TunedLens.load(f["renamed_pickle"] / "model"),
            FileNotFoundError,
            "no tuned lens",
        ),
        (
            "retrieval k",
            lambda f: retrieval.retrieval_experiment(smol(), text.passkey(smol(), 1, context_length=128), k=0),
            InputError,
            "k must be",
        ),
        ("niah too long", lambda f: retrieval.niah_grid(ind(), [100000], [0.5]), InputError, "n_ctx"),
        ("niah task", lambda f: retrieval.niah_grid(smol(), [128], [0.5], task="bogus"), InputError, "task must be"),
        ("ioi n", lambda f: text.ioi(smol(), 0), InputError, "positive int"),
        ("ioi corruption", lambda f: text.ioi(smol(), 2, corruption="XYZ"), InputError, "corruption"),
        ("ioi on zoo", lambda f: text.ioi(ind(), 2), InputError, "natural-language"),
        ("function task", lambda f: text.function_task(smol(), "bogus"), InputError, "bogus"),
        ("generated length", lambda f: text.generated_text(ind(), 1, 1000), InputError, "n_ctx"),
        ("circuit json", lambda f: Circuit.from_json("{}"), InputError, "not a circuit file"),
        ("circuit file", lambda f: Circuit.from_json("/no/such/circuit.json"), FileNotFoundError, "no circuit file"),
        (
            "memory budget",
            lambda f: _with_env("INTERP_MEMORY_MB", "lots", lambda: heads.scores(ind(), toks)),
            InputError,
            "INTERP_MEMORY_MB",
        ),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_a_clear_error(case, files, smollm2):
    """Each refusal is one of the library's user errors (InputError, or a missing file), so a
    crash inside the library (a TypeError, an IndexError) can no longer pass as a refusal."""
    _, call, error, message = case
    with pytest.raises(Exception) as info:
        call(files)
    assert type(info.value) is error or (error is InputError and isinstance(info.value, InputError)), repr(info.value)
    assert isinstance(info.value, USER_ERRORS)
    text = str(info.value)
    assert message in text, text
    assert len(text) < 600 and "Traceback" not in text


def _with_env(key: str, value: str, fn):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        return fn()
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def test_pickle_opt_in_equals_the_safetensors_model(files):
    safe = interp.load(files["good"])
    pickled = interp.load(files["pickle_only"], allow_unsafe_pickle=True)
    tokens = safe.to_tokens("w1 w2 w3 w4")
    assert torch.allclose(safe(tokens), pickled(tokens), atol=1e-6)


def test_nan_check_names_the_site(induction_model):
    tokens = torch.tensor([[0, 5, 6, 7]])
    nan = [("blocks.0.hook_resid_post", lambda x, hook: x * float("nan"))]
    assert torch.isnan(induction_model.run_with_hooks(tokens, nan)).all()  # off: NaN spreads (the default)
    induction_model.check_finite = True
    try:
        with pytest.raises(ValueError, match="non-finite values .* at blocks.0.hook_resid_post"):
            induction_model.run_with_hooks(tokens, nan)
        assert torch.isfinite(induction_model(tokens)).all()  # clean runs pass the check
    finally:
        induction_model.check_finite = False


# --- the app --------------------------------------------------------------------------------

APP = str(ROOT / "apps" / "app.py")


def _page(page: str, source: str = "induction-2l"):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model_source"] = source
    at.switch_page(f"views/{page}.py")
    return at.run()


APP_CASES = [
    ("lens", "induction-2l", lambda at: at.text_area(key="lens_prompt").input("t1 zebra"), "unknown token 'zebra'"),
    ("lens", "induction-2l", lambda at: at.text_area(key="lens_prompt").input("   "), "empty prompt"),
    ("lens", "induction-2l", lambda at: at.text_input(key="lens_target").input("zebra"), "unknown token 'zebra'"),
    ("lens", "induction-2l", lambda at: at.text_input(key="lens_contrast").input("9999"), "outside the vocabulary"),
    ("steering", "steer-2l", lambda at: at.text_input(key="steer_prompt").input("B zebra"), "unknown token"),
    ("steering", "steer-2l", lambda at: at.number_input(key="steer_start").set_value(12), "past the prompt"),
    (
        "steering",
        "steer-2l",
        lambda at: (at.text_input(key="steer_coefs").input("a b").run(), at.button(key="steer_sweep").click()),
        "coefficients must be numbers",
    ),
    (
        "steering",
        "steer-2l",
        lambda at: (at.text_input(key="steer_coefs").input("1 nan").run(), at.button(key="steer_sweep").click()),
        "finite",
    ),
    (
        "steering",
        "steer-2l",
        lambda at: (at.text_input(key="steer_coefs").input(" ").run(), at.button(key="steer_sweep").click()),
        "at least one value",
    ),
    ("attention", "induction-2l", lambda at: at.text_area(key="attn_text").input("t1 " * 100), "n_ctx"),
    (
        "patching",
        "induction-2l",
        lambda at: (
            at.radio(key="patch_inputs").set_value("task batch").run(),
            at.text_input(key="patch_positions").input("1.5"),
        ),
        "bad positions",
    ),
    ("circuit", "induction-2l", lambda at: at.text_area(key="circ_corrupt").input("t1"), "aligned"),
    (
        "model",
        "induction-2l",
        lambda at: (
            at.radio(key="model_kind").set_value("local Hugging Face folder").run(),
            at.text_input(key="model_path").input("/no/such/folder"),
            at.button[0].click(),
        ),
        "no such folder",
    ),
]


@pytest.mark.parametrize("page, source, act, message", APP_CASES, ids=[f"{p}-{m[:30]}" for p, _, _, m in APP_CASES])
def test_app_bad_input_is_a_message(page, source, act, message):
    at = _page(page, source)
    act(at)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_a_crash_inside_the_library_is_shown_as_a_bug_in_the_app(monkeypatch):
    """The app shows a library crash with its traceback and the bug line, not as an input message."""
    import streamlit as st

    from interp import lens

    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds for dimension 0 with size 7")

    monkeypatch.setattr(lens, "logit_lens", broken)
    st.cache_data.clear()  # results are cached per process: make the page call the library
    at = _page("lens")
    assert any(BUG_REPORT in e.value for e in at.error), [e.value for e in at.error]
    assert at.exception and "index 7 is out of bounds" in at.exception[0].value


# --- memory ---------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the memory in use")
def test_a_huge_request_stays_under_the_memory_cap(tmp_path):
    """`interp heads induction-2l --sequences 200000` (killed at 22 GB before) runs in chunks under
    INTERP_MEMORY_MB: once its progress bar has moved 3 layers, it has stayed under 1.5 GB
    (watched from the start; the start-up itself may take a while on a loaded machine)."""
    env = {**os.environ, "INTERP_MEMORY_MB": "256", "PYTHONPATH": str(ROOT)}
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "heads", "induction-2l", "--sequences", "200000"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err_out,
            text=True,
        )
    peak, deadline, moved = 0.0, time.monotonic() + 120, False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            peak = max(peak, _rss_mb(proc.pid))
            counts = [int(c) for c in re.findall(r"(\d+)/\d+ \[", err_file.read_text())]
            if counts and max(counts) >= 3:
                moved = True
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    err = err_file.read_text()
    assert moved and "head scores" in err, err[-2000:]  # chunked, with progress
    assert peak < 1500, f"peak RSS {peak:.0f} MB"


def test_a_cache_too_large_is_refused_during_the_forward(induction_model):
    """A cache of every site for 2000 x 64 tokens (~100 MB) with a 1 MB budget stops in the
    forward with the size and the knob, instead of filling the machine."""
    tokens = torch.zeros(2000, 64, dtype=torch.long)
    with pytest.raises(MemoryError, match="activation cache.*INTERP_MEMORY_MB"):
        _with_env("INTERP_MEMORY_MB", "1", lambda: induction_model.run_with_cache(tokens))
    _, cache = _with_env("INTERP_MEMORY_MB", "1", lambda: induction_model.run_with_cache(tokens[:4]))
    assert len(cache) > 10  # a small cache is still kept whole
