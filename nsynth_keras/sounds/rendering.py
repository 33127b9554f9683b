"""Render NSynth-format notes from sample-based SoundFonts (or the procedural synthesizer in synth.py),
the way NSynth itself was made:
each instrument plays each pitch of its range for 3 s, then releases for 1 s (4 s at 16 kHz),
at several velocities. The result is the official json/wav layout, so every command reads it.

General MIDI programs map to NSynth families through an editable CSV (resources/gm_families.csv).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import itertools
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import tinysoundfont

from nsynth_keras.core.config import FAMILIES, HOLD_SECONDS, NUM_QUALITIES, NUM_SAMPLES, SAMPLE_RATE, SOURCES, SPLITS
from nsynth_keras.core.errors import DataError, SettingsError
from nsynth_keras.core.files import check_output_dir, read_json, remove_stale_temporaries, write_bytes, write_json
from nsynth_keras.core.settings import check_fields, setting
from nsynth_keras.data.notes import JsonWavLayout
from nsynth_keras.sounds import synth

DEFAULT_PROGRAM_MAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "gm_families.csv")
RENDER_RECORD = "render.json"  # beside examples.json: the settings a rendered split was made with
SILENT_PEAK = 1e-3  # -60 dBFS: no sample mapped at that pitch (or a near-silent one)
PEAK_LIMIT = 0.99  # louder renders are scaled down to this, never clipped


def default_soundfont() -> str:
    """TimGM6mb.sf2 (6 MB General MIDI set) from the installed pretty-midi package."""
    try:
        path = str(importlib.metadata.distribution("pretty_midi").locate_file("pretty_midi/TimGM6mb.sf2"))
    except importlib.metadata.PackageNotFoundError:
        raise DataError("no default SoundFont: pretty-midi (which ships TimGM6mb.sf2) is not installed; "
                        "pip install --no-deps -r requirements.txt, or pass --soundfont PATH") from None
    if not os.path.isfile(path):
        raise DataError(f"no default SoundFont: {path} is missing from the pretty-midi install; pass --soundfont")
    return path


@dataclass(frozen=True)
class ProgramFamily:
    program: int
    family: str
    source: str
    pitch_min: int
    pitch_max: int


def load_program_map(path: str | None = None) -> dict[int, ProgramFamily]:
    """program -> ProgramFamily from a CSV ``program,family,source,pitch_min,pitch_max`` ('#' comments).
    Every problem is an error naming the file and the line."""
    path = path or DEFAULT_PROGRAM_MAP
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a map saved by Excel starts with a BOM
            lines = f.read().splitlines()
    except OSError as err:
        raise DataError(f"program map {path}: cannot read ({err.strerror})") from None
    mapping: dict[int, ProgramFamily] = {}
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"program map {path} line {number}"
        cells = [c.strip() for c in text.split(",")]
        if len(cells) != 5:
            raise DataError(f"{where}: expected program,family,source,pitch_min,pitch_max, got {text!r}")
        program, family, source, low, high = cells
        if family not in FAMILIES:
            raise DataError(f"{where}: unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        if source not in SOURCES:
            raise DataError(f"{where}: unknown source {source!r}; choose from {', '.join(SOURCES)}")
        try:
            program_, low_, high_ = int(program), int(low), int(high)
        except ValueError:
            raise DataError(f"{where}: program and pitches must be integers, got {text!r}") from None
        if not 0 <= program_ <= 127:
            raise DataError(f"{where}: program {program_} is not 0..127")
        if not 0 <= low_ <= high_ <= 127:
            raise DataError(f"{where}: pitch range {low_}..{high_} is not within 0..127 (low <= high)")
        if program_ in mapping:
            raise DataError(f"{where}: program {program_} is listed twice")
        mapping[program_] = ProgramFamily(program_, family, source, low_, high_)
    if not mapping:
        raise DataError(f"program map {path}: no programs listed")
    return mapping


MAX_SYNTH_PRESETS = 1000  # per family: 11,000 instruments, far beyond any useful render; bounds the planning


@dataclass
class RenderConfig:
    """What to render: the render command's flags, declared once (settings.setting)."""

    out: str = ""  # folder to write nsynth-<split>/ into (the command's required --out)
    soundfonts: tuple[str, ...] = setting((), "SoundFont files (.sf2/.sf3; none: TimGM6mb.sf2 from pretty-midi)",
                                          flag="--soundfont", metavar="PATH")
    split: str = setting("train", "split folder to write (rendered notes are training data)", choices=SPLITS)
    pitch_step: int = setting(3, "render every N-th pitch of each instrument's range, from a seeded offset per "
                                 "instrument", metavar="N", at_least=1, at_most=127)
    velocities: tuple[int, ...] = setting((50, 100, 127), "MIDI velocities", at_least=1, at_most=127)
    programs: tuple[int, ...] | None = setting(None, "only these General MIDI programs (none: every program in the "
                                                     "map)", at_least=0, at_most=127)
    banks: tuple[int, ...] = setting((0,), "SoundFont banks to render: 0 is General MIDI; a variation bank (e.g. 8) "
                                           "renders each preset it has as an instrument of its own, its family by "
                                           "program", at_least=0, at_most=127)
    program_map: str | None = setting(None, "CSV program,family,source,pitch_min,pitch_max (none: "
                                            "nsynth_keras/sounds/resources/gm_families.csv)")
    seed: int = setting(0, "seed for each instrument's pitch offset and the --synth presets", at_least=0,
                        below=2**32)
    source: str | None = setting(None, "instrument source of every note, e.g. synthetic for an FM SoundFont "
                                       "(none: the program map's, per program)", choices=SOURCES)
    synth: int = setting(0, "render N procedural synthesizer presets per family instead of SoundFonts (0: off)",
                         metavar="N", at_least=0, at_most=MAX_SYNTH_PRESETS)
    families: tuple[str, ...] | None = setting(None, "with --synth: only these families (none: all 11)",
                                               choices=FAMILIES, metavar="FAMILY")

    def validate(self) -> None:
        """Each field against its declaration (type, bounds, choices), then the rules between fields."""
        if not self.out:
            raise SettingsError("--out: give the folder to render into")
        check_fields(self)
        if len(set(self.velocities)) != len(self.velocities):
            raise SettingsError(f"--velocities {' '.join(map(str, self.velocities))} lists a velocity twice")
        if self.programs is not None and len(set(self.programs)) != len(self.programs):
            raise SettingsError("--programs lists a program twice")
        if len(set(self.banks)) != len(self.banks):
            raise SettingsError("--banks lists a bank twice")
        for path in self.soundfonts:
            if not os.path.isfile(path):
                raise DataError(f"SoundFont {path}: file not found")
        if self.synth and (self.soundfonts or self.programs is not None or self.source not in (None, "synthetic")
                           or self.banks != (0,)):
            raise SettingsError("--synth renders synthesizer presets, not SoundFonts: drop --soundfont, --programs, "
                                "--banks and --source")
        if self.families is not None and not self.synth:
            raise SettingsError("--families goes with --synth")


