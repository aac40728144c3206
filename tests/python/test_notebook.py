"""The example notebook runs top to bottom, headless, in a real IPython kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "examples" / "notebook.ipynb"


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for data in out.get("data", {}).values():
                parts.append(data if isinstance(data, str) else "")
    return "\n".join(parts)


def test_example_notebook_runs_headless(kgenv_home: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits KGENV_HOME from the test; the notebook keeps it.
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == [], errors
    text = outputs_text(nb)
    # Each stage showed what it should: HTML plan, live progress, the GPU, the tunnel URL.
    assert "plan for kaggle-gpu: 13 to create" in text
    assert "<table>" in text and "<code>instance</code>" in text
    assert "kgenv up kaggle-gpu" in text, "the live progress display rendered"
    assert "✓ instance: nothing to do" in text, "on_event output from the async run is shown"
    assert "Tesla T4" in text
    assert "hello from the container" in text, "exec in the container"
    assert "train.csv" in text, "data list"
    assert "stop kaggle-gpu: stopped, disks kept" in text, "stop"
    assert "open https://127.0.0.1:" in text
    assert "no GPUs left in us-central1-a" in text
    assert "instances left: []" in text
    assert (kgenv_home / "state").exists() or (kgenv_home / "config").exists(), "the kernel used the test's KGENV_HOME"
