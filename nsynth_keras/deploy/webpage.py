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
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from nsynth_keras.core.errors import RunError
from nsynth_keras.core.files import REPO_DIR
from nsynth_keras.deploy.tflite import read_labels, read_metadata
from nsynth_keras.models.runs import RunFolder

WEB_DIR = os.path.join(REPO_DIR, "web")
MEDIAPIPE_JS = os.path.join("node_modules", "@mediapipe", "tasks-audio")
WAVEFORM = RunFolder.tflite_file("waveform")
SETUP = ("the browser parts are an extra: apt-get install chromium; npm ci --prefix web; "
         "pip install --no-deps -r requirements-web.txt")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required"]
# Chromium's fake capture device (a beep) with the permission granted: the microphone mode in tests.
FAKE_MICROPHONE = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
MIME = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json",
        ".tflite": "application/octet-stream", ".css": "text/css", ".html": "text/html", ".png": "image/png",
        ".map": "application/json"}
PAGE_FILES = ("index.html", "app.mjs", "style.css")  # web/'s own files; "/" is index.html
# The server answers only these routes, each mapped to a resolved file: no listing, no dotfile, no link out.
MODEL_ROUTE, INFO_ROUTE, CHECK_ROUTE = f"/model/{WAVEFORM}", "/model/info.json", "/check/"
PACKAGE_ROUTE = "/" + MEDIAPIPE_JS.replace(os.sep, "/") + "/"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Resource-Policy": "same-origin"}
REQUEST_TIMEOUT_S = 10  # a half-sent request is dropped after this
WORKERS = 64  # connections served at once (a stalled one holds its thread up to REQUEST_TIMEOUT_S); the rest queue
BACKLOG = 1024  # connections the kernel queues before the server accepts them (capped by net.core.somaxconn)


def model_info(path: str) -> dict:
    """What the page shows about the model: name, version, labels and input (sample rate, clip length) from its
    TFLite Metadata, and its scores from the run folder it sits in; {"error": ...} without metadata."""
    try:
        md = read_metadata(path)
        info = {"name": md.get("name"), "version": md.get("version"), "labels": read_labels(path)}
        audio = md["subgraph_metadata"][0]["input_tensor_metadata"][0].get("content", {})
        rate = audio.get("content_properties", {}).get("sample_rate")
        if rate:
            from ai_edge_litert.interpreter import Interpreter

            samples = int(Interpreter(model_path=path).get_input_details()[0]["shape"][-1])
            info.update(sample_rate=int(rate), clip_seconds=samples / int(rate))
    except (RunError, KeyError, IndexError, OSError, ValueError) as err:
        return {"error": str(err)}
    return {**info, **run_scores(os.path.dirname(os.path.abspath(path)))}


def run_scores(folder: str) -> dict:
    """A run's test accuracy (and novel accuracy, and the confidence floor, where an evaluation recorded them)."""
    run = RunFolder(folder)
    evaluated = [run.file("evaluation.json"), run.eval_json("test")]
    for path in evaluated:
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    r = json.load(f)
                r = r.get("test", r)
                scores = {"test_accuracy": r["accuracy"]}
                if r.get("novel", {}).get("num_notes"):
                    scores["test_novel_accuracy"] = r["novel"]["accuracy"]
                return {"scores": scores, "confidence_floor": r.get("confidence_floor")}
            except (OSError, ValueError, KeyError, AttributeError):
                continue
    try:
        with open(run.config, encoding="utf-8") as f:
            return {"scores": {"test_accuracy": json.load(f)["scores"]["test"]["accuracy"]}}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def check_page_files(web_dir: str = WEB_DIR) -> None:
    if not os.path.isfile(os.path.join(web_dir, "index.html")):
        raise RunError(f"{web_dir}: the demo page (index.html) is missing")
    if not os.path.isdir(os.path.join(web_dir, MEDIAPIPE_JS, "wasm")):
        raise RunError(f"{os.path.join(web_dir, 'node_modules')} has no @mediapipe/tasks-audio: run "
                       "npm ci --prefix web (it installs the pinned MediaPipe Tasks for Web and its wasm files)")


def inside(root: str, relative: str) -> str | None:
    """The file ``relative`` names under ``root``, resolved (links followed), if it is a regular file that
    stays inside root, has no hidden part and is of a type the page uses; None otherwise."""
    parts = relative.split("/")
    if any(not p or p.startswith(".") for p in parts) or os.path.splitext(relative)[1] not in MIME:
        return None
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, path]) != real_root or not os.path.isfile(path):
        return None
    return path


