"""What 100,000 notes cost, measured: render them, train one epoch of the homework CNN on them streaming (the
log-mel cache on disk), then evaluate, predict and check on-device (every exported .tflite and MediaPipe) about
10,000 held-out rendered notes, and train the biggest size again on two workers of this machine. Every step is its own
process, timed, with its peak resident memory (the kernel's maxrss of that child), so memory that grows with the
note count shows up.

    python bench/scale.py --data-dir ../shared/nsynth          # writes bench/results/scale.json (about 50 min)
    python bench/scale.py --data-dir ../shared/nsynth --quick  # 1,000 and 2,000 notes: the code paths (5 min)
    python bench/scale.py --data-dir ../shared/nsynth --only workers  # step 4 alone, on the renders of a full run

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
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from speed import cpu_info  # noqa: E402

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


def step(name: str, cmd: list[str], log: list[dict], envs: list[dict] | None = None,
         exit_codes: tuple[int, ...] = (0,)) -> dict:
    """Run one command as a child process (or one per entry of ``envs``, together: the workers of one training);
    the wall time and each process's own peak RSS (wait4's maxrss, KiB on Linux). An exit code outside
    ``exit_codes`` stops the benchmark."""
    print(f"[scale] {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, CI="1", TF_CPP_MIN_LOG_LEVEL="3", **env),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for env in envs or [{}]]
    outs = [""] * len(procs)

    def drain(i: int) -> None:  # one reader per process: no worker blocks on a full pipe
        outs[i] = procs[i].stdout.read()

    readers = [threading.Thread(target=drain, args=(i,)) for i in range(len(procs))]
    for reader in readers:
        reader.start()
    rss, codes = [], []
    for proc in procs:  # wait4, not wait: each process's own peak RSS
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        codes.append(proc.returncode)
        rss.append(round(usage.ru_maxrss / 1024))
    for reader in readers:
        reader.join()
    row = {"step": name, "seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": max(rss),
           "exit_code": max(codes, key=abs)}
    if len(procs) > 1:
        row["peak_rss_mib_each"] = rss
    log.append(row)
    print(f"[scale] {name}: {row['seconds']} s, peak RSS {rss} MiB, exit {codes}", flush=True)
    out = "\n".join(outs)
    with open(os.path.join(LOGS, name.replace(" ", "-") + ".log"), "w", encoding="utf-8") as f:
        f.write(out)
    if row["exit_code"] not in exit_codes:
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
    p.add_argument("--only", choices=("train", "heldout", "workers"), default=None,
                   help="only step 2 (one-worker training, for --sizes), step 3 (evaluate, predict, export and the "
                        "on-device check on the held-out notes) or step 4 (the biggest size on two workers), with the "
                        "notes rendered (and for 3 the runs trained) before; the results file's other figures are "
                        "kept")
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
    results_file = os.path.join(args.results, "scale_quick.json" if args.quick else "scale.json")
    heldout = os.path.join(args.cache, f"heldout-{heldout_bank[0]}-step{heldout_step}")
    if args.only:
        result = json.load(open(results_file))
        redone = {"heldout": ("render held-out", "evaluate held-out", "predict held-out", "export",
                              "on-device check"),
                  "train": tuple(f"train {size}" for size in args.sizes),
                  "workers": ("train on 2 workers",)}[args.only]
        log = result["steps"] = [s for s in result["steps"] if not s["step"].startswith(redone)]
        rendered = [r for r in (os.path.join(args.cache, f"render-{slug}") for slug, _ in banks) if os.path.isdir(r)]
        if args.only == "heldout":
            render_heldout(log, heldout, heldout_bank, heldout_step, velocities)
            heldout_steps(args, result, log, heldout, results_file)
        elif args.only == "train":
            train_sizes(args, result, log, rendered, results_file)
        else:
            two_workers(args, result, log, rendered, results_file)
        return 0

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
    render_heldout(log, heldout, heldout_bank, heldout_step, velocities)
    result["rendered_notes"] = total
    # The renderer's own rate where this run wrote notes (a bank rendered earlier is only reread)
    rates = [r["render_notes_per_s"] for r in log if r.get("render_notes_per_s")]
    result["render_notes_per_s"] = round(sum(rates) / len(rates), 1) if rates else None

    train_sizes(args, result, log, rendered, results_file)
    heldout_steps(args, result, log, heldout, results_file)
    two_workers(args, result, log, rendered, results_file)
    return 0


def two_workers(args, result: dict, log: list[dict], rendered: list[str], results_file: str) -> None:
    """4. The biggest size again on two workers of this machine (MultiWorkerMirroredStrategy over localhost gRPC,
    the custom loop of learn/distributed.py), first epoch and cached epoch, against the one-worker figures."""
    import socket

    size = max(args.sizes)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    envs = [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
             "PYTHONUNBUFFERED": "1"} for i in range(2)]
    cache_dir = os.path.join(args.cache, f"mels-{size}-2w")
    shutil.rmtree(cache_dir, ignore_errors=True)  # the first epoch decodes every note
    figures = {}
    for label, run_name in (("first", f"scale-{size}-2w"), ("cached", f"scale-{size}-2w-cached")):
        cmd = [*train_command(args, rendered, size, cache_dir, run_name), "--strategy", "multiworker"]
        row = step(f"train on 2 workers {size} {label}", cmd, log, envs)
        trained = re.search(r"Epoch 1 trained in (\d+) s: (\d+) notes on all workers", row["output"])
        if not trained:
            raise SystemExit(f"no epoch time in the workers' output:\n{row['output'][-2000:]}")
        seconds, notes = int(trained.group(1)), int(trained.group(2))
        figures[label] = {"epoch_s": seconds, "notes": notes, "notes_per_s": round(notes / max(seconds, 1), 1),
                          "process_s": row["seconds"], "peak_rss_mib_each": row["peak_rss_mib_each"]}
    config = json.load(open(os.path.join(args.cache, "runs", f"scale-{size}-2w", "config.json")))
    batch = config["settings"]["batch_size"]
    result["two_workers"] = {"size": size, "batch_per_worker": batch, "global_batch": 2 * batch, **figures}
    compare_workers(result)
    write_json(results_file, result)
    print(json.dumps(result["two_workers"], indent=2))


def compare_workers(result: dict) -> None:
    """Two workers' epoch rates over one worker's at the same size (after either is measured anew)."""
    two = result.get("two_workers")
    one = result["runs"].get(str(two["size"]), {}) if two else {}
    if not (one.get("first_epoch_notes_per_s") and one.get("cached_epoch_examples_per_s")):
        return
    two["first_epoch_vs_one_worker"] = round(two["first"]["notes_per_s"] / one["first_epoch_notes_per_s"], 3)
    two["cached_epoch_vs_one_worker"] = round(two["cached"]["notes_per_s"] / one["cached_epoch_examples_per_s"], 3)


def train_command(args, rendered: list[str], size: int, cache_dir: str, run_name: str) -> list[str]:
    """One epoch of the homework CNN on the real notes plus ``size`` sampled extra notes, log-mels cached on disk."""
    return [sys.executable, "-m", "nsynth_keras.train", "--data-dir", args.data_dir, "--extra-train", *rendered,
            "--extra-ratio", str(size / count(args.data_dir)), "--epochs", "1", "--cache-dir", cache_dir, "--out",
            os.path.join(args.cache, "runs"), "--run-name", run_name, "--overwrite", "--no-tflite"]


def render_heldout(log: list[dict], heldout: str, bank: tuple[str, str | None], pitch_step: str,
                   velocities: tuple[str, ...]) -> None:
    sf = ["--soundfont", bank[1]] if bank[1] else []
    step("render held-out", [sys.executable, "-m", "nsynth_keras.render", "--out", heldout, *sf, "--split", "test",
                             "--pitch-step", pitch_step, "--velocities", *velocities], log)
    log[-1]["notes"] = count(heldout, "test")


def train_sizes(args, result: dict, log: list[dict], rendered: list[str], results_file: str) -> None:
    """2. One epoch per size, streaming from the wav files, the log-mels cached on disk (emptied first, so the
    first epoch decodes every note), then the same epoch again from the cache."""
    for size in args.sizes:
        name = f"scale-{size}"
        cache_dir = os.path.join(args.cache, f"mels-{size}")
        shutil.rmtree(cache_dir, ignore_errors=True)
        train = step(f"train {size}", train_command(args, rendered, size, cache_dir, name), log)
        config = json.load(open(os.path.join(args.cache, "runs", name, "config.json")))
        notes = config["notes"]["train"]
        # The same epoch again from the cache (a second run with the same data settings reuses the files).
        again = step(f"train {size} cached", train_command(args, rendered, size, cache_dir, f"{name}-cached"), log)
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
        result["train_cpu"] = cpu_info()  # the training runs' machine (a partial rerun may differ from the rest's)
        result["peak_rss_growth_kib_per_note"] = rss_growth(result["runs"])
        compare_workers(result)
        write_json(results_file, result)


def rss_growth(runs: dict) -> dict | None:
    """Peak memory added per training note from the smallest to the biggest size (first epoch, and cached):
    what a bigger dataset costs beyond the fixed part."""
    if len(runs) < 2:
        return None
    sizes = sorted(runs, key=int)
    small, big = runs[sizes[0]], runs[sizes[-1]]
    notes = big["train_notes"] - small["train_notes"]
    return {which: round((big[key] - small[key]) * 1024 / notes, 2) for which, key in
            (("first", "train_peak_rss_mib"), ("cached", "cached_train_peak_rss_mib"))}


def heldout_steps(args, result: dict, log: list[dict], heldout: str, results_file: str) -> None:
    """3. Evaluate and predict the held-out notes with the biggest run; export it and run the on-device check on
    1,000 of them and on all (its peak memory must not grow with the notes)."""
    py = sys.executable
    run = os.path.join(args.cache, "runs", f"scale-{max(args.sizes)}")
    ev = step("evaluate held-out", [py, "-m", "nsynth_keras.evaluate", run, "--data-dir", heldout, "--split", "test",
                                    "--out", os.path.join(args.cache, "eval")], log)
    pr = step("predict held-out", [py, "-m", "nsynth_keras.predict", run, os.path.join(heldout, "nsynth-test", "audio"),
                                   "--recursive", "--csv", os.path.join(args.cache, "predict.csv")], log)
    n = count(heldout, "test")
    result["heldout"] = {"notes": n, "evaluate_s": ev["seconds"], "evaluate_peak_rss_mib": ev["peak_rss_mib"],
                         "evaluate_notes_per_s": round(n / ev["seconds"], 1), "predict_s": pr["seconds"],
                         "predict_peak_rss_mib": pr["peak_rss_mib"], "predict_notes_per_s": round(n / pr["seconds"], 1),
                         # not generalisation: General MIDI banks share samples
                         "accuracy": json.load(open(os.path.join(args.cache, "eval", "eval_test.json")))["accuracy"]}
    step("export", [py, "-m", "nsynth_keras.export", run, "--data-dir", args.data_dir], log)
    few = min(1000, n // 4)
    for name, limit in ((f"on-device check {few} held-out", ["--max-examples", str(few)]),
                        ("on-device check held-out", [])):
        # exit 1: a model below its agreement threshold (a 1-epoch model's int8 can be); still measured
        check = step(name, [py, "-m", "nsynth_keras.tflite_check", run, "--data-dir", heldout, "--split", "test",
                            *limit], log, exit_codes=(0, 1))
        key = "tflite_check_few" if limit else "tflite_check"
        result["heldout"].update({f"{key}_notes": few if limit else n, f"{key}_s": check["seconds"],
                                  f"{key}_peak_rss_mib": check["peak_rss_mib"],
                                  f"{key}_passed": check["exit_code"] == 0})
    result["cpu_count"] = os.cpu_count()
    write_json(results_file, result)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
