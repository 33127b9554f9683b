"""A procedural synthesizer of NSynth-style *synthetic* instruments, in numpy and scipy.

NSynth's synthetic instruments are synthesizer presets (subtractive, FM, wavetable, physical models).
Here a preset is a recipe (a kind in ``VOICES``, one function each: detuned-saw lead, FM electric piano,
drawbar organ, Karplus-Strong pluck, modal bell, formant voice, ...) plus parameters drawn from a seeded
generator, so every seed gives new instruments and the same seed the same bytes. A note is played like
NSynth: held 3 s, released over 1 s, 16 kHz mono; velocity sets the brightness (filter cutoff, FM index,
pluck hardness).

    preset = make_preset("synth_lead", 3, seed=0)
    wave = render_note(preset, pitch=64, velocity=100)   # float32 [64000]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import fftconvolve, lfilter, lfilter_zi

from nsynth_keras.core.config import FAMILIES, HOLD_SECONDS, NUM_SAMPLES, SAMPLE_RATE

SR = SAMPLE_RATE
HOLD = HOLD_SECONDS * SR  # samples held before the release
T = np.arange(NUM_SAMPLES) / SR
BLOCK = 256  # time-varying filters change their coefficients every BLOCK samples

# A kind's sound: (params, f0, brightness, rng) -> (raw sound before the amplitude envelope, decays by itself)
Voice = Callable[[dict, float, float, np.random.Generator], tuple[np.ndarray, bool]]
# family -> {kind: voice}, filled by @voice_of below: the kinds a synth player would recognise as the family.
VOICES: dict[str, dict[str, Voice]] = {family: {} for family in FAMILIES}
# Each family's MIDI pitch range, in FAMILIES order (bass ... vocal).
PITCH_RANGES = dict(zip(FAMILIES, ((24, 60), (40, 84), (55, 96), (40, 84), (28, 96), (53, 108), (28, 96), (40, 90),
                                   (28, 96), (36, 96), (45, 84)), strict=True))


def voice_of(family: str) -> Callable[[Voice], Voice]:
    """Register a kind (named by its function) as one of a family's presets."""
    def register(fn: Voice) -> Voice:
        VOICES[family][fn.__name__] = fn
        return fn
    return register


VOWELS = {  # formant frequencies (Hz) and bandwidths of sung vowels
    "a": ((800, 1150, 2900), (80, 90, 120)),
    "e": ((400, 1600, 2700), (60, 80, 120)),
    "i": ((350, 1700, 2700), (50, 100, 120)),
    "o": ((450, 800, 2830), (70, 80, 100)),
    "u": ((325, 700, 2530), (50, 60, 170)),
}


