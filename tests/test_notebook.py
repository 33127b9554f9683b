"""The walkthrough notebook runs top to bottom on the real subset, shows the homework code in the open,
and is stored without outputs."""

import os
import re

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


def run_notebook(data_dir: str, runs_dir, monkeypatch, model_cell: str | None = None,
                 parameters: str | None = None) -> nbformat.NotebookNode:
    """Execute the notebook; ``model_cell``: a student's own make_model() in place of the homework's;
    ``parameters``: the source of the parameters cell (as papermill would inject it)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("NSYNTH_DATA_DIR", os.path.abspath(data_dir))
    monkeypatch.setenv("NSYNTH_RUNS_DIR", str(runs_dir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    if parameters is not None:
        cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Parameters"))
        cell.source = "# Parameters\n" + parameters
    if model_cell is not None:
        cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def make_model():"))
        cell.source = model_cell + cell.source[cell.source.index("\n\n\nmodel = make_model()"):]
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"notebook cell failed:\n{str(err)[-3000:]}")
    return nb


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def check_stated_numbers(nb, data_dir: str) -> None:
    """Every number the notebook states about its data or results comes from the run: the markdown states
    none (no counts of notes or instruments, no accuracies), and the printed counts match the data folder."""
    from nsynth_keras.data.notes import read_examples

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            # (figures of the whole NSynth release, like "305,000 notes", are facts, not results of this run)
            assert not re.search(r"(?<![\d,])\d+ (notes|instruments)\b|\b0\.\d\d", cell.source), cell.source[:200]
    text = printed(nb)
    test = read_examples(data_dir, "test")
    valid = read_examples(data_dir, "valid")
    train = read_examples(data_dir, "train")
    assert f"Test split: {len(test)} notes of {len(set(test.instrument))} instruments never heard" in text
    assert f"({len(valid)} notes)" in text
    control = int(re.search(r"(\d+) held out as the control", text).group(1))
    assert f"{len(train) - control} training notes, {control} held out" in text
    assert f"control: {control} held-out notes of training instruments" in text


def check_every_section_ran(nb, data_dir: str, runs_dir) -> str:
    """What any run of the notebook must show, whatever its data and length; returns the printed text."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = sum(1 for o in outputs if "image/png" in o.get("data", {}))
    assert images >= 9  # mels, curves, confusion, augmentations, rendered vs real, two confusions, tuning, kernels, ...
    text = printed(nb)
    assert "This notebook ran in" in text and "homework CNN + rendered notes" in text
    assert "shuffle=True` was passed" not in text  # no misleading warnings
    assert "\u2501" not in text and "\r" not in text  # no progress bars (one line per epoch instead)
    assert os.path.exists(runs_dir / "walkthrough-student" / "model_waveform.tflite")  # the student model, exported
    assert not os.path.exists(runs_dir / "mels_by_family.png")  # plots stay in the notebook
    check_stated_numbers(nb, data_dir)
    # The frontend and the metrics in the open, compared with the package's (printed, not asserted, in the notebook)
    gap = float(re.search(r"largest difference from the package's log_mel on the \d+ notes above: (\S+)", text)[1])
    assert gap < 1e-5
    assert "agree: accuracy True, confusion counts True, recall of each family True" in text
    # The batch-normalisation cell ran both momenta through the health check
    assert re.search(r"momentum 0\.99, \d+ steps: valid \S+ in inference", text)
    assert re.search(r"momentum 0\.9, \d+ steps: valid \S+ in inference", text)
    return text


@pytest.mark.slow
def test_notebook_runs_every_cell_on_a_small_sample(small_nsynth, tmp_path, monkeypatch):
    """Every code path of the walkthrough, on a few real notes per family, 2 epochs and a coarse render."""
    nb = run_notebook(small_nsynth, tmp_path, monkeypatch,
                      parameters="FAST = True\nEPOCHS = 2\nRENDER_PITCH_STEP = 24")
    text = check_every_section_ran(nb, small_nsynth, tmp_path)
    assert "| epochs: 2" in text and "2 epochs each" in text


