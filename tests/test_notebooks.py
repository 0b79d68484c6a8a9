"""The notebooks (plain Python percent-format sources, ``notebooks/*.py``) build with jupytext
and execute top to bottom (nbclient); their findings are checked by the other tests.

The kernel is this interpreter: a kernelspec pointing to ``sys.executable`` is written to a
temporary ``JUPYTER_PATH`` entry, so a fresh clone needs no ``ipykernel install`` and a
``python3`` kernel installed elsewhere on the machine cannot be picked by mistake.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "notebooks"
KERNEL = "interp-test"
NAMES = sorted(p.name for p in FOLDER.glob("[0-9][0-9]_*.py"))
# minutes-long notebooks run after make test in .ci/run: every published finding (marker reproduce)
# and the real-model heads and steering tours (marker slow; what they show is checked in make test
# by test_heads_real.py and test_steering_real.py)
LONG = {"05_real_model_heads.py": "slow", "06_real_model_steering.py": "slow", "07_reproduce.py": "reproduce"}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "interp (test)",
                "language": "python",
            }
        )
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + ([old] if old else []))
    # the kernel runs in the repository root; PYTHONPATH covers an un-installed checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def test_notebooks_are_percent_sources_without_checks():
    assert len(NAMES) >= 4
    for name in NAMES:
        text = (FOLDER / name).read_text()
        nb = jupytext.reads(text, fmt="py:percent")
        assert [c.cell_type for c in nb.cells][0] == "markdown", name
        assert "assert " not in text, f"{name}: checks belong in the tests, not the notebook"


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[getattr(pytest.mark, LONG[n]), pytest.mark.real]) if n in LONG else n for n in NAMES],
)
def test_notebook_executes(name, kernel, tmp_path):
    from nbclient import NotebookClient

    nb = jupytext.read(FOLDER / name, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "interp (test)", "language": "python"}
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=900 if name in LONG else 300,  # seconds per cell: a cell of 07 runs several findings
        allow_errors=False,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    jupytext.write(nb, tmp_path / name.replace(".py", ".ipynb"))  # what `make notebooks` writes
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # every notebook shows at least one plotly figure
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for c in code for o in c.get("outputs", []))
