"""Every published finding run in full on smollm2-135m, in one process on one model load, through
the command line's ``interp reproduce all --json`` (the face a user runs): each entry's verdict is
the one measured when the entry was written (see the README's table), with its interval and counts.

Marked ``reproduce`` (about 11 minutes on 2 CPU cores, once the text is cached): ``make test`` leaves it out and ``.ci/run``
runs it after ``make test``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from apps.cli import app
from interp import reproduce

pytestmark = [pytest.mark.reproduce, pytest.mark.real]

#: the verdict of each finding on smollm2-135m (full protocols)
EXPECTED = {
    "olsson2022": "partial",
    "wu2024": "partial",
    "xiao2023": "partial",
    "wang2022": "partial",
    "todd2023": "reproduced",
    "michel2019": "partial",
    "sun2024": "reproduced",
    "mcgrath2023": "partial",
    "zhang2023": "reproduced",
    "wendler2024": "not applicable",
    # these evaluate shipped models of their own whatever the given model (Finding.retrainable)
    "arora2023": "partial",
    "liu2023": "reproduced",
    "olsson2022_phase": "reproduced",
    "karpathy2015": "partial",
    "meng2022": "reproduced",
    "sharma2024": "reproduced",
}


@pytest.fixture(scope="module")
def summaries(tmp_path_factory, smollm2) -> dict:
    out = tmp_path_factory.mktemp("reproduce") / "all.json"
    result = CliRunner().invoke(app, ["reproduce", "all", "--model", "smollm2-135m", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return {s["id"]: s for s in json.loads(out.read_text())}


@pytest.mark.parametrize("fid", sorted(EXPECTED))
def test_verdict_on_smollm2(summaries, fid):
    s = summaries[fid]
    # a finding about models trained for it (Finding.retrainable) names them; the others measure smollm2 itself
    assert s["given_model"] == "smollm2-135m" and not s["quick"]
    assert (s["model"] != "smollm2-135m") == reproduce.get(fid).retrainable, s["model"]
    assert s["verdict"] == EXPECTED[fid], s["reason"]
    assert s["counts"] and s["reason"]
    if s["ours"] is not None:
        assert s["ci_low"] <= s["ci_high"] and s["n"] >= 2
    print(f"{fid}: {s['verdict']}, ours {s['ours']} [{s['ci_low']}, {s['ci_high']}] n={s['n']}, {s['seconds']} s")
