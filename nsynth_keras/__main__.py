"""One door to every command: ``nsynth-keras <command> [flags]`` (or ``python -m nsynth_keras <command>``)
runs ``python -m nsynth_keras.<command>``. ``nsynth-keras`` alone lists the commands."""

from __future__ import annotations

import importlib
import sys

# The commands, in the order a user meets them; each is a module here with a main(argv=None).
COMMANDS = {
    "train": "train a model on NSynth notes into a run folder",
    "evaluate": "score a run (or the shipped model) on a split, with the twin-aware report",
    "predict": "name the family of wav/flac/ogg/mp3 files",
    "ensemble": "average several runs (seeds) into one model",
    "export": "write a run's SavedModel and TFLite models",
    "tflite_check": "check a run's TFLite models against Keras (LiteRT, MediaPipe, the browser)",
    "tune": "keras-tuner search over kernel count, padding and stride",
    "visualize": "plot a run's curves, confusion, kernels and activations",
    "audit": "find the valid/test notes that have a twin among the training notes",
    "render": "render notes from SoundFonts or the synthesizer into the json/wav layout",
    "prepare": "prepare json/wav notes for the real TFDS nsynth builder",
    "web": "serve the demo page for a run's waveform TFLite model",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join(["usage: nsynth-keras <command> [flags]   (nsynth-keras <command> --help for its flags)",
                      "", "commands:", *(f"  {name:<{width}}  {what}" for name, what in COMMANDS.items())])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    command = importlib.import_module(f"nsynth_keras.{name}")
    return command.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
