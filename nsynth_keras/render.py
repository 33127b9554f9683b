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
from nsynth_keras.core.settings import add_flags, given
from nsynth_keras.sounds.rendering import RenderConfig, render


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("render", __doc__)
    p.add_argument("--out", required=True, help="folder to write nsynth-<split>/ into")
    add_flags(p, RenderConfig)
    return p


def run(args: argparse.Namespace) -> None:
    config = RenderConfig(out=args.out, **given(args, RenderConfig))
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
