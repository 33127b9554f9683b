import json
import os

import numpy as np
import pytest

from nsynth_keras import train
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import Filters
from nsynth_keras.data.pipeline import split_features
from nsynth_keras.models.runs import load_keras

RUN_FILES = {"model.keras", "saved_model", "model.tflite", "labels.txt", "history.json", "config.json",
             "learning_curves.png", "logs"}


def test_train_cli_writes_a_complete_run_folder(trained_run):
    assert RUN_FILES <= set(os.listdir(trained_run))
    assert not [n for n in os.listdir(os.path.dirname(trained_run)) if n.startswith(".")]  # nothing partial left
    cfg = json.load(open(os.path.join(trained_run, "config.json")))
    assert cfg["settings"]["epochs"] == 3 and cfg["settings"]["seed"] == 1
    assert cfg["versions"]["tensorflow"] and cfg["versions"]["tensorflow-io"]
    assert cfg["model"]["params"] == 119691
    assert set(cfg["scores"]) == {"train", "valid", "test"}
    history = json.load(open(os.path.join(trained_run, "history.json")))
    assert history["epoch"] == [0, 1, 2]
    # A short real training run lowers the loss.
    assert history["loss"][-1] < history["loss"][0]


def test_exported_tflite_matches_keras_on_real_notes(trained_run, data_dir):
    from ai_edge_litert.interpreter import Interpreter

    model = load_keras(os.path.join(trained_run, "model.keras"))
    ds, _ = split_features(DataSpec(data_dir=data_dir, filters=Filters(max_examples=12)), "test", 12)
    x = next(iter(ds))[0].numpy()
    interpreter = Interpreter(model_path=os.path.join(trained_run, "model.tflite"))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), model(x).numpy(), atol=1e-4)


def test_savedmodel_serves_the_same_probabilities(trained_run, data_dir):
    import tensorflow as tf

    model = load_keras(os.path.join(trained_run, "model.keras"))
    served = tf.saved_model.load(os.path.join(trained_run, "saved_model"))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(served.serve(x).numpy(), model(x).numpy(), atol=1e-5)
    assert "serving_default" in served.signatures


def test_existing_run_is_not_overwritten(trained_run, data_dir, capsys):
    out, name = os.path.split(trained_run)
    rc = train.main(["--data-dir", data_dir, "--max-examples", "20", "--epochs", "1", "--out", out, "--run-name", name])
    assert rc == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_bad_flags_give_clear_errors(tmp_path, capsys):
    assert train.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--model", "resnet"])


def test_auto_precision_follows_the_hardware(trained_run):
    from nsynth_keras.learn.training import resolve_precision

    assert resolve_precision("auto", flags={"avx2", "avx512f", "fma"}, gpus=0)[0] == "float32"
    assert resolve_precision("auto", flags={"avx512f", "avx512_bf16"}, gpus=0)[0] == "mixed_bfloat16"
    assert resolve_precision("auto", flags={"amx_bf16", "amx_tile"}, gpus=0)[0] == "mixed_bfloat16"
    assert resolve_precision("auto", flags={"avx512_bf16"}, gpus=1) == ("mixed_float16", "auto: 1 GPU(s) visible")
    assert resolve_precision("off") == ("float32", "--mixed-precision off")
    cfg = json.load(open(os.path.join(trained_run, "config.json")))
    assert cfg["precision_policy"] == "float32" and cfg["precision_reason"] == "--mixed-precision off"


def test_select_on_novel_chooses_the_best_epoch_on_the_valid_notes_without_a_twin(data_dir, tmp_path):
    from nsynth_keras.data.twins import audit_split, novel_notes
    from nsynth_keras.learn.training import TrainConfig
    from nsynth_keras.learn.training import train as train_run

    spec = DataSpec(data_dir=data_dir, filters=Filters(max_examples=60))
    novel = novel_notes(spec, "valid")
    audit = audit_split(spec, "valid")
    assert novel == {n for n, t in zip(audit.notes, audit.twin) if not t} and 0 < len(novel) < len(audit.notes)
    run = train_run(TrainConfig(epochs=1, select_on="novel", out=str(tmp_path), run_name="n", tflite=False,
                                mixed_precision="off"), spec, log=lambda *a: None, verbose=0)
    record = json.load(open(os.path.join(run, "config.json")))
    assert record["notes"]["selection"] == len(novel) < record["notes"]["valid"]
    assert record["settings"]["select_on"] == "novel"
