"""The exported model in a real browser: the demo page (MediaPipe Tasks for Web) in headless Chromium.

Needs the browser extra (Debian chromium, npm ci --prefix web, Playwright for Python); .ci/run installs it,
and these tests skip, saying what is missing, where it is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from nsynth_keras import tflite_check, web
from nsynth_keras.core.config import FAMILIES
from nsynth_keras.core.errors import RunError
from nsynth_keras.deploy.tflite import export_run
from nsynth_keras.deploy.webpage import (
    MEDIAPIPE_JS,
    WEB_DIR,
    check_page_files,
    chromium_path,
    headless_page,
    serve,
    wait_until_ready,
    waveform_model,
)


def missing_extra() -> str | None:
    try:
        chromium_path()
    except RunError as err:
        return str(err)
    if not os.path.isdir(os.path.join(WEB_DIR, MEDIAPIPE_JS)):
        return "web/node_modules is missing: npm ci --prefix web"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright is missing: pip install --no-deps -r requirements-web.txt"
    return None


if missing_extra() and os.environ.get("NSYNTH_REQUIRE_BROWSER"):  # CI installs the extra: never skip there
    raise RuntimeError(f"NSYNTH_REQUIRE_BROWSER is set but the browser extra is missing: {missing_extra()}")
browser = pytest.mark.skipif(missing_extra() is not None, reason=f"browser extra not installed: {missing_extra()}")


@pytest.fixture(scope="module")
def waveform_run(trained_run, tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("web") / "run")
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.tflite", "saved_model"))
    export_run(run, variants=("waveform",), log=lambda *a: None)
    return run


@browser
def test_the_page_agrees_with_keras_on_every_real_test_note(waveform_run, data_dir, capsys):
    assert tflite_check.main([waveform_run, "--data-dir", data_dir, "--split", "test", "--browser"]) == 0
    out = capsys.readouterr().out
    rows = {r["model"]: r for r in json.load(open(os.path.join(waveform_run, "tflite_check_test.json")))}
    page, windows = rows["model_waveform.tflite [browser]"], rows["model_waveform.tflite [browser windows]"]
    assert page["agreement"] == 1.0 and page["max_abs_diff"] < 1e-3 and page["passed"]
    assert page["accuracy"] == rows["model_waveform.tflite"]["accuracy"]
    # one note per family back to back: each 4 s window names its own note's family as Keras does
    assert windows["windows"] >= 10 and windows["agreement"] == 1.0
    assert "the page loaded the model" in out


@browser
def test_a_dropped_note_is_named_and_a_screenshot_shows_it(waveform_run, real_wav, tmp_path):
    shot = tmp_path / "page.png"
    with serve(waveform_model(waveform_run)) as url, headless_page(url) as page:
        ready = wait_until_ready(page)
        assert ready["labels"][0] == "bass" and len(ready["labels"]) == 11
        assert "version 0.1.0" in page.text_content("#model")
        assert page.text_content("#families") == ", ".join(FAMILIES).replace("_", " ")  # the model's labels
        page.set_input_files("#files", real_wav)
        page.wait_for_selector(".item .guess")
        card = page.text_content(".item")
        assert os.path.basename(real_wav) in card and "%" in card
        assert page.query_selector_all(".item .guess").__len__() == 3
        page.screenshot(path=str(shot), full_page=True)
        assert page.errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@browser
def test_a_file_that_is_not_audio_and_a_corrupt_model_show_the_pages_error(waveform_run, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples")
    with serve(waveform_model(waveform_run)) as url, headless_page(url) as page:
        wait_until_ready(page)
        page.set_input_files("#files", str(text))
        page.wait_for_selector(".item .error")
        assert "not an audio file this browser can decode" in page.text_content(".item .error")
    corrupt = tmp_path / "model_waveform.tflite"
    corrupt.write_bytes(open(waveform_model(waveform_run), "rb").read()[:5000])
    with serve(str(corrupt)) as url, headless_page(url) as page:
        with pytest.raises(RunError, match="the page could not load the model"):
            wait_until_ready(page)
        assert "cannot be used" in page.text_content("#model")
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(b"\0" * 64)
    with serve(str(bare)) as url, headless_page(url) as page:
        with pytest.raises(RunError, match="no TFLite Metadata"):
            wait_until_ready(page)


@browser
def test_the_web_command_serves_the_page_with_the_right_types(waveform_run):
    proc = subprocess.Popen([sys.executable, "-m", "nsynth_keras.web", waveform_run, "--port", "0"],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(WEB_DIR))
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        types = {}
        for path in ("", "app.mjs", "model/info.json", "model/model_waveform.tflite",
                     "node_modules/@mediapipe/tasks-audio/wasm/audio_wasm_internal.wasm"):
            with urllib.request.urlopen(url + path) as r:
                types[path] = r.headers["Content-Type"]
                body = r.read()
            if path == "model/info.json":
                assert json.loads(body)["labels"][9] == "synth_lead"
        assert types["app.mjs"] == "text/javascript" and types["model/info.json"] == "application/json"
        assert types["node_modules/@mediapipe/tasks-audio/wasm/audio_wasm_internal.wasm"] == "application/wasm"
        assert types[""].startswith("text/html")
    finally:
        proc.kill()
        proc.wait()


def test_the_web_command_says_what_is_missing(trained_run, tmp_path, capsys):
    run = tmp_path / "run"  # a copy without .tflite files (other tests export into trained_run)
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.tflite", "saved_model"))
    assert web.main([str(run)]) == 2
    assert "no model_waveform.tflite; run python -m nsynth_keras.export" in capsys.readouterr().err
    page = tmp_path / "web"
    page.mkdir()
    (page / "index.html").write_text("<html></html>")
    with pytest.raises(RunError, match="npm ci --prefix web"):
        check_page_files(str(page))


def test_model_info_reports_a_model_without_metadata(tmp_path):
    from nsynth_keras.deploy.webpage import model_info

    path = tmp_path / "bare.tflite"
    path.write_bytes(np.zeros(64, np.uint8).tobytes())
    assert "no TFLite Metadata" in model_info(str(path))["error"]


def tone(path, seconds: float, rate: int = 16_000, channels: int = 1, **kwargs) -> str:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * 220 * t) * np.exp(-t)
    sf.write(str(path), np.stack([wave] * channels, 1) if channels > 1 else wave, rate, **kwargs)
    return str(path)


@browser
def test_files_keep_their_order_with_progress_a_summary_and_a_csv(waveform_run, real_wav, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    files = [tone(tmp_path / "long.wav", 12.0), real_wav, str(empty),
             tone(tmp_path / "stereo.flac", 2.0, rate=44_100, channels=2, format="FLAC")]
    with serve(waveform_model(waveform_run)) as url, headless_page(url) as page:
        wait_until_ready(page)
        assert "trained on single isolated notes" in page.text_content("#model")
        page.set_input_files("#files", files)
        page.wait_for_function("document.getElementById('status').textContent.includes('classified')")
        titles = [h.text_content() for h in page.query_selector_all("#results .item h2")]
        assert titles == [os.path.basename(f) for f in files]  # the order chosen
        cards = [c.text_content() for c in page.query_selector_all("#results .item")]
        assert "12 s long" in cards[0] and "probably not one note" in cards[0]
        assert "Careful" not in cards[1] or "a guess" in cards[1]  # a real note: at most a low-confidence note
        assert "empty file (0 bytes)" in cards[2]
        assert "resampled from 44.1 kHz" in cards[3] and "2 channels mixed to mono" in cards[3]
        assert len(page.query_selector_all("#results .item audio")) == 3  # every readable file can be played
        assert "4 files classified" in page.text_content("#status") and "1 could not be read" in page.text_content(
            "#status")
        summary = page.query_selector_all("#summary tbody tr")
        assert [r.query_selector_all("td")[1].text_content() for r in summary] == titles
        csv_lines = page.evaluate("window.nsynth.csvText()").strip().splitlines()
        assert csv_lines[0].startswith("file,family_1,probability_1") and len(csv_lines) == 5
        assert csv_lines[3].endswith("empty file (0 bytes)")
        labels = json.loads(page.evaluate("JSON.stringify(window.nsynth.rows().map(r => r.family))"))
        assert labels[2] is None and all(f in page.evaluate("window.nsynth.ready.then(r => r.labels)")
                                         for f in labels if f)
        with page.expect_download() as download:
            page.click("#csv")
        assert open(download.value.path(), encoding="utf-8").read().strip().splitlines() == csv_lines
        page.click("#clear")
        assert page.query_selector_all("#results .item") == [] and page.is_hidden("#summary-box")
        assert page.errors == []


@browser
def test_controls_stay_disabled_until_the_model_is_ready(waveform_run, tmp_path):
    html = open(os.path.join(WEB_DIR, "index.html"), encoding="utf-8").read()
    assert 'id="files" type="file"' in html and "hidden disabled" in html  # disabled as the page loads
    corrupt = tmp_path / "model_waveform.tflite"
    corrupt.write_bytes(open(waveform_model(waveform_run), "rb").read()[:5000])
    with serve(str(corrupt)) as url, headless_page(url) as page:
        with pytest.raises(RunError):
            wait_until_ready(page)
        assert page.is_disabled("#files") and "disabled" in page.get_attribute("#choose", "class")
        assert page.is_disabled("#mic")
    with serve(waveform_model(waveform_run)) as url, headless_page(url) as page:
        wait_until_ready(page)
        assert page.is_enabled("#files") and "disabled" not in page.get_attribute("#choose", "class")


@browser
def test_the_microphone_shows_a_level_a_countdown_and_a_family_every_window(waveform_run):
    from nsynth_keras.deploy.webpage import FAKE_MICROPHONE

    with serve(waveform_model(waveform_run)) as url, headless_page(url, extra_args=FAKE_MICROPHONE) as page:
        wait_until_ready(page)
        page.click("#mic")
        page.wait_for_function("document.getElementById('countdown').textContent.startsWith('next family in')")
        page.wait_for_function("parseFloat(document.getElementById('level').style.width) > 0")
        page.wait_for_selector("#results .item .guess", timeout=15_000)
        assert page.text_content("#results .item h2").startswith("Microphone, 0-4 s")
        page.click("#mic")
        page.wait_for_selector("#mic-live", state="hidden")
        assert page.errors == []


@browser
def test_a_denied_or_missing_microphone_says_what_to_do(waveform_run):
    # A capture device but no permission (headless dismisses the prompt), then no device at all.
    for args, expected in ((("--use-fake-device-for-media-stream",), "permission denied. Allow the microphone"),
                           ((), "no microphone was found: plug one in")):
        with serve(waveform_model(waveform_run)) as url, headless_page(url, extra_args=args) as page:
            wait_until_ready(page)
            page.click("#mic")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Microphone:')")
            assert expected in page.text_content("#status")
            assert page.is_hidden("#mic-live")
