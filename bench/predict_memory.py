"""Peak memory of `predict --hop` on long recordings: it streams windows, so memory should not grow with
the length or the number of files.

    python bench/predict_memory.py            # 1 and 8 one-hour 16 kHz files, one 96 kHz stereo hour
    python bench/predict_memory.py --quick    # 1 and 2 one-minute files (the smoke test)

Each case runs `python -m nsynth_keras.predict MODEL FILES --hop 4 --csv OUT` in its own process and
reads that process's peak RSS (wait4); a 4-second note gives the floor (Python, TensorFlow, the model).
The recordings are written once to --cache (outside the repository). Writes results/predict_memory.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nsynth_keras.core.files import write_json  # noqa: E402


def recording(path: str, seconds: int, rate: int, channels: int) -> str:
    """A recording of tones changing every 2 s, written a minute at a time (never whole in memory)."""
    if os.path.isfile(path):
        return path
    tmp = path + ".partial.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(tmp, "w", rate, channels, subtype="PCM_16") as f:
        for start in range(0, seconds, 60):
            t = np.arange(min(60, seconds - start) * rate) / rate
            freq = np.repeat(rng.uniform(50, 2000, len(t) // (2 * rate) + 1), 2 * rate)[: len(t)]
            wave = 0.3 * np.sin(2 * np.pi * freq * t) * (0.5 + 0.5 * np.cos(np.pi * t))
            f.write(np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave)
    os.replace(tmp, path)
    return path


def peak_rss(argv: list[str]) -> tuple[float, float, int]:
    """(peak RSS MiB, seconds, exit code) of one command: its own VmHWM, read from /proc while it runs
    (ru_maxrss would also count the pages it inherited from this process before exec)."""
    t = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    peak_kib = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status", encoding="utf-8") as f:
                peak_kib = max([peak_kib] + [int(line.split()[1]) for line in f if line.startswith("VmHWM:")])
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    err = proc.stderr.read().decode()
    if proc.returncode:
        print(err, file=sys.stderr)
    return peak_kib / 1024, time.time() - t, proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/nsynth-keras/long-recordings"))
    p.add_argument("--quick", action="store_true", help="one-minute files, 1 and 2 of them")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args(argv)
    os.makedirs(args.cache, exist_ok=True)
    model = os.path.join(args.cache, "baseline.keras")
    if not os.path.isfile(model):  # predict needs some model: the homework CNN, untrained (saved by a child
        # process, so that this one stays small)
        subprocess.run([sys.executable, "-c", "import sys; from nsynth_keras.models.cnn import build_baseline; "
                        "build_baseline().save(sys.argv[1])", model], cwd=ROOT, check=True)
    seconds, many = (60, 2) if args.quick else (3600, 8)
    label = "1 min" if args.quick else "1 h"
    note = recording(os.path.join(args.cache, "note-4s.wav"), 4, 16_000, 1)
    longs = [recording(os.path.join(args.cache, f"long-{seconds}s-{i}.wav"), seconds, 16_000, 1)
             for i in range(many)]
    cases = {"one 4 s note (the floor)": [note], f"1 x {label} 16 kHz mono": longs[:1],
             f"{many} x {label} 16 kHz mono": longs}
    if not args.quick:
        cases[f"1 x {label} 96 kHz stereo"] = [recording(os.path.join(args.cache, "long-96k-stereo.wav"),
                                                         seconds, 96_000, 2)]
    rows = {}
    for name, files in cases.items():
        out = os.path.join(args.cache, "out.csv")
        mib, secs, code = peak_rss([sys.executable, "-m", "nsynth_keras.predict", model, *files, "--hop", "4",
                                    "--csv", out])
        audio_mib = sum(sf.info(f).frames * sf.info(f).channels for f in files) * 4 / 2**20
        rows[name] = {"peak_rss_mib": round(mib, 1), "seconds": round(secs, 1), "exit_code": code,
                      "audio_as_float32_mib": round(audio_mib, 1)}
        print(f"{name:<32} peak RSS {mib:8.1f} MiB  ({secs:6.1f} s; the audio as float32 would be "
              f"{audio_mib:,.0f} MiB)", flush=True)
    floor = rows["one 4 s note (the floor)"]["peak_rss_mib"]
    for row in rows.values():
        row["above_floor_mib"] = round(row["peak_rss_mib"] - floor, 1)
    os.makedirs(args.results, exist_ok=True)
    write_json(os.path.join(args.results, f"predict_memory{'_quick' if args.quick else ''}.json"),
               {"hop_seconds": 4, "cases": rows})
    return 0 if all(r["exit_code"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
