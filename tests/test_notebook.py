"""The walkthrough notebook runs top to bottom on the real subset, shows the homework code in the open,
and is stored without outputs."""

import os

import nbformat
import pytest

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks",
                        "walkthrough.ipynb")


def code_of(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(not c.outputs and c.execution_count is None for c in code), "run nbstripout before committing"


def test_notebook_shows_the_homework_steps_inline():
    """A student sees and can change the pipeline, the model, compile and fit: no argv calls to commands."""
    source = code_of(nbformat.read(NOTEBOOK, as_version=4))
    for step in ("make_dataset(", ".map(to_example", ".cache()", ".shuffle(", ".batch(BATCH_SIZE)", ".prefetch(",
                 "keras.Sequential([", "layers.Conv2D(16, 3", "layers.MaxPooling2D(2)", "model.compile(",
                 "optimizer=keras.optimizers.Adam", "model.fit(", "make_augment(", "extra_train=", "read_wav(MY_WAV)"):
        assert step in source, step
    for hidden in (".main([", "train.main", "tune.main"):
        assert hidden not in source, hidden


def test_notebook_executes_without_error(data_dir, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("NSYNTH_DATA_DIR", os.path.abspath(data_dir))
    monkeypatch.setenv("NSYNTH_RUNS_DIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"notebook cell failed:\n{str(err)[-3000:]}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = sum(1 for o in outputs if "image/png" in o.get("data", {}))
    assert images >= 9  # mels, curves, confusion, augmentations, rendered vs real, two confusions, tuning, kernels, ...
    text = "".join(o.get("text", "") for o in outputs)
    assert "This notebook ran in" in text and "homework CNN + rendered notes" in text
    assert "shuffle=True` was passed" not in text  # no misleading warnings
    assert "\u2501" not in text and "\r" not in text  # no progress bars (one line per epoch instead)
    assert os.path.exists(tmp_path / "walkthrough-baseline" / "model_waveform.tflite")
    assert not os.path.exists(tmp_path / "mels_by_family.png")  # plots stay in the notebook