@dataclass(frozen=True)
class PlannedNote:
    soundfont: str
    program: int
    instrument: str
    family: str
    source: str
    pitch: int
    velocity: int
    bank: int = 0

    @property
    def note_str(self) -> str:
        return f"{self.instrument}-{self.pitch:03d}-{self.velocity:03d}"


def soundfont_slug(path: str) -> str:
    """A short name for a SoundFont file, used in instrument names: letters and digits only."""
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    return re.sub(r"[^a-z0-9]", "", stem)[:16] or "sf"


def load_soundfont(synth: tinysoundfont.Synth, path: str) -> int:
    try:
        return synth.sfload(path)
    except Exception as err:  # tinysoundfont raises RuntimeError/SoundFontException for bad files
        raise DataError(f"SoundFont {path}: cannot load it ({err}); is it a .sf2/.sf3 file?") from None


SYNTH = "synth"  # PlannedNote.soundfont of a synthesizer preset's note


def pitch_offset(config: RenderConfig, *parts) -> int:
    """A seeded offset per instrument, so pitch-step sampling covers every pitch over instruments."""
    digest = hashlib.sha256("/".join(map(str, (config.seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") % config.pitch_step


def plan_synth(config: RenderConfig) -> list[PlannedNote]:
    """config.synth presets of each family, each over its family's pitch range."""
    notes = []
    for family in config.families or FAMILIES:
        for index in range(config.synth):
            preset = synth.make_preset(family, index, config.seed)
            low, high = preset.pitch_range
            for pitch in range(low + pitch_offset(config, SYNTH, family, index), high + 1, config.pitch_step):
                for velocity in config.velocities:
                    notes.append(PlannedNote(SYNTH, index, preset.name, family, "synthetic", pitch, velocity))
    return notes


def plan(config: RenderConfig, mapping: dict[int, ProgramFamily]) -> tuple[list[PlannedNote], list[str]]:
    """Every note to render, and the programs skipped because a SoundFont lacks them."""
    if config.synth:
        return plan_synth(config), []
    notes, missing = [], []
    slugs = [soundfont_slug(p) for p in config.soundfonts]
    if len(set(slugs)) != len(slugs):
        raise DataError(f"two SoundFonts have the same name ({', '.join(slugs)}): rename one copy")
    programs = sorted(mapping if config.programs is None else set(config.programs) & set(mapping))
    for path, slug in zip(config.soundfonts, slugs):
        synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
        sfid = load_soundfont(synth, path)
        for bank, program in itertools.product(config.banks, programs):
            if synth.sfpreset_name(sfid, bank, program) is None:
                if bank == 0:  # a variation bank holds a few presets: the others are not missing
                    missing.append(f"{slug} program {program}")
                continue
            m = mapping[program]
            source = config.source or m.source
            # Bank 0 keeps the names of renders from before --banks.
            variant, parts = ("", (slug, program)) if bank == 0 else (f"b{bank}", (slug, program, bank))
            instrument = f"{m.family}_{source}_{slug}{program:03d}{variant}"
            for pitch in range(m.pitch_min + pitch_offset(config, *parts), m.pitch_max + 1, config.pitch_step):
                for velocity in config.velocities:
                    notes.append(PlannedNote(path, program, instrument, m.family, source, pitch, velocity, bank))
    return notes, missing


class Renderer:
    """One tinysoundfont synth per SoundFont; render_note gives a 4 s mono float32 note."""

    def __init__(self, seed: int = 0):
        self.synths: dict[str, tuple[tinysoundfont.Synth, int]] = {}
        self.seed = seed

    def render_note(self, note: PlannedNote) -> np.ndarray:
        if note.soundfont == SYNTH:
            return synth.render_note(synth.make_preset(note.family, note.program, self.seed), note.pitch,
                                     note.velocity)
        if note.soundfont not in self.synths:
            player = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
            self.synths[note.soundfont] = (player, load_soundfont(player, note.soundfont))
        player, sfid = self.synths[note.soundfont]
        player.program_select(0, sfid, note.bank, note.program)
        player.noteon(0, note.pitch, note.velocity)
        held = np.frombuffer(player.generate(HOLD_SECONDS * SAMPLE_RATE), np.float32)
        player.noteoff(0, note.pitch)
        released = np.frombuffer(player.generate(NUM_SAMPLES - HOLD_SECONDS * SAMPLE_RATE), np.float32)
        player.sounds_off(0)
        player.generate(SAMPLE_RATE // 10)  # let the voice end, so the next note starts clean
        stereo = np.concatenate([held, released]).reshape(-1, 2)
        return stereo.mean(axis=1).astype(np.float32)


def wav_bytes(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def metadata(note: PlannedNote, note_id: int, instrument_id: int) -> dict:
    """Every standard NSynth field; qualities are unknown for rendered notes: all zero, no names."""
    family, source = FAMILIES.index(note.family), SOURCES.index(note.source)
    return {
        "note": note_id, "note_str": note.note_str, "instrument": instrument_id, "instrument_str": note.instrument,
        "pitch": note.pitch, "velocity": note.velocity, "sample_rate": SAMPLE_RATE,
        "instrument_source": source, "instrument_source_str": note.source,
        "instrument_family": family, "instrument_family_str": note.family,
        "qualities": [0] * NUM_QUALITIES, "qualities_str": [],
    }


def record_of(config: RenderConfig, mapping: dict[int, ProgramFamily]) -> dict:
    """What makes two renders the same: the settings, each SoundFont's name and size, the map."""
    settings = dataclasses.asdict(config)
    settings.pop("out")
    if settings["banks"] == (0,):
        settings.pop("banks")  # General MIDI only: the same record as renders from before --banks
    settings["soundfonts"] = [{"name": os.path.basename(p), "bytes": os.path.getsize(p)} for p in config.soundfonts]
    settings["program_map"] = [dataclasses.asdict(m) for m in mapping.values()]
    if config.synth:
        settings["synth_presets"] = [synth.make_preset(f, i, config.seed).name for f in config.families or FAMILIES
                                     for i in range(config.synth)]
    return json.loads(json.dumps(settings))  # as it reads back from render.json (tuples become lists)


def progress(done: int, total: int, t0: float, stream=sys.stderr) -> None:
    """A bar redrawn in place on a terminal; a line every 10% in a log."""
    tty = stream.isatty()
    if done == total or done % max(1, total // (50 if tty else 10)) == 0:
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(time.time() - t0, 1e-9)
        stream.write(f"{chr(13) if tty else ''}  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} notes, "
                     f"{rate:.0f} notes/s" + ("\n" if done == total or not tty else ""))
        stream.flush()


@dataclass
class RenderSummary:
    folder: str
    written: int
    reused: int
    dropped_silent: int
    scaled: int
    missing_programs: list[str]
    notes_per_family: dict[str, int]
    instruments_per_family: dict[str, int]

    def table(self) -> str:
        lines = [f"{'family':<12}{'notes':>7}{'instruments':>13}"]
        for family in FAMILIES:
            if self.notes_per_family.get(family):
                lines.append(f"{family:<12}{self.notes_per_family[family]:>7}{self.instruments_per_family[family]:>13}")
        lines.append(f"{'total':<12}{sum(self.notes_per_family.values()):>7}"
                     f"{sum(self.instruments_per_family.values()):>13}")
        return "\n".join(lines)


def render(config: RenderConfig, log=print, show_progress: bool = True) -> RenderSummary:
    """Render every planned note into <out>/nsynth-<split>/ (resuming a render with the same settings;
    refusing a folder rendered otherwise or not rendered at all)."""
    if not config.soundfonts and not config.synth:
        config = dataclasses.replace(config, soundfonts=(default_soundfont(),))
    config.validate()
    mapping = {} if config.synth else load_program_map(config.program_map)
    check_output_dir(config.out, "--out")
    layout = JsonWavLayout(config.out)
    folder, audio = layout.split_dir(config.split), layout.audio_dir(config.split)
    record_path, examples_path = os.path.join(folder, RENDER_RECORD), layout.examples(config.split)
    record = record_of(config, mapping)
    if os.path.isdir(folder) and os.listdir(folder):
        if not os.path.isfile(record_path):
            raise DataError(f"{folder} exists and was not written by render (no {RENDER_RECORD}): refusing to "
                            "write into it; choose another --out")
        if read_json(record_path) != record:
            raise DataError(f"{folder} was rendered with other settings ({record_path}): refusing to mix two "
                            "renders; choose another --out or remove that folder")
        log(f"Resuming the render in {folder} (same settings): existing notes are kept")
    if config.programs is not None:
        unmapped = sorted(set(config.programs) - set(mapping))
        if unmapped:
            raise DataError(f"--programs {' '.join(map(str, unmapped))}: not in the program map "
                            f"{config.program_map or DEFAULT_PROGRAM_MAP} (no family for them)")
    notes, missing = plan(config, mapping)
    if not notes and missing:
        raise DataError(f"nothing to render: none of the {len(missing)} requested programs is in the SoundFont(s) "
                        f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if not notes:
        raise DataError(f"nothing to render: --pitch-step {config.pitch_step} steps over every pitch of the "
                        "instruments' ranges (see the program map's pitch_min/pitch_max); use a smaller step")
    # Written only now that the settings are known to work: a failed start leaves no record behind.
    os.makedirs(audio, exist_ok=True)
    remove_stale_temporaries(audio)  # a killed render's half-written wav
    write_json(record_path, record)
    origin = (f"{config.synth} synthesizer presets per family" if config.synth
              else f"{len(config.soundfonts)} SoundFont(s)")
    log(f"Rendering {len(notes)} notes of {len({n.instrument for n in notes})} instruments from {origin} into {folder}")
    renderer, examples = Renderer(config.seed), {}
    instrument_ids: dict[str, int] = {}
    written = reused = silent = scaled = 0
    t0 = time.time()
    for i, note in enumerate(notes, start=1):
        path = os.path.join(audio, f"{note.note_str}.wav")
        if os.path.isfile(path):
            reused += 1
        else:
            wave = renderer.render_note(note)
            peak = float(np.abs(wave).max())
            if peak < SILENT_PEAK:
                silent += 1
                if show_progress:
                    progress(i, len(notes), t0)
                continue
            if peak > PEAK_LIMIT:
                wave *= PEAK_LIMIT / peak
                scaled += 1
            write_bytes(path, wav_bytes(wave))
            written += 1
        instrument_ids.setdefault(note.instrument, len(instrument_ids))
        examples[note.note_str] = metadata(note, len(examples), instrument_ids[note.instrument])
        if show_progress:
            progress(i, len(notes), t0)
    write_json(examples_path, examples)
    per_family = Counter(m["instrument_family_str"] for m in examples.values())
    instruments = Counter(m["instrument_family_str"] for m in {m["instrument_str"]: m for m in examples.values()}
                          .values())
    return RenderSummary(folder, written, reused, silent, scaled, missing, dict(per_family), dict(instruments))
