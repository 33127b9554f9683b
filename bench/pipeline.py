"""Input-pipeline benchmark, all figures measured side by side in one run on the same real notes.

    python bench/pipeline.py --data-dir ../shared/nsynth [--split train] [--max-examples N]

1. log-mel clips/s from wav files: tf.data + tensorflow-io (parallel decode and map) vs a plain
   librosa loop computing the same 64x64 log-mel (same n_fft, hop, HTK mel bands, dB, floor);
2. first (decode + features) vs cached epoch input time;
3. training examples/s fed by the pipeline vs from in-memory arrays (is the input the bottleneck?);
4. peak RSS while streaming the whole split (no cache);
5. (--tfds-dir) notes/s reading the shards the real TFDS builder prepared (python -m nsynth_keras.prepare)
   vs reading the same notes' wav files, and the memory of a 300,000-note file list (the full train
   split's size): the json/wav path holds paths and labels, not audio, until a note is decoded;
6. the memory left by reading a 100,000-note examples.json (the note table and the parse's residue).
Targets: (1) >= 5x, (2) cached <= 10% of first, (3) >= 90%.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core import config  # noqa: E402
from nsynth_keras.core.files import write_json  # noqa: E402
from nsynth_keras.data.datasets import make_dataset  # noqa: E402
from nsynth_keras.data.notes import read_examples
from nsynth_keras.data.pipeline import feature_dataset  # noqa: E402


def librosa_log_mel(path: str) -> np.ndarray:
    import librosa
    import soundfile as sf

    wave, _ = sf.read(path, dtype="float32")
    wave = np.pad(wave[: config.NUM_SAMPLES], (0, max(0, config.NUM_SAMPLES - len(wave))))
    # tfio pads the end (pad_end) and does not centre frames: do the same here.
    padded = np.pad(wave, (0, config.N_FFT))
    mel = librosa.feature.melspectrogram(y=padded, sr=config.SAMPLE_RATE, n_fft=config.N_FFT,
                                         hop_length=config.HOP_LENGTH, n_mels=config.N_MELS, fmin=config.F_MIN,
                                         fmax=config.F_MAX, htk=True, norm=None, center=False, power=1.0)
    mel = mel[:, : config.N_FRAMES].T
    db = librosa.power_to_db(mel**2, ref=np.max, top_db=config.TOP_DB)
    return db / (config.TOP_DB / 2) + 1


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, split="train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--tfds-dir", default=None, help="also compare with TFDS shards prepared here (prepared from "
                   "--data-dir with the same --max-examples if not yet)")
    args = p.parse_args(argv)
    spec = spec_from_args(args)
    data = make_dataset(spec, args.split)
    n = data.num_examples
    out = {"notes": n, "split": args.split, "cpu_count": os.cpu_count()}

    # 4 first: peak RSS while streaming every note once, nothing cached.
    base = rss_mib()
    for _ in feature_dataset(make_dataset(spec, args.split).dataset, args.batch_size, cache=None):
        pass
    out["stream_peak_rss_mib"] = round(rss_mib(), 1)
    out["stream_rss_growth_mib"] = round(rss_mib() - base, 1)

    # 1. clips/s from the wav files (the same dataset object as above: traced and warm).
    streaming = feature_dataset(data.dataset, args.batch_size, cache=None)
    for _ in streaming.take(1):
        pass
    t = time.perf_counter()
    for _ in streaming:
        pass
    tf_rate = n / (time.perf_counter() - t)

    paths = read_examples(args.data_dir, args.split, spec.filters).path
    # Same features? (librosa's float32 STFT against TF's; compared on the first note)
    ours = next(iter(feature_dataset(make_dataset(spec, args.split).dataset, 1, cache=None)))[0].numpy()[0, ..., 0]
    out["librosa_max_abs_diff"] = float(np.abs(librosa_log_mel(paths[0]) - ours).max())
    t = time.perf_counter()
    for path in paths:
        librosa_log_mel(path)
    librosa_rate = n / (time.perf_counter() - t)
    out.update(tfdata_clips_per_s=round(tf_rate, 1), librosa_clips_per_s=round(librosa_rate, 1),
               speedup=round(tf_rate / librosa_rate, 2))

    # 2. first vs cached epoch.
    ds = feature_dataset(make_dataset(spec, args.split).dataset, args.batch_size, training=True, cache="memory")
    epochs = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in ds:
            pass
        epochs.append(time.perf_counter() - t)
    out.update(first_epoch_s=round(epochs[0], 3), cached_epoch_s=round(min(epochs[1:]), 4),
               cached_over_first=round(min(epochs[1:]) / epochs[0], 4))

    # 3. training throughput: pipeline vs in-memory arrays, same model, same notes.
    import keras

    from nsynth_keras.learn.training import compile_model, one_hot
    from nsynth_keras.models.cnn import build_baseline

    x = np.concatenate([b[0].numpy() for b in ds])
    y = keras.utils.to_categorical(np.concatenate([b[1].numpy() for b in ds]), config.NUM_CLASSES)
    rates = {}
    for name, fit in (("pipeline", lambda m: m.fit(ds.map(one_hot), epochs=1, verbose=0, shuffle=False)),
                      ("in_memory", lambda m: m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0))):
        model = build_baseline()
        compile_model(model, 1e-3)
        fit(model)  # compile and warm up
        t = time.perf_counter()
        for _ in range(2):
            fit(model)
        rates[name] = 2 * n / (time.perf_counter() - t)
    out.update(train_ex_per_s_pipeline=round(rates["pipeline"], 1),
               train_ex_per_s_in_memory=round(rates["in_memory"], 1),
               pipeline_over_in_memory=round(rates["pipeline"] / rates["in_memory"], 3))

    if args.tfds_dir:
        out.update(tfds_vs_jsonwav(spec, args))
    out.update(index_memory(spec, args.split))
    out.update(read_memory())

    out["targets"] = {"tfdata >= 5x librosa": out["speedup"] >= 5,
                      "cached epoch <= 10% of first": out["cached_over_first"] <= 0.10,
                      "pipeline training >= 90% of in-memory": out["pipeline_over_in_memory"] >= 0.90}
    print(json.dumps(out, indent=2))
    if args.json:
        write_json(args.json, out)
    return out


def notes_per_s(ds, n: int, repeats: int = 3) -> float:
    """Best of a few passes over a note dataset (decode only), after a warm-up pass."""
    for _ in ds:
        pass
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in ds:
            pass
        best = min(best, time.perf_counter() - t)
    return n / best


def tfds_vs_jsonwav(spec, args) -> dict:
    """The same notes read from TFDS-prepared shards and from wav files, side by side."""
    from nsynth_keras.data.datasets import tfds_dataset
    from nsynth_keras.sounds.release import prepare_tfds

    prepare_tfds(spec.data_dir, args.tfds_dir, max_examples=spec.filters.max_examples, log=lambda *a: None)
    tfds_ds = tfds_dataset(args.split, data_dir=args.tfds_dir).prefetch(64)
    wav = make_dataset(spec, args.split)
    wav_ds = wav.dataset.prefetch(64)
    n = wav.num_examples
    assert sum(1 for _ in tfds_ds) == n, "the prepared TFDS split holds other notes: use a fresh --tfds-dir"
    rates = {"tfds": notes_per_s(tfds_ds, n), "jsonwav": notes_per_s(wav_ds, n)}
    return {"tfds_notes_per_s": round(rates["tfds"], 1), "jsonwav_notes_per_s": round(rates["jsonwav"], 1),
            "tfds_over_jsonwav": round(rates["tfds"] / rates["jsonwav"], 3)}


# The probes' resident memory in bytes (statm counts 4 KiB pages), defined once for both.
RSS = """
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
"""
INDEX_PROBE = RSS + """
import gc, sys
import nsynth_keras
from nsynth_keras.data.datasets import table_dataset
from nsynth_keras.data.notes import Filters, read_examples
one = read_examples(sys.argv[1], sys.argv[2], Filters(max_examples=1))
next(iter(table_dataset(one, shuffle=True).batch(64)))  # TensorFlow's runtime started before the baseline
gc.collect()
before = rss()
notes = int(sys.argv[3])
table = one.subset([0] * notes)
next(iter(table_dataset(table, shuffle=True).batch(64)))
print(rss() - before)
"""


def index_memory(spec, split: str, notes: int = 300_000) -> dict:
    """RSS growth for a 300,000-note file list (one real wav listed 300,000 times) made into the
    decoding dataset and read for one batch: paths and labels only, no audio held. In a fresh process: this
    one's freed memory would be reused and hide the growth."""
    grown = int(probe(INDEX_PROBE, spec.data_dir, split, str(notes)))
    return {"index_notes": notes, "index_rss_growth_mib": round(grown / 2**20, 1),
            "index_bytes_per_note": round(grown / notes, 1)}


