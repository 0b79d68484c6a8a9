"""The notebooks execute top to bottom (nbclient) and match their builder, notebooks/build.py.

The kernel is this interpreter: a kernelspec pointing to ``sys.executable`` is written to a
temporary ``JUPYTER_PATH`` entry, so a fresh clone needs no ``ipykernel install`` and a
``python3`` kernel installed elsewhere on the machine cannot be picked by mistake.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "notebooks"
KERNEL = "interp-test"


def builder():
    spec = importlib.util.spec_from_file_location("notebook_builder", FOLDER / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = sorted(builder().NOTEBOOKS)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "interp (test)", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + ([old] if old else []))
    # the kernel runs in the repository root; PYTHONPATH covers an un-installed checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]]
                                                               if os.environ.get("PYTHONPATH") else []))
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def test_notebooks_match_their_builder(tmp_path):
    written = builder().write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in FOLDER.glob("*.ipynb"))
    for path in written:
        assert path.read_text() == (FOLDER / path.name).read_text(), \
            f"{path.name} is stale: run `python notebooks/build.py`"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, kernel):
    from nbclient import NotebookClient

    nb = nbformat.read(FOLDER / name, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=False,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # every notebook shows at least one plotly figure
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for c in code for o in c.get("outputs", []))
