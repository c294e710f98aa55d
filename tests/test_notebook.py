"""The quickstart notebook runs, offline, as a researcher would open it (outputs are not stored)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_quickstart_notebook_runs(tmp_path: Path) -> None:
    path = Path(__file__).parents[1] / "demos" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # none stored
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "steps: base, worlds" in text and "|S_k|/k" in text and "records what it was made from" in text
    assert any(verdict in text for verdict in ("agrees", "does not agree", "not measurable"))
    assert "refused:" in text and "is stale" in text
