"""The walkthrough notebook runs top to bottom on the real subset, and is stored without outputs."""

import os

import nbformat
import pytest

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks",
                        "walkthrough.ipynb")


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(not c.outputs and c.execution_count is None for c in code), "run nbstripout before committing"


def test_notebook_executes_without_error(data_dir, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("NSYNTH_DATA_DIR", os.path.abspath(data_dir))
    monkeypatch.setenv("NSYNTH_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "1")  # one line per epoch instead of progress bars
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"notebook cell failed:\n{str(err)[-3000:]}")
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert images >= 6  # mels, learning curves, confusion, tuning, kernels, top activations
    for name in ("mels_by_family.png", "walkthrough-baseline/kernels.png",
                 "walkthrough-baseline/top_activations.png", "walkthrough-baseline/model_waveform.tflite"):
        assert os.path.exists(tmp_path / name), name
