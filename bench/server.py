"""The demo server under load: concurrent mixed requests on 127.0.0.1, with stalled connections beside them.

    python bench/server.py              # 1,000 concurrent mixed requests, 200 concurrent GET /, then 200 mixed
                                        # requests beside 100 stalled connections (more than the 64 workers)
    python bench/server.py --quick      # 100 / 50 / 50 beside 70 stalled (the smoke test)

The server is `nsynth_keras.deploy.webpage.serve` (what `python -m nsynth_keras.web` runs) over the real page folder
(web/, after `npm ci --prefix web`) and a stand-in model file of a waveform model's size. Every request is one
connection opened at the same moment (a barrier), with a 60 s client timeout. Writes results/server.json.
Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nsynth_keras.core.files import write_json  # noqa: E402
from nsynth_keras.deploy.webpage import BACKLOG, REQUEST_TIMEOUT_S, WORKERS, serve  # noqa: E402

ROUTES = ("/", "/app.mjs", "/style.css", "/model/info.json", "/model/model_waveform.tflite",
          "/node_modules/@mediapipe/tasks-audio/audio_bundle.mjs", "/node_modules/", "/missing")


def burst(host: str, port: int, paths: list[str], timeout: float = 60) -> dict:
    """Send every request at once (one connection each); statuses, failures and latency percentiles."""
    barrier = threading.Barrier(len(paths))

    def one(path: str):
        barrier.wait()
        t = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            conn.close()
            return r.status, time.perf_counter() - t
        except (OSError, http.client.HTTPException) as err:
            return type(err).__name__, time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(paths)) as pool:
        results = list(pool.map(one, paths))
    latencies = sorted(s for _, s in results)
    statuses = Counter(str(code) for code, _ in results)
    answered = sum(n for code, n in statuses.items() if code.isdigit())
    return {"requests": len(paths), "answered": answered, "statuses": dict(statuses),
            "wall_s": round(time.perf_counter() - t0, 2),
            "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 1),
            "latency_ms_p99": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 requests, 70 stalled (the smoke test)")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results"), help="folder for server.json")
    args = parser.parse_args(argv)
    mixed, single, stalled_n = (100, 50, 70) if args.quick else (1000, 200, 100)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model_waveform.tflite")
        with open(model, "wb") as f:
            f.write(os.urandom(480 * 1024))  # about the size of the homework CNN's waveform model
        with serve(model) as url:
            host, port = url.split("//")[1].rstrip("/").split(":")
            port = int(port)
            result = {"mixed": burst(host, port, [ROUTES[i % len(ROUTES)] for i in range(mixed)]),
                      "get_index": burst(host, port, ["/"] * single)}
            stalled = []
            for _ in range(stalled_n):  # half-sent requests (more than the worker threads), held open
                s = socket.create_connection((host, port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: ")
                stalled.append(s)
            result["mixed_beside_stalled"] = burst(host, port, [ROUTES[i % len(ROUTES)] for i in range(single)])
            t = time.perf_counter()
            closed = 0
            for s in stalled:
                s.settimeout(REQUEST_TIMEOUT_S + 30)
                try:
                    closed += s.recv(10) == b""
                except OSError:
                    pass
                s.close()
            result["stalled"] = {"connections": stalled_n, "closed_by_server": closed,
                                 "seconds_until_all_closed_after_the_burst": round(time.perf_counter() - t, 1)}
    result.update({"server": {"workers": WORKERS, "backlog": BACKLOG, "request_timeout_s": REQUEST_TIMEOUT_S},
                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                   "date": time.strftime("%Y-%m-%d")})
    for name in ("mixed", "get_index", "mixed_beside_stalled"):
        r = result[name]
        print(f"{name:>10}: {r['answered']}/{r['requests']} answered in {r['wall_s']} s, statuses {r['statuses']}, "
              f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms")
    print(f"   stalled: {closed}/{stalled_n} half-sent connections closed by the server")
    path = os.path.join(args.results, "server_quick.json" if args.quick else "server.json")
    write_json(path, result)
    print(f"Wrote {path}")
    ok = all(result[n]["answered"] == result[n]["requests"] for n in ("mixed", "get_index", "mixed_beside_stalled")) \
        and closed == stalled_n
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
