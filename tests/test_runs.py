"""The run store (interp.runs): results with provenance saved from Python, the CLI and the app
reload equal; saves are atomic under concurrency and crashes; bad stores are refused or
repaired in one line; no analysis depends on DataFrame.attrs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import interp
from apps.cli import app as cli
from circuits import patching
from interp import heads, runs
from interp.errors import InputError, SetupError
from interp.runs import store as S
from interp.runs.provenance import git_commit

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "apps" / "app.py")


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Path:
    """An empty store of the test's own."""
    monkeypatch.setenv("INTERP_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def induction_patch(model) -> runs.Result:
    """Exact patching of induction-2l's heads: the last token replaced (an induction prompt)."""
    clean = model.to_tokens("t1 t2 t3 t4 t5 t1 t2 t3 t4")
    corrupt = clean.clone()
    corrupt[0, -1] = model.token_id("t9")
    return runs.run(patching.patch, model, clean, corrupt, site="z", by="layer,pos,head", progress=False)


def complete(p: runs.Provenance, model: interp.Model) -> None:
    """Everything the issue asks a provenance for, with values that match the model and machine."""
    assert p.missing() == [], p.missing()
    assert p.model["name"] == model.cfg.name and p.model["family"] == model.cfg.family
    assert p.model["config"]["n_layers"] == model.cfg.n_layers and len(p.model["sha256"]) == 64
    assert {"interp", "torch", "transformers", "transformer-lens", "nnsight"} <= set(p.versions)
    assert p.versions["interp"] == interp.__version__
    assert p.git == git_commit() and len(p.git["commit"]) == 40  # the tests run from a checkout
    assert p.device == "cpu" and p.dtype == "float32" and p.wall_seconds > 0 and p.started
    assert p.prompts and all(len(x["sha256"]) == 64 for x in p.prompts)


# --- the result type --------------------------------------------------------------------


def test_a_plain_call_still_returns_the_frame_and_run_gives_meta_and_provenance(induction_model, store):
    clean = induction_model.to_tokens("t1 t2 t3 t4 t5 t1 t2 t3 t4")
    corrupt = clean.clone()
    corrupt[0, -1] = induction_model.token_id("t9")
    frame = patching.patch(induction_model, clean, corrupt, site="z", progress=False)
    result = runs.run(patching.patch, induction_model, clean, corrupt, site="z", progress=False)
    assert isinstance(frame, pd.DataFrame)
    pd.testing.assert_frame_equal(result.frame, frame)
    assert result.frame.attrs == {}  # the Result's frame carries nothing in attrs
    m = result.meta
    assert m["site"] == "z" and m["engine"] in ("native", "hooks") and m["by"] == ("layer", "pos", "head")
    # the identities the meta must satisfy: effect = value - corrupt, normalised against clean / corrupt
    assert (result.frame["effect"] - (result.frame["value"] - m["corrupt_value"])).abs().max() < 1e-9
    assert m["clean_value"] > m["corrupt_value"]
    p = result.provenance
    complete(p, induction_model)
    assert p.analysis == "patching" and p.function == "circuits.patching.patch"
    assert p.arguments["site"] == "z" and p.arguments["clean"]["sha256"] != p.arguments["corrupt"]["sha256"]
    assert [x["argument"] for x in p.prompts] == ["clean", "corrupt"] and p.prompts[0]["ids"] == clean.tolist()
    fig = result.draw()  # the default figure, titled from the meta
    assert "denoising patching of z" in fig.layout.title.text


def test_nested_analyses_keep_their_own_meta_and_record_needs_an_analysis(induction_model):
    from circuits.calibration import calibration

    # calibration runs patch, attribute and EAP-IG inside: its meta is its own, not theirs
    clean = induction_model.to_tokens("t1 t2 t3 t4 t1 t2 t3")
    corrupt = clean.clone()
    corrupt[0, -1] = induction_model.token_id("t9")
    r = runs.run(calibration, induction_model, clean, corrupt, steps=2)
    assert set(r.meta["spearman"]) == {"attribution", "eap_ig"} and "engine" not in r.meta
    with pytest.raises(RuntimeError, match="outside an analysis"):
        runs.record(x=1)

    # an undecorated function's legacy attrs become meta
    def legacy() -> pd.DataFrame:
        df = pd.DataFrame({"layer": [0, 1], "value": [0.5, 1.5]})
        df.attrs["total"] = 2.0
        return df

    r = runs.run(legacy)
    assert r.meta == {"total": 2.0} and r.frame.attrs == {} and r.provenance.analysis.endswith("legacy")


def test_save_load_roundtrip_keeps_frame_meta_provenance_and_figure(induction_model, store):
    result = induction_patch(induction_model)
    result.meta["extra"] = {"cells": (1, 2), "nan": float("nan"), "frame": pd.DataFrame({"a": [1, 2]})}
    rid = runs.save(result, label="round trip")
    assert result.id == rid and re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", rid)
    back = runs.load(rid)
    pd.testing.assert_frame_equal(back.frame, result.frame)
    assert back.meta["by"] == ("layer", "pos", "head") and back.meta["clean_value"] == result.meta["clean_value"]
    assert back.meta["extra"]["cells"] == (1, 2) and np.isnan(back.meta["extra"]["nan"])
    pd.testing.assert_frame_equal(back.meta["extra"]["frame"], pd.DataFrame({"a": [1, 2]}))
    assert back.provenance == result.provenance
    assert back.draw().layout.title.text == result.draw().layout.title.text
    assert runs.load(rid[:17]).id == rid  # a unique start of the id
    listed = runs.list()
    assert list(listed["id"]) == [rid] and listed["analysis"].iloc[0] == "patching"
    assert listed["label"].iloc[0] == "round trip" and listed["n_rows"].iloc[0] == len(result.frame)


def test_frames_with_objects_and_the_sql_catalog(store):
    def odd() -> pd.DataFrame:
        return pd.DataFrame(
            {
                "layer": [0, 1, 2],
                "heads": [[(0, 1)], [], [(2, 3), (4, 5)]],  # Parquet would give arrays back
                "mixed": [1, "a", None],
                "score": np.array([0.1, np.nan, 0.3], dtype=np.float32),
                "kind": pd.Categorical(["x", "y", "x"]),
            }
        )

    r = runs.run(odd)
    rid = runs.save(r)
    back = runs.load(rid)
    pd.testing.assert_frame_equal(back.frame, r.frame)
    assert back.frame["heads"].iloc[2] == [(2, 3), (4, 5)]
    other = runs.save(runs.run(lambda: pd.DataFrame({"layer": [7], "value": [1.0]})))
    # DuckDB reads the Parquet files directly: one run's frame, and every frame by name
    one = runs.sql("SELECT layer, score FROM run_frame(?) ORDER BY layer", [rid])
    assert one["layer"].tolist() == [0, 1, 2] and one["score"].iloc[2] == pytest.approx(0.3)
    both = runs.sql("SELECT run_id, count(*) AS n FROM frames() GROUP BY 1 ORDER BY 1")
    assert dict(zip(both["run_id"], both["n"])) == {rid: 3, other: 1}
    with pytest.raises(InputError, match="SQL error"):
        runs.sql("SELECT * FROM no_such_table")
    with pytest.raises(InputError, match="SQL error"):  # read-only
        runs.sql("DELETE FROM runs")


def test_export_and_rm(store, tmp_path):
    import pyarrow.parquet as pq

    r = runs.run(lambda: pd.DataFrame({"layer": [0, 1], "value": [0.25, 0.5]}))
    rid = runs.save(r)
    pq_path = runs.export(rid, tmp_path / "run.parquet")
    table = pq.read_table(pq_path)
    assert json.loads(table.schema.metadata[b"interp.run"])["id"] == rid
    pd.testing.assert_frame_equal(table.to_pandas(), r.frame)
    doc = json.loads(runs.export(rid, tmp_path / "run.json").read_text())
    assert doc["provenance"]["analysis"] == r.provenance.analysis and doc["frame"]["data"] == [[0, 0.25], [1, 0.5]]
    assert pd.read_csv(runs.export(rid, tmp_path / "run.csv")).equals(r.frame)
    with pytest.raises(InputError, match="parquet, .json or .csv"):
        runs.export(rid, tmp_path / "run.xlsx")
    assert runs.rm(rid) == rid
    assert runs.list().empty and not (store / "data" / rid).exists()


def test_diff_matches_cells_and_says_what_changed(induction_model, recall_model, store):
    # a patching sweep before and after a change (one head ablated throughout)
    before = induction_patch(induction_model)
    with induction_model.hooks([(induction_model.site("z", 1), lambda x, hook: x * 0.5)]):
        after = induction_patch(induction_model)
    d = runs.diff(runs.save(before), runs.save(after))
    assert d.on == ["layer", "pos", "head"] and d.summary["matched"] == len(before.frame)
    merged = before.frame.merge(after.frame, on=d.on)
    want = (merged["value_y"] - merged["value_x"]).abs().max()
    assert d.summary["max_abs_diff"]["value"] == pytest.approx(want) and want > 0
    assert not d.equal and ("engine" in set(d.meta["field"]) or "clean_value" in set(d.meta["field"]))
    assert d.figure() is not None
    # a head-score map on two models: matched on (layer, head, kind), B - A per head
    a = runs.run(heads.scores, induction_model, heads.default_tokens(induction_model, n=2, length=32))
    b = runs.run(heads.scores, recall_model, heads.default_tokens(recall_model, n=2, length=32))
    d = runs.diff(a, b)
    assert d.on == ["layer", "head", "kind"]
    row = d.frame.set_index(d.on).loc[(1, 2, "induction")]
    ia = a.frame.set_index(d.on).loc[(1, 2, "induction"), "score"]
    ib = b.frame.set_index(d.on).loc[(1, 2, "induction"), "score"]
    assert row["score_diff"] == pytest.approx(ib - ia)
    fields = set(d.provenance["field"])
    assert {"model.name", "model.sha256"} <= fields
    assert runs.diff(a, a).equal


# --- the faces ----------------------------------------------------------------------------


def test_a_run_saved_from_the_cli_reloads_equal_with_complete_provenance(induction_model, store):
    out = CliRunner().invoke(
        cli,
        ["patch", "induction-2l", "--clean", "t1 t2 t3 t4 t5 t1 t2 t3 t4", "--corrupt", "t1 t2 t3 t4 t5 t1 t2 t3 t9"]
        + ["--save"],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    rid = re.search(r"saved run (\S+)", out.output).group(1)
    saved = runs.load(rid)
    # the same analysis from Python, on the metric the CLI resolved (recorded in the provenance)
    clean = induction_model.to_tokens("t1 t2 t3 t4 t5 t1 t2 t3 t4")
    corrupt = induction_model.to_tokens("t1 t2 t3 t4 t5 t1 t2 t3 t9")
    metric_args = saved.provenance.arguments["metric"]
    assert metric_args["kind"] == "logit_diff"
    answer, wrong = (int(induction_model(t)[0, -1].argmax()) for t in (clean, corrupt))
    from circuits.metrics import default_metric

    metric = default_metric("logit_diff", induction_model(clean), induction_model(corrupt), pos=-1)
    assert metric.answer.flatten().tolist() == [answer] and metric.wrong.flatten().tolist() == [wrong]
    here = runs.run(patching.patch, induction_model, clean, corrupt, site="z", by="layer,pos,head", metric=metric)
    pd.testing.assert_frame_equal(saved.frame, here.frame)
    assert saved.meta == here.meta
    complete(saved.provenance, induction_model)
    assert runs.list()["saved_from"].tolist() == ["cli"]
    # the faces of the store
    shown = CliRunner().invoke(cli, ["runs", "show", rid])
    assert shown.exit_code == 0 and f"run {rid}: patching" in shown.output
    assert f"meta clean_value: {saved.meta['clean_value']!r}" in shown.output
    listed = CliRunner().invoke(cli, ["runs", "list", "--analysis", "patching"])
    assert rid in listed.output
    assert CliRunner().invoke(cli, ["runs", "diff", rid, rid]).output.count("equal frames") == 1
    assert CliRunner().invoke(cli, ["runs", "rm", rid]).exit_code == 0 and runs.list().empty


def test_a_run_saved_from_the_app_reloads_equal_with_complete_provenance(induction_model, store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/heads.py").run()
    assert not at.exception and not at.error
    at.button(key="save_heads_scores").click().run()
    assert not at.exception and not at.error
    rid = re.search(r"run `([^`]+)`", at.success[0].value).group(1)
    saved = runs.load(rid)
    # the page's probe settings: 16 sequences of 64 tokens, seed 0 (zoo model)
    n, length, seed = (at.number_input(key=k).value for k in ("heads_n", "heads_len", "heads_seed"))
    frame = heads.scores(induction_model, heads.default_tokens(induction_model, n=n, length=length, seed=seed))
    pd.testing.assert_frame_equal(saved.frame, frame)
    complete(saved.provenance, induction_model)
    assert saved.figure.function == "interp.plots.heads.head_heatmap" and saved.figure.kwargs["kinds"]
    assert saved.draw().data  # the figure the page drew, redrawn
    assert at.button(key="save_heads_scores").disabled  # saved once, not twice
    assert runs.list()["saved_from"].tolist() == ["app"]
    # the Runs page lists it, reopens it with its figure and compares it with a second run
    at.number_input(key="heads_seed").set_value(seed + 1).run()
    at.button(key="save_heads_scores").click().run()
    at.switch_page("views/runs.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Runs" and len(at.dataframe[0].value) == 2
    assert len(at.get("plotly_chart")) == 4  # the open run, A, B and B - A
    matched, equal, largest = (m.value for m in at.metric[:3])
    assert matched == f"{len(frame)} / {len(frame)}" and equal == "differ" and float(largest) > 0
    at.multiselect(key="runs_analyses").select("head_scores").run()
    assert not at.exception and len(at.dataframe[0].value) == 2


# --- atomicity and concurrency ------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import pandas as pd
    import interp.runs as runs

    who, n = sys.argv[1], int(sys.argv[2])

    def make(who, i):
        return pd.DataFrame({"who": [who] * 3, "i": [i] * 3, "x": [i + 0.5, i + 1.5, i + 2.5]})

    print("ready", flush=True)
    sys.stdin.readline()  # both writers start together
    for i in range(n):
        runs.save(runs.run(make, who, i))
    """
)


def test_two_processes_saving_50_runs_each_leave_100_readable_runs(store):
    env = {**os.environ, "INTERP_RUNS": str(store), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, who, "50"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    listed = runs.list(status="all")
    assert len(listed) == 100 and set(listed["status"]) == {"ok"}
    seen = set()
    for rid in listed["id"]:
        f = runs.load(rid).frame
        who, i = f["who"].iloc[0], int(f["i"].iloc[0])
        assert f["x"].tolist() == [i + 0.5, i + 1.5, i + 2.5]
        seen.add((who, i))
    assert seen == {(w, i) for w in "ab" for i in range(50)}
    assert not any((store / "tmp").iterdir())


DYING = textwrap.dedent(
    """
    import json, os, signal
    import pandas as pd
    import interp.runs as runs
    from interp.runs import store

    def dying(path, doc):  # the frame is on disk and half of run.json: then the process is killed
        with open(path, "w") as f:
            f.write(json.dumps(doc)[:40])
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    store.write_json = dying
    runs.save(runs.run(lambda: pd.DataFrame({"layer": [0, 1], "value": [1.0, 2.0]})))
    """
)


def test_a_run_killed_mid_save_leaves_a_failed_row_and_no_partial_file(store):
    ok = runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [3.0]})))
    env = {**os.environ, "INTERP_RUNS": str(store), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DYING], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert any((store / "tmp").iterdir())  # the killed save's temporary folder (never in data/)
    listed = runs.list(status="all")  # the next access notices the dead writer
    failed = listed[listed["status"] == "failed"]
    assert len(listed) == 2 and len(failed) == 1 and "ended before the run was written" in failed["error"].iloc[0]
    assert [p.name for p in (store / "data").iterdir()] == [ok]
    assert not any((store / "tmp").iterdir())
    with pytest.raises(InputError, match="failed to save"):
        runs.load(failed["id"].iloc[0])
    assert runs.load(ok).frame["value"].tolist() == [3.0]
    assert runs.rm(failed["id"].iloc[0]) and len(runs.list(status="all")) == 1


def test_a_crash_between_writing_and_renaming_leaves_a_failed_row(store, monkeypatch):
    def crash(src, dst):
        raise KeyboardInterrupt  # the user pressing ctrl-c at the worst moment

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(S.os, "rename", crash)
        runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))
    listed = runs.list(status="all")
    assert listed["status"].tolist() == ["failed"]
    assert not any((store / "data").iterdir()) and not any((store / "tmp").iterdir())


# --- bad input ----------------------------------------------------------------------------


def one_line_cli_error(args: list[str], match: str) -> None:
    """The command fails with exit code 2 and one ``error:`` line (after whatever it printed
    before the failure), no traceback."""
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and out.output.rstrip().endswith(errors[0]) and re.search(match, errors[0]), out.output
    assert "Traceback" not in out.output


def test_a_full_disk_during_a_save_writes_nothing_and_says_so_in_one_line(store, monkeypatch):
    import errno

    def full(path, doc):  # the frame is written; the disk fills while run.json is
        path.write_text(json.dumps(doc)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(S, "write_json", full)
        with pytest.raises(SetupError, match="is full; nothing was written") as e:
            runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))
        assert "\n" not in str(e.value)
        one_line_cli_error(["heads", "induction-2l", "--sequences", "2", "--save"], "disk holding .* is full")
    listed = runs.list(status="all")
    assert listed["status"].tolist() == ["failed", "failed"] and "disk is full" in listed["error"].iloc[0]
    assert not any((store / "data").iterdir()) and not any((store / "tmp").iterdir())


def test_unknown_ids_list_the_closest(store):
    rid = runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))
    typo = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    with pytest.raises(InputError, match=f"no run '{typo}'.*closest: {rid}"):
        runs.load(typo)
    with pytest.raises(InputError, match="not a run id"):
        runs.load("../../etc/passwd")
    one_line_cli_error(["runs", "show", typo], f"closest: {rid}")
    with pytest.raises(InputError, match="status must be"):
        runs.list(status="done")
    with pytest.raises(InputError, match="since must be a date"):
        runs.list(since="yesterday")


def test_a_corrupt_parquet_or_run_file_is_reported_in_one_line(store):
    a = runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))
    b = runs.save(runs.run(lambda: pd.DataFrame({"layer": [1], "value": [2.0]})))
    (store / "data" / a / "frame.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=f"run {a}: its frame .* is unreadable .*`interp runs rm {a}`"):
        runs.load(a)
    one_line_cli_error(["runs", "show", a], "is unreadable")
    (store / "data" / b / "run.json").write_text('{"format": "interp.runs", "ver')
    with pytest.raises(InputError, match=f"run {b}: .*run.json is unreadable"):
        runs.load(b)
    assert len(runs.list()) == 2  # the catalog still lists both, and rm clears them
    runs.rm(a)
    runs.rm(b)
    assert runs.list().empty


def test_a_corrupt_catalog_is_set_aside_and_rebuilt_from_the_run_files(store):
    r = runs.run(lambda: pd.DataFrame({"layer": [0, 1], "value": [1.0, 2.0]}))
    rid = runs.save(r, label="kept")
    (store / "catalog.duckdb").write_bytes(b"\x00garbage" * 4096)
    (store / "catalog.duckdb.wal").unlink(missing_ok=True)
    with pytest.warns(runs.RunStoreWarning, match="could not be read.*rebuilt it from the run files"):
        listed = runs.list()
    assert listed["id"].tolist() == [rid] and listed["label"].tolist() == ["kept"]
    assert len(list((store / "corrupt").iterdir())) == 1
    pd.testing.assert_frame_equal(runs.load(rid).frame, r.frame)


def test_a_store_from_a_newer_version_says_why_it_cannot_be_read(store):
    rid = runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))
    con = duckdb.connect(str(store / "catalog.duckdb"))
    con.execute("UPDATE store_info SET value = '99' WHERE key = 'version'")
    con.execute("UPDATE store_info SET value = 'interp 9.0.0' WHERE key = 'written_by'")
    con.close()
    with pytest.raises(SetupError, match=r"newer interp \(store format 99, interp 9.0.0\).*upgrade interp"):
        runs.list()
    one_line_cli_error(["runs", "list"], "newer interp")
    # a run file of a newer version, read without the catalog
    doc = store / "data" / rid / "run.json"
    doc.write_text(json.dumps({**json.loads(doc.read_text()), "version": 7}))
    with pytest.raises(SetupError, match="run format 7.*reads formats up to 1"):
        runs.load(rid)


def test_a_store_from_an_older_version_is_migrated(store, monkeypatch):
    rid = runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))  # format 1
    calls = []

    def one_to_two(con, st) -> None:
        calls.append(st.path)
        con.execute("ALTER TABLE runs ADD COLUMN note VARCHAR")

    monkeypatch.setattr(S, "VERSION", 2)
    monkeypatch.setattr(S, "MIGRATIONS", {1: one_to_two})
    assert runs.list()["id"].tolist() == [rid] and runs.load(rid).frame["value"].tolist() == [1.0]
    runs.list()
    assert calls == [store]  # migrated once
    con = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    assert con.execute("SELECT value FROM store_info WHERE key = 'version'").fetchone() == ("2",)
    assert "note" in [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
    con.close()


def test_a_tampered_figure_spec_cannot_run_arbitrary_code(store):
    rid = runs.save(runs.run(lambda: pd.DataFrame({"layer": [0], "value": [1.0]})))
    doc = store / "data" / rid / "run.json"
    doc.write_text(json.dumps({**json.loads(doc.read_text()), "figure": {"function": "os.system", "kwargs": {}}}))
    with pytest.raises(InputError, match="'os.system' is not a plot function"):
        runs.load(rid)
    with pytest.raises(InputError, match="without provenance|has no provenance"):
        runs.save(runs.Result(pd.DataFrame({"a": [1]})))
    with pytest.raises(InputError, match="string column names"):
        runs.save(runs.run(lambda: pd.DataFrame({0: [1.0]})))


def test_no_analysis_depends_on_dataframe_attrs():
    """The issue's done-when: nothing in the library, the faces, the notebooks, the benchmarks or
    the tests reads or writes ``DataFrame.attrs`` (interp.runs alone mirrors meta there for code
    written before it, and moves an undecorated function's attrs into meta)."""
    pattern = re.compile(r"\." + "attrs" + r"\b")
    hits = []
    for folder in ("interp", "circuits", "apps", "notebooks", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.parent.name == "runs" and path.parent.parent.name == "interp":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and path.name != "test_runs.py":
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == [], "\n".join(hits)
    # and the Result of every decorated analysis carries nothing there
    r = runs.run(heads.scores, interp.load("induction-2l"), heads.default_tokens(interp.load("induction-2l"), n=1))
    assert r.frame.attrs == {}


def test_a_model_folder_is_hashed_by_its_files(hf_dirs, store):
    from interp.runs.provenance import file_sha256
    from interp.zoo.real import sha256_file

    model = interp.load(hf_dirs["gpt2"])
    r = runs.run(heads.scores, model, torch.randint(2, 100, (1, 12)), ["previous_token"])
    weights = r.provenance.model["weights"]
    assert r.provenance.model["hash_of"] == "files" and list(weights) == ["model.safetensors"]
    assert weights["model.safetensors"] == sha256_file(hf_dirs["gpt2"] / "model.safetensors")
    assert file_sha256(hf_dirs["gpt2"] / "model.safetensors") == weights["model.safetensors"]  # cached


def test_prompts_are_kept_as_ids_up_to_a_bound_then_by_hash():
    from interp.runs.provenance import MAX_IDS, Provenance, tensor_sha256

    def analysis(tokens, prompts, seed=3):
        return None

    small, big = torch.arange(12).reshape(2, 6), torch.zeros(MAX_IDS // 100 + 1, 100, dtype=torch.long)
    p = Provenance.capture(analysis, (small, ["a b", "c"]))
    assert p.prompts[0]["ids"] == small.tolist() and p.prompts[1]["text"] == ["a b", "c"] and p.seeds["seed"] == 3
    p = Provenance.capture(analysis, (big, "x"))
    assert "ids" not in p.prompts[0] and p.prompts[0]["sha256"] == tensor_sha256(big)
    assert p.prompts[0]["n_tokens"] == big.numel() and p.arguments["tokens"]["tensor"] == list(big.shape)


# every analysis page's "Save this run": (page, buttons pressed first, save buttons, analyses saved)
PAGES = [
    ("model", ["model_support"], ["model_support"], ["interp.capabilities.support"]),
    ("attention", [], ["attention"], ["attention"]),
    ("heads", ["heads_go", "sink_go"], ["heads_ablation", "heads_sinks"], ["ablation", "sink_share"]),
    ("patching", [], ["patching"], ["patching"]),
    ("circuit", ["circ_mib"], ["circuit", "circuit_mib"], ["edge_attribution", "mib"]),
    ("steering", ["steer_sweep"], ["steering_generations", "steering_sweep"], ["generations", "steering_sweep"]),
    ("lens", [], ["lens", "lens_dla"], ["logit_lens", "dla"]),
]


@pytest.mark.parametrize("page, first, buttons, analyses", PAGES, ids=[p[0] for p in PAGES])
def test_every_analysis_page_saves_what_it_shows(page, first, buttons, analyses, store):
    from streamlit.testing.v1 import AppTest

    source = "steer-2l" if page == "steering" else "induction-2l"  # a model with contrast pairs
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = source
    at.switch_page(f"views/{page}.py").run()
    for key in first:
        at.button(key=key).click().run()
    for key in buttons:
        at.button(key=f"save_{key}").click().run()
        assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    listed = runs.list()
    assert sorted(listed["analysis"]) == sorted(analyses) and set(listed["saved_from"]) == {"app"}
    for rid in listed["id"]:
        r = runs.load(rid)
        assert len(r.frame) and r.provenance.model["name"] == source and not r.provenance.missing()
        if r.figure is not None:
            assert r.draw().data  # the figure the page showed, redrawn from the store
