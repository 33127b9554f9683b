"""The demo page (web/) served with a run's waveform model on 127.0.0.1, and a headless Chromium that
drives it: what `python -m nsynth_keras.web` and `tflite_check --browser` share.

The page needs, beside web/: node_modules/@mediapipe/tasks-audio (npm ci --prefix web), the run's
model_waveform.tflite (python -m nsynth_keras.export) and model/info.json (name, version and labels read
from the model's TFLite Metadata). Headless checks also need Debian's chromium and Playwright for Python.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator

from nsynth_keras.errors import RunError
from nsynth_keras.runs import RunFolder
from nsynth_keras.tflite import read_labels, read_metadata

WEB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
MEDIAPIPE_JS = os.path.join("node_modules", "@mediapipe", "tasks-audio")
WAVEFORM = RunFolder.tflite_file("waveform")
SETUP = ("the browser parts are an extra: apt-get install chromium; npm ci --prefix web; "
         "pip install --no-deps -r requirements-web.txt")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required"]
MIME = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json",
        ".tflite": "application/octet-stream", ".css": "text/css", ".html": "text/html"}


def model_info(path: str) -> dict:
    """What the page shows about the model, from its TFLite Metadata; {"error": ...} when it has none."""
    try:
        md = read_metadata(path)
        return {"name": md.get("name"), "version": md.get("version"), "labels": read_labels(path)}
    except (RunError, KeyError, OSError) as err:
        return {"error": str(err)}


def check_page_files(web_dir: str = WEB_DIR) -> None:
    if not os.path.isfile(os.path.join(web_dir, "index.html")):
        raise RunError(f"{web_dir}: the demo page (index.html) is missing")
    if not os.path.isdir(os.path.join(web_dir, MEDIAPIPE_JS, "wasm")):
        raise RunError(f"{os.path.join(web_dir, 'node_modules')} has no @mediapipe/tasks-audio: run "
                       "npm ci --prefix web (it installs the pinned MediaPipe Tasks for Web and its wasm files)")


class Handler(http.server.SimpleHTTPRequestHandler):
    """web/ as it is; model/ from the run (or the files given); check/ from memory (the browser check)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}

    def __init__(self, *args, model: str, memory: dict[str, bytes], quiet: bool, **kwargs):
        self.model, self.memory, self.quiet = model, memory, quiet
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == f"/model/{WAVEFORM}":
            return self.send_bytes(open(self.model, "rb").read(), MIME[".tflite"])
        if path == "/model/info.json":
            return self.send_bytes(json.dumps(model_info(self.model)).encode(), MIME[".json"])
        if path.startswith("/check/") and path[len("/check/"):] in self.memory:
            return self.send_bytes(self.memory[path[len("/check/"):]], "application/octet-stream")
        return super().do_GET()

    def send_bytes(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if not self.quiet:
            super().log_message(format, *args)


def waveform_model(run: str) -> str:
    """The run's model_waveform.tflite, or a .tflite file given directly."""
    path = run if run.endswith(".tflite") else os.path.join(run, WAVEFORM)
    if not os.path.isfile(path):
        raise RunError(f"{run}: no {WAVEFORM}; run python -m nsynth_keras.export {run} first (the browser runs the "
                       "model with the log-mel frontend inside)")
    return path


@contextlib.contextmanager
def serve(model: str, port: int = 0, memory: dict[str, bytes] | None = None, quiet: bool = True,
          web_dir: str = WEB_DIR) -> Iterator[str]:
    """Serve the page and a waveform model on 127.0.0.1 (port 0: any free port) in a thread; yield the URL."""
    check_page_files(web_dir)
    handler = functools.partial(Handler, model=model, memory=memory or {}, quiet=quiet, directory=web_dir)
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise RunError(f"cannot serve on 127.0.0.1:{port} ({err.strerror})") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def chromium_path() -> str:
    path = os.environ.get("NSYNTH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RunError(f"no Chromium found (set NSYNTH_CHROMIUM or install it): {SETUP}")
    return path


@contextlib.contextmanager
def headless_page(url: str, timeout_s: float = 60) -> Iterator:
    """A Playwright page of the system Chromium (headless, no network but loopback) open at url."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RunError(f"Playwright for Python is not installed: {SETUP}") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            page.errors = errors
            yield page
        finally:
            browser.close()


def wait_until_ready(page) -> dict:
    """The model loaded in the page: {loadMs, labels}; RunError with the page's own message if it failed."""
    try:
        return page.evaluate("window.nsynth.ready")
    except Exception as err:  # the page's promise rejected: its message says why
        shown = page.text_content("#model") or ""
        raise RunError(f"the page could not load the model: {shown or str(err).splitlines()[0]}") from None