@dataclass(frozen=True)
class Preset:
    """One synthetic instrument: its family, recipe, name and drawn parameters."""

    family: str
    kind: str
    index: int
    seed: int
    params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        """Stable instrument name, NSynth style (no '-', which separates pitch and velocity)."""
        return f"{self.family}_synthetic_{self.kind.replace('_', '')}{self.seed:02d}{self.index:03d}"

    @property
    def pitch_range(self) -> tuple[int, int]:
        return PITCH_RANGES[self.family]


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_preset(family: str, index: int, seed: int = 0) -> Preset:
    """Preset ``index`` of a family: its kind cycles through the family's kinds, its parameters are drawn."""
    if family not in VOICES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    kinds = tuple(VOICES[family])
    kind = kinds[index % len(kinds)]
    r = _rng("preset", seed, family, index)
    p = {
        "attack": float(r.uniform(0.002, 0.05)), "decay": float(r.uniform(0.1, 1.2)),
        "sustain": float(r.uniform(0.4, 1.0)), "release": float(r.uniform(0.1, 0.6)),
        "cutoff": float(r.uniform(2.0, 10.0)), "env_amount": float(r.uniform(1.0, 12.0)),
        "filter_decay": float(r.uniform(0.08, 1.0)), "resonance": float(r.uniform(0.7, 6.0)),
        "detune": float(r.uniform(0.002, 0.015)), "voices": int(r.integers(2, 8)),
        "vibrato_rate": float(r.uniform(4.0, 6.5)), "vibrato_depth": float(r.uniform(0.0, 0.006)),
        "vibrato_delay": float(r.uniform(0.1, 0.8)), "drive": float(r.uniform(0.0, 1.0)) ** 2 * 6,
        "pulse_width": float(r.uniform(0.1, 0.5)), "fm_ratio": float(r.choice([0.5, 1.0, 2.0, 3.0, 3.5, 14.0])),
        "fm_index": float(r.uniform(0.5, 6.0)), "fm_decay": float(r.uniform(0.1, 1.5)),
        "brightness": float(r.uniform(0.3, 0.99)), "damping": float(r.uniform(0.990, 0.9995)),
        "body": float(r.uniform(120, 400)), "drawbars": [float(x) for x in r.uniform(0, 1, 9) ** 2],
        "rotary": float(r.uniform(0, 1)) < 0.5, "vowel": str(r.choice(list(VOWELS))),
        "breath": float(r.uniform(0.02, 0.25)), "ratios": [float(x) for x in _modal_ratios(r)],
        "chorus": float(r.uniform(0, 1)) < 0.4, "reverb": float(r.uniform(0, 1)) < 0.35,
        "echo": float(r.uniform(0, 1)) < 0.2 and family == "synth_lead",
    }
    if kind in ("saw_brass", "fm_brass"):
        p["attack"] = float(r.uniform(0.03, 0.12))  # brass swells in
    if kind == "bowed_string":
        p["attack"] = float(r.uniform(0.05, 0.25))
        p["sustain"] = float(r.uniform(0.7, 1.0))
    if kind in ("saw_ensemble", "pwm_pad", "choir"):
        p["attack"] = float(r.uniform(0.08, 0.5))
        p["voices"] = int(r.integers(4, 9))
    return Preset(family, kind, index, seed, p)


def _modal_ratios(r: np.random.Generator) -> np.ndarray:
    base = r.choice(3)
    shapes = ([1.0, 2.76, 5.40, 8.93], [1.0, 3.99, 10.7, 18.6], [0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76])
    ratios = np.asarray(shapes[base])
    return ratios * r.uniform(0.98, 1.02, len(ratios))


# --------------------------------------------------------------------------- building blocks


def envelope(attack: float, decay: float, sustain: float, release: float, hold: int = HOLD) -> np.ndarray:
    """ADSR over 4 s; the release starts at ``hold`` from the level reached then."""
    t = T
    a = np.clip(t / max(attack, 1e-4), 0, 1)
    d = sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / max(decay, 1e-3))
    env = np.where(t < attack, a, d)
    level = env[min(hold, NUM_SAMPLES - 1)]
    after = level * np.exp(-np.maximum(t - hold / SR, 0) / max(release / 5, 1e-3))
    return np.where(np.arange(NUM_SAMPLES) < hold, env, after)


def frequency(f0: float, p: dict, glide: float = 0.0) -> np.ndarray:
    """Instantaneous frequency: delayed vibrato, optional small pitch blip at the start."""
    vib = p["vibrato_depth"] * np.sin(2 * np.pi * p["vibrato_rate"] * T) * np.clip((T - p["vibrato_delay"]) / 0.5, 0, 1)
    return f0 * (1 + vib + glide * np.exp(-T / 0.03))


def phase(freq: np.ndarray, start: float = 0.0) -> np.ndarray:
    return (start + np.cumsum(freq) / SR) % 1.0