class Handler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD on a few routes: web/'s page files, the MediaPipe package's files, model/ from the run
    (or the file given), check/ from memory (the browser check). Everything else is 404."""

    server_version = "nsynth-keras"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S

    def __init__(self, *args, model: str, info: bytes, memory: dict[str, bytes], quiet: bool, web_dir: str,
                 port: list[int], **kwargs):
        self.model, self.info, self.memory, self.quiet = model, info, memory, quiet
        self.web_dir, self.port = web_dir, port
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.answer(body=True)

    def do_HEAD(self):  # noqa: N802
        self.answer(body=False)

    def answer(self, body: bool) -> None:
        if not self.host_allowed():
            return self.refuse(421, "Misdirected Request: this server answers only 127.0.0.1, localhost and [::1]")
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if "\0" in path or "\\" in path:
            return self.refuse(400, "Bad Request")
        found = self.route(path)
        if found is None:
            return self.refuse(404, "Not Found")
        data, content_type = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store" if path.startswith(("/model/", CHECK_ROUTE)) else "no-cache")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def route(self, path: str) -> tuple[bytes, str] | None:
        """(body, content type) for a path the page uses, or None."""
        if path == MODEL_ROUTE:
            return read_file(self.model), MIME[".tflite"]
        if path == INFO_ROUTE:
            return self.info, MIME[".json"]
        if path.startswith(CHECK_ROUTE):
            data = self.memory.get(path[len(CHECK_ROUTE):])
            return None if data is None else (data, "application/octet-stream")
        if path.startswith(PACKAGE_ROUTE):
            file = inside(os.path.join(self.web_dir, MEDIAPIPE_JS), path[len(PACKAGE_ROUTE):])
        else:
            name = path.lstrip("/") or "index.html"
            file = inside(self.web_dir, name) if name in PAGE_FILES else None
        return None if file is None else (read_file(file), MIME[os.path.splitext(file)[1]])

    def host_allowed(self) -> bool:
        """Only loopback names with our port: a page on another site cannot reach this server through DNS
        rebinding (its requests carry that site's name as Host)."""
        host = self.headers.get("Host")
        return host is not None and host.lower() in {f"{h}:{self.port[0]}" for h in LOOPBACK}

    def refuse(self, code: int, text: str) -> None:
        data = f"{code} {text}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if not self.quiet:
            super().log_message(format, *args)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class PooledHTTPServer(http.server.HTTPServer):
    """An HTTP server that answers on a bounded pool of threads, with a deep listen queue."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def __init__(self, *args, workers: int = WORKERS, **kwargs):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="web")
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        self.pool.submit(self._answer, request, client_address)

    def _answer(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001  one broken connection never stops the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # a client that hung up or timed out: nothing to report

    def server_close(self):
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def waveform_model(run: str) -> str:
    """The run's model_waveform.tflite, or a .tflite file given directly; refused unless it takes a 4 s waveform
    (the page has no log-mel frontend of its own)."""
    path = run if run.endswith(".tflite") else os.path.join(run, WAVEFORM)
    if not os.path.isfile(path):
        raise RunError(f"{run}: no {WAVEFORM}; run python -m nsynth_keras.export {run} first (the browser runs the "
                       "model with the log-mel frontend inside)")
    from nsynth_keras.deploy.inference import TFLiteClassifier  # loads LiteRT: only when a model is checked

    if not TFLiteClassifier(path).takes_waveform:
        folder = os.path.dirname(os.path.abspath(path))
        raise RunError(f"{path} takes log-mels, not audio: the page needs the waveform model; run python -m "
                       f"nsynth_keras.export {folder} and serve its {WAVEFORM}")
    return path


@contextlib.contextmanager
def serve(model: str, port: int = 0, memory: dict[str, bytes] | None = None, quiet: bool = True,
          web_dir: str = WEB_DIR) -> Iterator[str]:
    """Serve the page and a waveform model on 127.0.0.1 (port 0: any free port) in a thread; yield the URL."""
    check_page_files(web_dir)
    bound: list[int] = [port]  # the handler's Host check needs the port actually bound
    # The model's info is read once (metadata, a LiteRT interpreter for the input length, the run's scores), not
    # on every request.
    info = json.dumps(model_info(model)).encode()
    memory = {} if memory is None else memory  # the caller's own dict: it may add files while the page runs
    handler = functools.partial(Handler, model=model, info=info, memory=memory, quiet=quiet, web_dir=web_dir,
                                port=bound)
    try:
        server = PooledHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise RunError(f"cannot serve on 127.0.0.1:{port} ({err.strerror})") from None
    bound[0] = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{bound[0]}/"
    finally:
        server.shutdown()
        server.server_close()


def chromium_path() -> str:
    path = os.environ.get("NSYNTH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RunError(f"no Chromium found (set NSYNTH_CHROMIUM or install it): {SETUP}")
    return path


@contextlib.contextmanager
def headless_page(url: str, timeout_s: float = 60, extra_args: tuple[str, ...] = ()) -> Iterator:
    """A Playwright page of the system Chromium (headless, no network but loopback) open at url; ``extra_args``
    (e.g. FAKE_MICROPHONE) are added to its command line."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RunError(f"Playwright for Python is not installed: {SETUP}") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=[*CHROMIUM_FLAGS, *extra_args])
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
