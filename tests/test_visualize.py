import os

import numpy as np

from nsynth_keras import visualize
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import Filters
from nsynth_keras.reports import plots


def test_top_activating_picks_the_notes_with_the_highest_peaks():
    act = np.zeros((6, 2, 2, 3), np.float32)
    act[4, 0, 0, 1] = 9.0  # note 4 excites channel 1 most, then note 2
    act[2, 1, 1, 1] = 5.0
    chosen = plots.top_activating([act], channels_per_block=1, top_n=2)
    assert chosen == [(1, 1, [4, 2])]


def test_visualize_cli_writes_the_three_pngs(trained_run, data_dir, tmp_path):
    assert visualize.main([trained_run, "--data-dir", data_dir, "--max-examples", "30", "--out", str(tmp_path)]) == 0
    for name in ("kernels.png", "top_activations.png", "mels_by_family.png"):
        assert os.path.getsize(tmp_path / name) > 10_000


def test_one_note_per_family_covers_every_family_present(data_dir):
    notes = plots.one_note_per_family(DataSpec(data_dir=data_dir, filters=Filters(max_examples=80)), "valid")
    families = [n["family"] for n in notes]
    assert len(families) == len(set(families)) >= 8 and "synth_lead" not in families
    assert all(n["mel"].shape == (64, 64) and n["audio"].shape == (64000,) for n in notes)


def test_visualize_feeds_a_run_its_own_frontend_and_refuses_an_ensemble(trained_run, data_dir, tmp_path, monkeypatch,
                                                                        capsys):
    from nsynth_keras.models.ensemble import write_ensemble
    from nsynth_keras.models.runs import run_frontend

    seen = []
    real_load_split = plots.load_split

    def load_split(*args, **kwargs):
        seen.append(kwargs.get("frontend"))
        return real_load_split(*args, **kwargs)

    monkeypatch.setattr(plots, "load_split", load_split)
    assert visualize.main([trained_run, "--data-dir", data_dir, "--max-examples", "20", "--out", str(tmp_path)]) == 0
    assert seen == [run_frontend(trained_run)[0]]
    ensemble = write_ensemble([trained_run, trained_run], str(tmp_path / "both"), log=lambda *a: None)
    assert visualize.main([ensemble, "--data-dir", data_dir, "--max-examples", "20"]) == 2
    assert "visualize each member's run" in capsys.readouterr().err