def probe(script: str, *args: str) -> str:
    """What ``script`` prints, run in a fresh Python process from the repository root."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return done.stdout


READ_PROBE = RSS + """
import sys
from nsynth_keras.data.notes import read_examples
before = rss()
table = read_examples(sys.argv[1], "train", check=False)
print(len(table), rss() - before)
"""


def read_memory(notes: int = 100_000) -> dict:
    """Memory that reading a listing of ``notes`` rendered notes' entries (examples.json only) leaves in a fresh
    process: the note table and whatever the JSON parse could not give back."""
    import tempfile

    from nsynth_keras.sounds.rendering import PlannedNote, metadata

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "nsynth-train"))
        examples = {}
        for i in range(notes):  # every field that render writes
            note = PlannedNote("bench.sf2", i // 400, f"keyboard_synthetic_bench_{i // 400:04d}", "keyboard",
                               "synthetic", 21 + i % 88, 25 * (1 + i % 5))
            examples[note.note_str] = metadata(note, i, i // 400)
        with open(os.path.join(root, "nsynth-train", "examples.json"), "w") as f:
            json.dump(examples, f)
        del examples
        read, grown = map(int, probe(READ_PROBE, root).split())
    return {"read_notes": read, "read_bytes_per_note": round(grown / read, 1)}


if __name__ == "__main__":
    main()

