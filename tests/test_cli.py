"""The `interp` command line: every command has --help, good input works, bad input gives a
one-line error and exit code 2 (no traceback)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from apps.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_everywhere():
    top = invoke("--help")
    assert top.exit_code == 0
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"zoo", "train", "info", "app"} <= set(commands)
    for name in commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Usage" in result.output


def test_zoo_lists_models():
    result = invoke("zoo")
    assert result.exit_code == 0
    assert "induction-2l" in result.output and "repeat_loss" in result.output


def test_info_shows_geometry_and_sites():
    result = invoke("info", "induction-2l")
    assert result.exit_code == 0
    assert "n_heads: 4" in result.output
    assert "blocks.1.attn.hook_pattern" in result.output
    one = invoke("info", "induction-2l", "--layer", "1", "--grep", "pattern")
    listed = [line.split()[0] for line in one.output.split("sites:")[1].strip().splitlines()[1:]]
    assert one.exit_code == 0 and listed == ["blocks.1.attn.hook_pattern"], one.output


def test_train_writes_checkpoint(tmp_path):
    result = invoke("train", "steer-2l", "--steps", "3", "--out", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.safetensors").is_file() and (tmp_path / "s.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (("info", "no-such-model"), "error:"),
        (("train", "no-such-recipe"), "available"),
        (("app", "--port", "80"), "port"),
    ],
)
def test_bad_input_is_a_clear_error(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
