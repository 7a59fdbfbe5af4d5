"""Every notebook: committed without outputs, exactly one `parameters` cell, and runs under papermill."""
import json

import nbformat
import pytest

from rnas_lib.runs import notebooks, run_notebook

NOTEBOOKS = notebooks()


def test_the_workbook_has_its_notebooks():
    names = {p.stem[:2] for p in NOTEBOOKS}
    assert {"00", "01", "02", "05", "06"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    assert tagged[0]["cell_type"] == "code"
    assert "tier" in "".join(tagged[0]["source"]), f"{path.name}: the parameters cell sets no tier"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name}: strip its outputs"


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_under_papermill(path, tmp_path):
    out = run_notebook(path, "smoke", output=tmp_path / path.name)
    executed = nbformat.read(out, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "tier = \"smoke\"" in injected[0].source
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
