"""The demo server (python -m nsynth_keras.web) as a hostile client sees it: only its routes, resolved files
inside their roots, loopback Host names, HEAD, security headers, timeouts and a deep queue. No browser needed:
a stand-in page folder and model file."""

from __future__ import annotations

import http.client
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nsynth_keras import web
from nsynth_keras.deploy.tflite import write_tflite
from nsynth_keras.deploy.webpage import MEDIAPIPE_JS, REQUEST_TIMEOUT_S, serve
from nsynth_keras.models.cnn import build_baseline


@pytest.fixture
def page(tmp_path) -> tuple[str, str]:
    """(web folder, model file): the page's files, the package's files, a dotfile, a .d.ts and a link out."""
    web_dir = tmp_path / "web"
    package = web_dir / MEDIAPIPE_JS
    (package / "wasm").mkdir(parents=True)
    (web_dir / "index.html").write_text("<html>page</html>")
    (web_dir / "app.mjs").write_text("export {};")
    (web_dir / "style.css").write_text("body {}")
    (web_dir / "package.json").write_text("{}")
    (package / "audio_bundle.mjs").write_text("export {};")
    (package / "audio.d.ts").write_text("declare const x: number;")
    (package / "wasm" / "audio_wasm_internal.wasm").write_bytes(b"\0asm")
    (web_dir / "node_modules" / ".package-lock.json").write_text("{}")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (web_dir / "leak.css").symlink_to(secret)
    (package / "wasm" / "leak.wasm").symlink_to(secret)
    (package / "outside").symlink_to(tmp_path)
    model = tmp_path / "model_waveform.tflite"
    model.write_bytes(b"TFL3 model bytes")
    return str(web_dir), str(model)


def request(url: str, path: str, method: str = "GET", host: str | None = None) -> tuple[int, dict, bytes]:
    address = url.split("//")[1].rstrip("/")
    conn = http.client.HTTPConnection(address, timeout=10)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host if host is not None else address)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_only_the_pages_routes_are_served_with_their_types_and_security_headers(page):
    web_dir, model = page
    with serve(model, web_dir=web_dir) as url:
        status, headers, body = request(url, "/")
        assert (status, body) == (200, b"<html>page</html>") and headers["content-type"] == "text/html"
        assert headers["x-content-type-options"] == "nosniff"
        assert request(url, "/app.mjs")[1]["content-type"] == "text/javascript"
        wasm = request(url, "/node_modules/@mediapipe/tasks-audio/wasm/audio_wasm_internal.wasm")
        assert wasm[0] == 200 and wasm[1]["content-type"] == "application/wasm"
        status, headers, body = request(url, "/model/model_waveform.tflite")
        assert (status, body) == (200, b"TFL3 model bytes") and headers["cache-control"] == "no-store"
        assert request(url, "/model/info.json")[0] == 200
        for path in ("/node_modules/", "/node_modules/@mediapipe/tasks-audio/", "/node_modules/.package-lock.json",
                     "/node_modules/@mediapipe/tasks-audio/audio.d.ts", "/package.json", "/leak.css",
                     "/node_modules/@mediapipe/tasks-audio/wasm/leak.wasm",
                     "/node_modules/@mediapipe/tasks-audio/outside/secret.txt",
                     "/node_modules/@mediapipe/tasks-audio/../../../secret.txt", "/%2e%2e/secret.txt", "/web/",
                     "/model/", "/check/anything"):
            status, _, body = request(url, path)
            assert status == 404, path
            assert b"private" not in body


def test_head_answers_like_get_without_a_body(page):
    web_dir, model = page
    with serve(model, web_dir=web_dir) as url:
        for path in ("/model/model_waveform.tflite", "/model/info.json", "/"):
            got, head = request(url, path), request(url, path, "HEAD")
            assert head[0] == got[0] == 200 and head[2] == b""
            assert head[1]["content-length"] == str(len(got[2]))


def test_a_foreign_host_name_is_refused_and_loopback_names_are_served(page):
    web_dir, model = page
    with serve(model, web_dir=web_dir) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        assert request(url, "/model/info.json", host=f"evil.example:{port}")[0] == 421
        assert request(url, "/", host="127.0.0.1")[0] == 421  # without the port: not the page's own origin
        assert request(url, "/", host="")[0] == 421
        for name in ("127.0.0.1", "localhost", "[::1]", "LOCALHOST"):
            assert request(url, "/", host=f"{name}:{port}")[0] == 200


def test_a_null_byte_is_a_400_and_the_server_stays_up(page):
    web_dir, model = page
    with serve(model, web_dir=web_dir) as url:
        assert request(url, "/%00/etc/passwd")[0] == 400
        assert request(url, "/")[0] == 200


def test_half_sent_requests_are_dropped_and_many_clients_are_all_answered(page):
    web_dir, model = page
    with serve(model, web_dir=web_dir) as url:
        host, port = url.split("//")[1].rstrip("/").split(":")
        stalled = []
        for _ in range(40):  # each holds a worker thread until its timeout; the others still answer
            s = socket.create_connection((host, int(port)))
            s.sendall(b"GET / HTTP/1.1\r\nHost: ")
            stalled.append(s)
        t0 = time.time()
        with ThreadPoolExecutor(64) as pool:  # answered while the stalled connections are held
            statuses = list(pool.map(lambda i: request(url, ["/", "/app.mjs", "/model/info.json"][i % 3])[0],
                                     range(300)))
        assert statuses.count(200) == 300
        for s in stalled:
            s.settimeout(REQUEST_TIMEOUT_S + 20)
            assert s.recv(100) == b""  # closed by the server, not held forever
            s.close()
        assert time.time() - t0 < REQUEST_TIMEOUT_S + 15


def test_the_web_command_refuses_a_log_mel_model(tmp_path, capsys):
    path = str(tmp_path / "model.tflite")
    write_tflite(build_baseline(), "fp32", path)
    assert web.main([path]) == 2
    err = capsys.readouterr().err
    assert "takes log-mels, not audio" in err and "nsynth_keras.export" in err
    assert os.path.isfile(path)