@pytest.mark.slow
def test_notebook_as_shipped_on_the_shared_subset(data_dir, tmp_path, monkeypatch):
    """The FAST walkthrough as a student runs it: its exports agree with Keras, and after its few steps the
    default BatchNormalization momentum fails the health check where 0.9 passes."""
    nb = run_notebook(data_dir, tmp_path, monkeypatch)
    text = check_every_section_ran(nb, data_dir, tmp_path)
    assert "every model agrees with Keras within its threshold" in text
    assert re.search(r"momentum 0\.99, \d+ steps: .* NOT HEALTHY: .*BatchNormalization is not ready", text)
    assert re.search(r"momentum 0\.9, \d+ steps: .*: healthy", text)


# A student's edit that breaks inference: BatchNormalization after every Conv2D (default momentum) and a stride-2
# conv in place of the last pooling. After a FAST run's few steps its moving averages have not caught up.
BATCHNORM_MODEL = '''def make_model():
    model = keras.Sequential([keras.Input(shape=config.INPUT_SHAPE)])
    for filters in (16, 32, 64, 128):
        model.add(layers.Conv2D(filters, 3, padding="same", strides=2 if filters == 128 else 1))
        model.add(layers.BatchNormalization())
        model.add(layers.ReLU())
        if filters != 128:
            model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten())
    model.add(layers.Dense(config.NUM_CLASSES, activation="softmax"))
    return model'''


@pytest.mark.slow
def test_notebook_with_a_batchnorm_edit_names_the_failure_and_draws_no_lesson(data_dir, tmp_path, monkeypatch):
    nb = run_notebook(data_dir, tmp_path, monkeypatch, model_cell=BATCHNORM_MODEL)
    text = printed(nb)
    assert "Health check: NOT HEALTHY" in text and "BatchNormalization is not ready for inference" in text
    assert "not learning anything that carries over" in text  # the curves are not read as over-fitting
    assert "(a gain;" not in text and "(a loss;" not in text and "within the noise" not in text  # no lessons
    assert "your CNN + rendered notes" in text and "homework CNN" not in text
    assert "This notebook ran in" in text
    check_stated_numbers(nb, data_dir)


@pytest.mark.slow
def test_notebook_on_the_no_nsynth_path_has_no_leakage_and_says_what_it_ran_on(tmp_path, monkeypatch):
    """The README's no-NSynth path: instrument-disjoint splits rendered from the shipped SoundFont. The
    notebook's rendered-notes section must leave out the valid/test programs (the extra-data check refuses any
    overlap, so this run failing would mean leakage), and its text must describe this data, not the subset."""
    from nsynth_keras.sounds.rendering import RenderConfig, render

    data = tmp_path / "sf-nsynth"
    for split, programs in NO_NSYNTH_SPLITS.items():
        render(RenderConfig(str(data), split=split, programs=programs, pitch_step=6, velocities=(100,)),
               log=lambda *a: None, show_progress=False)
    nb = run_notebook(str(data), tmp_path / "runs", monkeypatch)
    text = printed(nb)
    from nsynth_keras.data.notes import read_examples

    held = {i for split in ("valid", "test") for i in read_examples(str(data), split).instrument}
    assert f"programs rendered ({len(held)} left out: their instruments are in valid or test)" in text
    assert "This notebook ran in" in text
    check_stated_numbers(nb, str(data))


# The README's no-NSynth splits: General MIDI programs, disjoint between train, valid and test.
NO_NSYNTH_SPLITS = {
    "train": (0, 1, 2, 3, 4, 5, 8, 9, 11, 12, 16, 17, 18, 24, 25, 26, 27, 28, 32, 33, 34, 35, 36, 37, 40, 41, 42, 43,
              44, 45, 48, 49, 52, 56, 57, 58, 59, 60, 61, 64, 65, 66, 67, 68, 69, 72, 73, 74, 75, 76, 77, 80, 81, 82,
              83, 84, 85),
    "valid": (6, 13, 19, 29, 38, 50, 53, 62, 70, 78, 86),
    "test": (7, 14, 20, 30, 39, 51, 54, 63, 71, 79, 87),
}
