"""Render NSynth-format notes from SoundFonts into the official json/wav layout.

    python -m nsynth_keras.render --out ~/nsynth-rendered/timgm6mb
    python -m nsynth_keras.train --data-dir ../shared/nsynth --extra-train ~/nsynth-rendered/timgm6mb

Each General MIDI program that the map names (resources/gm_families.csv: program -> family,
source and pitch range) plays every --pitch-step-th pitch of its range at each velocity: held
3 s, released 1 s, 16 kHz mono 16-bit, like NSynth. Notes the SoundFont has no sample for
(near silence) are dropped and counted; louder renders are scaled down, never clipped.
The default SoundFont is TimGM6mb.sf2 from the installed pretty-midi package; bigger free ones
come with Debian (apt-get install fluid-soundfont-gm: /usr/share/sounds/sf2/FluidR3_GM.sf2;
musescore-general-soundfont: /usr/share/sounds/sf3/MuseScore_General.sf3).
Rendering again into the same --out with the same settings resumes (finished notes are kept);
with other settings it is refused. The output is deterministic for a --seed.
With --synth N it renders N procedural synthesizer presets per family instead (nsynth_keras/sounds/synth.py:
detuned-saw and square leads, acid and FM basses, FM electric pianos, drawbar organs, string ensembles,
Karplus-Strong plucks, modal and FM bells, formant voices, ...), all with instrument_source synthetic:

    python -m nsynth_keras.render --out ~/nsynth-rendered/synth --synth 24
    python -m nsynth_keras.render --out ~/nsynth-rendered/synth-heldout --synth 4 --seed 1 --split valid

Each seed makes other presets (their names carry the seed). --source synthetic marks every note of a
SoundFont synthetic (e.g. the OPL-3 FM SoundFont, whose General MIDI names say acoustic/electronic).
Rendered notes are data, not NSynth: keep them out of git.
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import make_parser, run_command
from nsynth_keras.core.config import FAMILIES, SOURCES
from nsynth_keras.sounds.rendering import DEFAULT_PROGRAM_MAP, RenderConfig, render


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("render", __doc__)
    p.add_argument("--out", required=True, help="folder to write nsynth-<split>/ into")
    p.add_argument("--soundfont", nargs="+", default=[], metavar="PATH",
                   help="SoundFont files (.sf2/.sf3; default: TimGM6mb.sf2 from pretty-midi)")
    p.add_argument("--split", default="train", choices=("train", "valid", "test"),
                   help="split folder to write (default: %(default)s; rendered notes are training data)")
    p.add_argument("--pitch-step", type=int, default=3,
                   help="render every N-th pitch of each instrument's range (default: %(default)s)")
    p.add_argument("--velocities", type=int, nargs="+", default=[50, 100, 127],
                   help="MIDI velocities (default: %(default)s)")
    p.add_argument("--programs", type=int, nargs="+", default=None,
                   help="only these General MIDI programs (default: every program in the map)")
    p.add_argument("--program-map", default=None,
                   help=f"CSV program,family,source,pitch_min,pitch_max (default: {DEFAULT_PROGRAM_MAP})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for each instrument's pitch offset and the --synth presets (default: 0)")
    p.add_argument("--source", choices=SOURCES, default=None,
                   help="instrument source of every note (default: the program map's, per program)")
    p.add_argument("--synth", type=int, default=0, metavar="N",
                   help="render N synthesizer presets per family instead of SoundFonts (default: 0, off)")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=None,
                   help="with --synth: only these families (default: all 11)")
    return p


def run(args: argparse.Namespace) -> None:
    config = RenderConfig(args.out, tuple(args.soundfont), args.split, args.pitch_step, tuple(args.velocities),
                          tuple(args.programs) if args.programs else None, args.program_map, args.seed,
                          args.source, args.synth, tuple(args.families) if args.families else None)
    summary = render(config)
    print(summary.table())
    print(f"{summary.written} notes written, {summary.reused} kept from an earlier run, {summary.dropped_silent} "
          f"dropped as silent (no sample at that pitch), {summary.scaled} scaled down to avoid clipping"
          + (f"; {len(summary.missing_programs)} programs missing from the SoundFont(s)"
             if summary.missing_programs else ""))
    print(f"Wrote {summary.folder}")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