def _blep(t: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """PolyBLEP residual that band-limits a unit step at phase 0."""
    out = np.zeros_like(t)
    lo = t < dt
    x = t[lo] / dt[lo]
    out[lo] = x + x - x * x - 1
    hi = t > 1 - dt
    x = (t[hi] - 1) / dt[hi]
    out[hi] = x * x + x + x + 1
    return out


def saw(freq: np.ndarray, start: float = 0.0) -> np.ndarray:
    ph, dt = phase(freq, start), freq / SR
    return 2 * ph - 1 - _blep(ph, dt)


def pulse(freq: np.ndarray, width: float | np.ndarray = 0.5, start: float = 0.0) -> np.ndarray:
    ph, dt = phase(freq, start), freq / SR
    shifted = (ph + 1 - width) % 1.0
    return (2 * ph - 1 - _blep(ph, dt)) - (2 * shifted - 1 - _blep(shifted, dt))


def sine(freq: np.ndarray, start: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * phase(freq, start))


def lowpass(x: np.ndarray, cutoff: np.ndarray, q: float = 0.707) -> np.ndarray:
    """Resonant 2-pole low-pass (RBJ biquad) whose cutoff follows ``cutoff`` [Hz] block by block."""
    cutoff = np.broadcast_to(np.asarray(cutoff, float), x.shape)
    out = np.empty_like(x)
    zi = None
    for i in range(0, len(x), BLOCK):
        fc = float(np.clip(cutoff[i], 30.0, 0.45 * SR))
        w = 2 * np.pi * fc / SR
        alpha = np.sin(w) / (2 * q)
        cw = np.cos(w)
        b = np.array([(1 - cw) / 2, 1 - cw, (1 - cw) / 2]) / (1 + alpha)
        a = np.array([1, -2 * cw / (1 + alpha), (1 - alpha) / (1 + alpha)])
        if zi is None:
            zi = lfilter_zi(b, a) * x[0]
        out[i : i + BLOCK], zi = lfilter(b, a, x[i : i + BLOCK], zi=zi)
    return out


def bandpass(x: np.ndarray, fc: float, bw: float) -> np.ndarray:
    """Two-pole resonator at fc with bandwidth bw (Hz), unit gain at fc."""
    r = np.exp(-np.pi * bw / SR)
    a = [1, -2 * r * np.cos(2 * np.pi * min(fc, 0.45 * SR) / SR), r * r]
    return lfilter([1 - r], a, x)


def karplus_strong(f0: float, excitation: np.ndarray, damping: float, brightness: float) -> np.ndarray:
    """A plucked string: a delay loop of length SR/f0 with a low-pass and an all-pass for the fraction."""
    period = SR / f0
    n = int(np.floor(period - 0.5 - 0.1))
    d = period - 0.5 - n  # left for the all-pass, in (0.1, 1.1)
    c = (1 - d) / (1 + d)
    g = damping
    # H(z) = (1 + c z^-1) / ((1 + c z^-1) - g z^-n * ((1-s) + s z^-1)(c + z^-1)), s: loop low-pass mix
    s = 0.5 * (1.5 - brightness)
    den = np.zeros(n + 3)
    den[0], den[1] = 1.0, c
    loop = np.convolve([1 - s, s], [c, 1.0]) * g
    den[n : n + 3] -= loop
    return lfilter([1.0, c], den, excitation)


def drive(x: np.ndarray, amount: float) -> np.ndarray:
    return np.tanh(x * (1 + amount)) / np.tanh(1 + amount) if amount > 0.05 else x


def chorus(x: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """A modulated delay (about 15 ms +- 3 ms) mixed with the dry sound."""
    delay = (0.015 + 0.003 * np.sin(2 * np.pi * r.uniform(0.3, 1.2) * T)) * SR
    idx = np.arange(len(x)) - delay
    return 0.7 * x + 0.5 * np.interp(idx, np.arange(len(x)), x, left=0.0)


def reverb(x: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """Convolution with decaying noise (a small room), kept within the 4 s."""
    n = int(r.uniform(0.3, 1.2) * SR)
    ir = r.standard_normal(n) * np.exp(-np.arange(n) / (n / 6.0))
    ir[0] = 0.0
    wet = fftconvolve(x, ir / np.abs(ir).sum() * 8)[: len(x)]
    return x + r.uniform(0.15, 0.4) * wet


def echo(x: np.ndarray, r: np.random.Generator) -> np.ndarray:
    d, fb = int(r.uniform(0.15, 0.4) * SR), r.uniform(0.2, 0.45)
    out = x.copy()
    for k in range(1, 5):
        out[d * k :] += x[: len(x) - d * k] * fb**k
    return out


# --------------------------------------------------------------------------- recipes


def _detuned_saws(f: np.ndarray, p: dict, r: np.random.Generator, voices: int | None = None) -> np.ndarray:
    voices = voices or p["voices"]
    spread = np.linspace(-1, 1, voices) * p["detune"]
    return sum(saw(f * (1 + s), r.uniform()) for s in spread) / np.sqrt(voices)


def _filter_env(f0: float, p: dict, bright: float, attack: float = 0.0) -> np.ndarray:
    env = np.exp(-T / p["filter_decay"]) * (1 - np.exp(-T / attack) if attack else 1)
    return f0 * (p["cutoff"] * (0.4 + 0.6 * bright) + p["env_amount"] * bright * env)


# --------------------------------------------------------------------------- the kinds, one function each
# A kind is registered with its family; a family's presets cycle through its kinds in the order written here.


def _saw_voice(p: dict, f0: float, bright: float, r: np.random.Generator, *, glide: float = 0.0,
               voices: int | None = None, filter_attack: float = 0.0, drive_amount: float | None = None) -> np.ndarray:
    x = _detuned_saws(frequency(f0, p, glide=glide), p, r, voices)
    x = lowpass(x, _filter_env(f0, p, bright, filter_attack), p["resonance"])
    return drive(x, p["drive"] if drive_amount is None else drive_amount)


# Seconds added to a preset's decay (0.1-1.2 s) for the ringing time constant of a struck FM kind at 440 Hz: without
# it their notes held flat to the release, where real mallets and electric pianos die away. Real-only models name
# the bells mallet 0.40 -> 0.60 of the time with it (bench/realism.py); the pianos 0.25 -> 0.21 (0.11 at 0.4 s).
RINGING = {"fm_bell": 0.8, "fm_epiano": 1.5}


def _fm(kind: str, p: dict, f0: float, bright: float) -> np.ndarray:
    f = frequency(f0, p)
    ratio = {"fm_bell": 3.5, "fm_epiano": p["fm_ratio"] if p["fm_ratio"] in (1.0, 14.0) else 1.0}.get(
        kind, p["fm_ratio"] if p["fm_ratio"] <= 3 else 1.0)
    index = p["fm_index"] * (0.3 + 0.7 * bright)
    decays = kind in ("fm_epiano", "fm_bell", "fm_bass")
    idx_env = index * (np.exp(-T / p["fm_decay"]) if decays else (1 - 0.5 * np.exp(-T / 0.1)) if kind == "fm_brass"
                       else np.ones_like(T))
    x = np.sin(2 * np.pi * phase(f) + idx_env * sine(f * ratio))
    if kind in RINGING:  # struck: the tone itself dies away, lower notes ringing longer (as in _modes)
        tau = (RINGING[kind] + p["decay"]) * (440 / f0) ** 0.3
        x = x * np.exp(-T / tau)
    return x


def _pluck(p: dict, f0: float, bright: float, r: np.random.Generator, damping: float) -> np.ndarray:
    burst = int(SR / f0 * 2)
    exc = np.zeros(NUM_SAMPLES)
    exc[:burst] = lowpass(r.uniform(-1, 1, burst), 1500 + 6000 * bright)[:burst]
    exc[:burst] -= exc[:burst].mean()  # a string has no net displacement: a mean here rings on as DC
    x = karplus_strong(f0, exc, damping, bright)
    return x + 0.3 * bandpass(x, p["body"], 80)


def _reed(p: dict, f0: float, bright: float, r: np.random.Generator, width: float) -> np.ndarray:
    x = pulse(frequency(f0, p), width, r.uniform())
    breath = bandpass(r.standard_normal(NUM_SAMPLES), f0 * 2, 300)
    return lowpass(x, f0 * (2 + 6 * bright), 0.9) + p["breath"] * 0.3 * breath


def _modes(f0: float, bright: float, r: np.random.Generator, ratios, tau: float) -> np.ndarray:
    x = np.zeros(NUM_SAMPLES)
    for i, ratio in enumerate(ratios):
        fm = f0 * ratio
        if fm < 0.45 * SR:
            x += (bright ** (i / 2) / (1 + i) * np.exp(-T / (tau / (1 + i) * (440 / f0) ** 0.3))
                  * np.sin(2 * np.pi * fm * T + r.uniform(0, 6.3)))
    return x


def _rotary(x: np.ndarray, p: dict, r: np.random.Generator) -> np.ndarray:
    return x * (1 + 0.25 * np.sin(2 * np.pi * r.uniform(5.5, 7) * T)) if p["rotary"] else x


def _flute(p: dict, f0: float, bright: float, r: np.random.Generator, breath_gain: float) -> np.ndarray:
    f = frequency(f0, p)
    tone = sine(f) + 0.15 * bright * sine(2 * f) + 0.05 * sine(3 * f)
    return tone + bandpass(r.standard_normal(NUM_SAMPLES), f0, f0 * 0.3) * p["breath"] * breath_gain


def _formant(p: dict, f0: float, bright: float, r: np.random.Generator, detunes: tuple[float, ...]) -> np.ndarray:
    f = frequency(f0, {**p, "vibrato_depth": max(p["vibrato_depth"], 0.003)})
    src = sum(saw(f * (1 + s), r.uniform()) for s in detunes)
    src = src + p["breath"] * r.standard_normal(NUM_SAMPLES)
    freqs, bws = VOWELS[p["vowel"]]
    shift = r.uniform(0.9, 1.15)
    return sum(bandpass(src, fc * shift, bw) * g for fc, bw, g in zip(freqs, bws, (1.0, 0.6 * bright + 0.2, 0.3)))


@voice_of("bass")
def acid_bass(p, f0, bright, r):
    return _saw_voice(p, f0, bright, r, voices=1), False


@voice_of("bass")
def sub_bass(p, f0, bright, r):
    f = frequency(f0, p)
    return sine(f) + 0.3 * bright * lowpass(pulse(f, 0.5), f0 * 4), False


@voice_of("bass")
def fm_bass(p, f0, bright, r):
    return _fm("fm_bass", p, f0, bright), False


@voice_of("bass")
def pluck_bass(p, f0, bright, r):
    return _pluck(p, f0, bright, r, min(p["damping"], 0.997)), True


@voice_of("brass")
def saw_brass(p, f0, bright, r):
    return _saw_voice(p, f0, bright, r, glide=0.01, filter_attack=0.05, drive_amount=0.0), False


@voice_of("brass")
def fm_brass(p, f0, bright, r):
    return _fm("fm_brass", p, f0, bright), False


@voice_of("flute")
def breathy_flute(p, f0, bright, r):
    return _flute(p, f0, bright, r, 2), False


@voice_of("flute")
def pan_flute(p, f0, bright, r):
    return _flute(p, f0, bright, r, 4), False


@voice_of("guitar")
def pluck_guitar(p, f0, bright, r):
    return _pluck(p, f0, bright, r, p["damping"]), True


@voice_of("guitar")
def drive_guitar(p, f0, bright, r):
    return drive(_pluck(p, f0, bright, r, p["damping"]) * 3, 2 + p["drive"]), False


@voice_of("keyboard")
def fm_epiano(p, f0, bright, r):
    return _fm("fm_epiano", p, f0, bright), True


@voice_of("keyboard")
def additive_piano(p, f0, bright, r):
    x = np.zeros(NUM_SAMPLES)
    inharm = 1e-4 * r.uniform(0.5, 3)
    for h in range(1, int(min(40, 0.45 * SR / f0)) + 1):
        fh = f0 * h * np.sqrt(1 + inharm * h * h)
        if fh >= 0.45 * SR:
            break
        x += (bright**(h / 6)) / h * np.exp(-T * (0.6 + 0.25 * h)) * np.sin(2 * np.pi * fh * T + r.uniform(0, 6.3))
    return x, True


@voice_of("keyboard")
def clav(p, f0, bright, r):
    x = lowpass(pulse(np.full(NUM_SAMPLES, f0), p["pulse_width"] * 0.5), f0 * (4 + 12 * bright), 2.5)
    return x * np.exp(-T / (0.3 + p["decay"])), True


@voice_of("mallet")
def modal_bell(p, f0, bright, r):
    return _modes(f0, bright, r, p["ratios"], 1.5), True


@voice_of("mallet")
def fm_bell(p, f0, bright, r):
    return _fm("fm_bell", p, f0, bright), True


@voice_of("mallet")
def marimba(p, f0, bright, r):
    return _modes(f0, bright, r, [1.0, 3.93, 9.2], 0.6), True


@voice_of("organ")
def drawbar_organ(p, f0, bright, r):
    x = np.zeros(NUM_SAMPLES)
    for level, ratio in zip(p["drawbars"], (0.5, 1.5, 1, 2, 3, 4, 5, 6, 8)):
        if f0 * ratio < 0.45 * SR:
            x += level * np.sin(2 * np.pi * f0 * ratio * T + r.uniform(0, 6.3))
    x += 0.05 * bright * np.exp(-T / 0.005) * r.standard_normal(NUM_SAMPLES)  # key click
    return _rotary(x, p, r), False


@voice_of("organ")
def combo_organ(p, f0, bright, r):
    x = lowpass(pulse(np.full(NUM_SAMPLES, f0), 0.5) + 0.5 * pulse(np.full(NUM_SAMPLES, 2 * f0), 0.3),
                f0 * (3 + 8 * bright))
    return _rotary(x, p, r), False


@voice_of("reed")
def pulse_reed(p, f0, bright, r):
    return _reed(p, f0, bright, r, p["pulse_width"]), False


@voice_of("reed")
def square_reed(p, f0, bright, r):
    return _reed(p, f0, bright, r, 0.5), False


@voice_of("string")
def saw_ensemble(p, f0, bright, r):
    return lowpass(_detuned_saws(frequency(f0, p), p, r), f0 * (2 + 10 * bright), 0.8), False


@voice_of("string")
def pwm_pad(p, f0, bright, r):
    f = frequency(f0, p)
    x = sum(pulse(f * (1 + s), 0.5 + 0.4 * np.sin(2 * np.pi * r.uniform(0.2, 1.0) * T + r.uniform(0, 6.3)),
                  r.uniform()) for s in (-p["detune"], 0, p["detune"])) / np.sqrt(3)
    return lowpass(x, f0 * (2 + 10 * bright), 0.8), False


@voice_of("string")
def bowed_string(p, f0, bright, r):
    """A bowed string: the bow's sawtooth (Helmholtz motion) with a player's wide vibrato, through the body's
    resonances (the air and wood modes below 1 kHz, the bridge hill near 2.5 kHz), plus bow noise."""
    depth = 0.006 + 0.012 * r.uniform()  # 0.1-0.3 semitone
    vib = depth * np.sin(2 * np.pi * r.uniform(4.8, 6.5) * T) * np.clip((T - r.uniform(0.1, 0.4)) / 0.4, 0, 1)
    x = saw(f0 * (1 + vib), r.uniform())
    size = r.uniform(0.5, 1.6)  # a cello's body is lower than a violin's
    modes = [(275 * size, 40), (460 * size, 60), (r.uniform(700, 1100), 150), (r.uniform(2200, 3000), 700),
             (r.uniform(3300, 4200), 900)]
    body = 0.3 * x + sum(r.uniform(0.4, 1.0) * bandpass(x, fc, bw) for fc, bw in modes)
    noise = lowpass(r.standard_normal(NUM_SAMPLES), 4000 + 4000 * bright) * p["breath"] * 0.5
    return lowpass(body + noise, min(f0 * (6 + 16 * bright), 0.45 * SR), 0.7), False


@voice_of("synth_lead")
def saw_lead(p, f0, bright, r):
    return _saw_voice(p, f0, bright, r), False


@voice_of("synth_lead")
def square_lead(p, f0, bright, r):
    x = pulse(frequency(f0, p), p["pulse_width"], r.uniform())
    return drive(lowpass(x, _filter_env(f0, p, bright), p["resonance"]), p["drive"]), False


@voice_of("synth_lead")
def sync_lead(p, f0, bright, r):
    f = frequency(f0, p)
    slave = f * (1.5 + 2.5 * bright * np.exp(-T / p["filter_decay"]) + 0.5)
    ph_master = phase(f)
    ph = np.cumsum(slave / SR)
    reset = np.maximum.accumulate(np.where(np.diff(ph_master, prepend=1.0) < 0, ph, 0.0))
    x = 2 * ((ph - reset) % 1.0) - 1
    return drive(lowpass(x, f0 * 12, 0.8), p["drive"]), False


@voice_of("synth_lead")
def fm_lead(p, f0, bright, r):
    return _fm("fm_lead", p, f0, bright), False


@voice_of("vocal")
def formant_voice(p, f0, bright, r):
    return _formant(p, f0, bright, r, (0,)), False


@voice_of("vocal")
def choir(p, f0, bright, r):
    return _formant(p, f0, bright, r, (-0.006, 0, 0.007)), False


DC_BLOCK = 1 - 2 * np.pi * 10 / SR  # one-pole high-pass at 10 Hz: -0.4 dB at 33 Hz, the lowest bass note (MIDI 24)


def render_note(preset: Preset, pitch: int, velocity: int) -> np.ndarray:
    """One 4 s note, float32, peak at most 1 (the caller scales louder renders down, never clips)."""
    if not 0 <= pitch <= 127 or not 1 <= velocity <= 127:
        raise ValueError(f"pitch {pitch} / velocity {velocity}: MIDI pitch 0..127 and velocity 1..127")
    p = preset.params
    r = _rng("note", preset.seed, preset.family, preset.index, pitch, velocity)
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    bright = (velocity / 127) ** 0.7 * p["brightness"] + (1 - p["brightness"]) * 0.3
    x, decays = VOICES[preset.family][preset.kind](p, f0, bright, r)
    if decays:  # percussive sounds decay by themselves; the release only damps what is left
        env = envelope(0.001, 10.0, 1.0, p["release"])
    else:
        env = envelope(p["attack"], p["decay"], p["sustain"], p["release"])
    x = x * env
    if p["chorus"]:
        x = chorus(x, r)
    if p["echo"]:
        x = echo(x, r)
    if p["reverb"]:
        x = reverb(x, r)
    x = lfilter([1.0, -1.0], [1.0, -DC_BLOCK], x)  # AC-coupled like any instrument's output: no DC offset
    peak = float(np.abs(x).max())
    level = 0.9 * (velocity / 127) ** 1.2  # velocity sets the level too; headroom below full scale
    return (x / peak * level if peak > 0 else x).astype(np.float32)
