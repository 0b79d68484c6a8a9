"""The README as a new user runs it.

- Every ``python`` block is executed as written, in order, in one namespace; a ``print(...)``
  whose line ends in a comment claims what it prints, and the comment must equal the printed
  text.
- Every command of every ``bash`` block runs as written (exit code 0, no traceback, no
  ``Warning`` line), in a fresh folder, with the project's ``interp`` on the PATH.
- ``make app`` serves the app (the server answers its health check); ``make test`` is the
  command that runs this suite, and ``.ci/run`` runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import free_port, stop, streamlit_healthy, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLAIM = re.compile(r"^print\((?P<expr>.*)\)\s+#\s(?P<claim>.+)$")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    """The shell commands of the README's bash blocks, continuation lines joined."""
    out = []
    for block in blocks("bash"):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def claims(block: str) -> dict[int, str]:
    """Line number (1-based) -> the text a ``print(...)  # text`` line claims to print."""
    return {i: m["claim"].strip() for i, line in enumerate(block.splitlines(), 1) if (m := CLAIM.match(line))}


@pytest.mark.real
def test_python_blocks_run_as_written_and_print_what_they_claim(tmp_path, monkeypatch, smollm2):
    found = blocks("python")
    assert len(found) >= 3
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    checked = 0
    for i, block in enumerate(found, 1):
        name = f"README.md python block {i}"
        printed: dict[int, list[str]] = {}

        def record(*args, sep=" ", end="\n", file=None, flush=False, _name=name, _printed=printed):
            frame = sys._getframe(1)
            text = sep.join(map(str, args))
            if frame.f_code.co_filename == _name:
                _printed.setdefault(frame.f_lineno, []).append(text)
            print(text, end=end, file=file, flush=flush)

        scope["print"] = record
        try:
            exec(compile(block, name, "exec"), scope)
        except Exception as e:  # report which block, as written
            raise AssertionError(f"{name} failed: {type(e).__name__}: {e}\n{block}") from e
        for line, claim in claims(block).items():
            assert printed.get(line) == [claim], f"{name}, line {line}: claims {claim!r}, printed {printed.get(line)}"
            checked += 1
    assert checked >= 2  # the README's printed claims are checked, not only run


#: commands that train (a real-model dictionary: minutes; the zoo's checkpoints) or trace run in the
#: slow stage (.ci/run), those that place a model (devices, dtypes, disk offload) or start a Ray
#: cluster in the scale stage, the rest in make test
SLOW = ("interp sae", "interp train", "interp trace", "interp reproduce olsson2022_phase")
SCALE = ("--ray", "--offload-folder", "--device", "--dtype")
SHELL = [
    pytest.param(
        c,
        id=c[:70],
        marks=[pytest.mark.slow]
        if c.startswith(SLOW)
        else [pytest.mark.scale]
        if any(flag in c for flag in SCALE)
        else [],
    )
    for c in commands()
    if not c.startswith("make ")
]


@pytest.mark.real
@pytest.mark.parametrize("command", SHELL)
def test_shell_commands_run_as_written(command, tmp_path, smollm2):
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTHONWARNINGS", None)
    res = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = res.stdout + res.stderr
    assert res.returncode == 0, f"{command}\nexit {res.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    warnings = [line for line in output.splitlines() if "Warning" in line]
    assert not warnings, warnings


def test_the_readme_names_two_set_up_commands_and_ci_runs_the_tests():
    setup = [c for c in commands() if c.startswith("make ")]
    assert setup == ["make app", "make test"], setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M), "`.ci/run` must run the README's test command"


def test_make_app_serves_the_app(tmp_path):
    """``make app`` as written (on a free port: the only change), until the server answers."""
    port = free_port()
    log = tmp_path / "make_app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "app", f"PORT={port}"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def up():
            if proc.poll() is not None:
                raise AssertionError(f"make app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            return streamlit_healthy(port)

        wait_for(up, 120, "the app started by `make app`")
    finally:
        stop(proc)
