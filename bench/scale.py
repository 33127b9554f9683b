"""What 100,000 notes cost, measured: render them, train one epoch of the homework CNN on them streaming (the
log-mel cache on disk), then evaluate and predict about 10,000 held-out rendered notes. Every step is its own
process, timed, with its peak resident memory (the kernel's maxrss of that child), so memory that grows with the
note count shows up.

    python bench/scale.py --data-dir ../shared/nsynth          # writes bench/results/scale.json (about 35 min)
    python bench/scale.py --data-dir ../shared/nsynth --quick  # 1,000 and 2,000 notes: the code paths (3 min)

Training notes are SoundFont renders (FluidR3, MuseScore General, TimGM6mb, OPL-3, MuseScore General Full; every
pitch, 5 velocities) added to the real training split with --extra-train, sampled to each size with --extra-ratio;
the held-out notes are another SoundFont's (the Csound bank), so the evaluated model never heard its instruments.
Renders are cached under --cache (outside the repository; rendered notes are data) and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nsynth_keras.core.files import write_json  # noqa: E402

SF2 = "/usr/share/sounds/sf2"
SF3 = "/usr/share/sounds/sf3"
# About 20,000 notes each (79 mapped programs x their pitch ranges x 5 velocities), rendered in this order until
# the biggest size is reached. The "Full" MuseScore bank samples the same instruments as the other at a higher rate.
TRAIN_BANKS = (("fluidr3", f"{SF2}/FluidR3_GM.sf2"), ("musescore", f"{SF3}/MuseScore_General.sf3"),
               ("timgm6mb", None), ("opl3", f"{SF2}/OPL-3_FM_128M.sf2"),
               ("musescore-full", f"{SF3}/MuseScore_General_Full.sf3"))
HELDOUT_BANK = ("csound", f"{SF2}/sf_GMbank.sf2")
VELOCITIES = ("25", "50", "75", "100", "127")
LOGS = "."  # each step's output is kept here (main sets it under --cache)


def step(name: str, cmd: list[str], log: list[dict]) -> dict:
    """Run one command as a child process; its wall time and its own peak RSS (wait4's maxrss, KiB on Linux)."""
    print(f"[scale] {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, CI="1", TF_CPP_MIN_LOG_LEVEL="3"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"step": name, "seconds": round(time.perf_counter() - start, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024), "exit_code": proc.returncode}
    log.append(row)
    print(f"[scale] {name}: {row['seconds']} s, peak RSS {row['peak_rss_mib']} MiB, exit {proc.returncode}", flush=True)
    with open(os.path.join(LOGS, name.replace(" ", "-") + ".log"), "w", encoding="utf-8") as f:
        f.write(out)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{out[-3000:]}")
    written = re.search(r"^(\d+) notes written", out, re.M)
    rate = re.findall(r"notes, (\d+) notes/s", out)
    if written and int(written.group(1)) and rate:
        row["render_notes_per_s"] = int(rate[-1])
    return {**row, "output": out}


def epoch_seconds(output: str) -> int | None:
    """The epoch's own time as Keras prints it with verbose=2 ("312/312 - 41s - 131ms/step - ...")."""
    found = re.findall(r"(\d+)/\1 - (\d+)s", output)
    return int(found[-1][1]) if found else None


def count(folder: str, split: str = "train") -> int:
    with open(os.path.join(folder, f"nsynth-{split}", "examples.json"), encoding="utf-8") as f:
        return len(json.load(f))


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the real NSynth json/wav folder (valid and test are scored)")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/nsynth-keras/scale"),
                   help="renders, log-mel caches and runs go here (default: %(default)s)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000],
                   help="extra training notes of each run (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="sizes 1000 2000 and about 1,300 held-out notes, all from TimGM6mb")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args(argv)
    py = sys.executable
    banks, heldout_bank, velocities = TRAIN_BANKS, HELDOUT_BANK, VELOCITIES
    pitch_step, heldout_step = "1", "2"
    if args.quick:  # only the SoundFont pretty-midi ships: no Debian package needed
        args.sizes, banks, heldout_bank, velocities = [1000, 2000], TRAIN_BANKS[2:3], ("timgm6mb", None), ("100",)
        pitch_step, heldout_step = "2", "3"
    missing = [sf for _, sf in (*banks, heldout_bank) if sf and not os.path.isfile(sf)]
    if missing:
        raise SystemExit(f"missing SoundFonts {', '.join(missing)}: apt-get install fluid-soundfont-gm "
                         "musescore-general-soundfont csound-soundfont (or run --quick)")
    global LOGS
    LOGS = os.path.join(args.cache, "logs")
    os.makedirs(LOGS, exist_ok=True)
    log: list[dict] = []
    result: dict = {"sizes": args.sizes, "steps": log, "runs": {}}

    # 1. Render (cached: a rerun with the same settings resumes and keeps every finished note).
    rendered, total = [], 0
    for slug, soundfont in banks:
        out = os.path.join(args.cache, f"render-{slug}")
        sf = ["--soundfont", soundfont] if soundfont else []
        step(f"render {slug}", [py, "-m", "nsynth_keras.render", "--out", out, *sf, "--pitch-step", pitch_step,
                                "--velocities", *velocities], log)
        rendered.append(out)
        total += count(out)
        log[-1]["notes"] = count(out)
        if total >= max(args.sizes):
            break
    heldout = os.path.join(args.cache, "heldout-" + heldout_bank[0])
    sf = ["--soundfont", heldout_bank[1]] if heldout_bank[1] else []
    step("render held-out", [py, "-m", "nsynth_keras.render", "--out", heldout, *sf, "--split", "test",
                             "--pitch-step", heldout_step, "--velocities", *velocities], log)
    log[-1]["notes"] = count(heldout, "test")
    result["rendered_notes"] = total
    # The renderer's own rate where this run wrote notes (a bank rendered earlier is only reread)
    rates = [r["render_notes_per_s"] for r in log if r.get("render_notes_per_s")]
    result["render_notes_per_s"] = round(sum(rates) / len(rates), 1) if rates else None

    # 2. One epoch per size, streaming from the wav files, the log-mels cached on disk.
    real = count(args.data_dir)
    for size in args.sizes:
        name = f"scale-{size}"
        cache_dir = os.path.join(args.cache, f"mels-{size}")
        cmd = [py, "-m", "nsynth_keras.train", "--data-dir", args.data_dir, "--extra-train", *rendered,
               "--extra-ratio", str(size / real), "--epochs", "1", "--cache-dir", cache_dir, "--out",
               os.path.join(args.cache, "runs"), "--run-name", name, "--overwrite", "--no-tflite"]
        train = step(f"train {size}", cmd, log)
        config = json.load(open(os.path.join(args.cache, "runs", name, "config.json")))
        notes = config["notes"]["train"]
        # The same epoch again from the cache (a second run with the same data settings reuses the files).
        again = step(f"train {size} cached", [*cmd[:-4], "--run-name", f"{name}-cached", "--overwrite", "--no-tflite"],
                     log)
        config_again = json.load(open(os.path.join(args.cache, "runs", f"{name}-cached", "config.json")))
        result["runs"][str(size)] = {
            "train_notes": notes,
            # the epoch as Keras timed it; data_and_fit_s (config.json) adds listing, checking and scoring valid
            "first_epoch_s": epoch_seconds(train["output"]),
            "first_epoch_notes_per_s": round(notes / max(epoch_seconds(train["output"]) or 0, 1), 1),
            "cached_epoch_s": epoch_seconds(again["output"]),
            "cached_epoch_examples_per_s": round(notes / max(epoch_seconds(again["output"]) or 0, 1), 1),
            "data_and_fit_s": config["train_seconds"], "cached_data_and_fit_s": config_again["train_seconds"],
            "train_process_s": train["seconds"], "train_peak_rss_mib": train["peak_rss_mib"],
            "cached_train_peak_rss_mib": again["peak_rss_mib"],
            "mel_cache_mib": round(folder_bytes(cache_dir) / 2**20, 1),
            "valid_accuracy": config["scores"]["valid"]["accuracy"],
            "test_accuracy": config["scores"]["test"]["accuracy"],
        }
        write_json(os.path.join(args.results, "scale_quick.json" if args.quick else "scale.json"), result)

    # 3. Evaluate and predict the held-out notes with the biggest run.
    run = os.path.join(args.cache, "runs", f"scale-{max(args.sizes)}")
    ev = step("evaluate held-out", [py, "-m", "nsynth_keras.evaluate", run, "--data-dir", heldout, "--split", "test",
                                    "--out", os.path.join(args.cache, "eval")], log)
    pr = step("predict held-out", [py, "-m", "nsynth_keras.predict", run, os.path.join(heldout, "nsynth-test", "audio"),
                                   "--recursive", "--csv", os.path.join(args.cache, "predict.csv")], log)
    n = count(heldout, "test")
    result["heldout"] = {"notes": n, "evaluate_s": ev["seconds"], "evaluate_peak_rss_mib": ev["peak_rss_mib"],
                         "evaluate_notes_per_s": round(n / ev["seconds"], 1), "predict_s": pr["seconds"],
                         "predict_peak_rss_mib": pr["peak_rss_mib"], "predict_notes_per_s": round(n / pr["seconds"], 1)}
    result["cpu_count"] = os.cpu_count()
    write_json(os.path.join(args.results, "scale_quick.json" if args.quick else "scale.json"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
