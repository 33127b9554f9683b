"""Reading wav files into 4-second, 16 kHz, mono float32 notes, with clear errors."""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from nsynth_keras.config import NUM_SAMPLES, SAMPLE_RATE


class AudioError(ValueError):
    """A wav file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class Clip:
    """A decoded note and what was done to fit it to the model's input."""

    waveform: np.ndarray  # float32 [NUM_SAMPLES]
    path: str
    sample_rate: int
    channels: int
    num_samples: int
    fixups: list[str] = field(default_factory=list)


@dataclass
class WavInfo:
    """Header facts about a wav file; `standard` means TF's decode_wav reads it as is."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    plain_wav: bool = True  # plain RIFF/WAVE whose chunks tile the file (what TF decodes)

    @property
    def standard(self) -> bool:
        return (self.plain_wav and self.sample_rate == SAMPLE_RATE and self.channels == 1
                and self.subtype == "PCM_16")


MIN_RATE, MAX_RATE = 1_000, 384_000  # sample rates outside this are a broken (or hostile) header
MAX_ABS_SAMPLE = 1e4  # float samples far outside full scale [-1, 1] overflow the float32 log-mel power
MAX_RECORDING_SECONDS = 3600.0  # predict --hop reads whole recordings: an hour is 230 MB of float32


def probe_wav(path: str) -> WavInfo:
    """Read a wav header; raise AudioError if the file is missing, empty, unreadable or implausible."""
    path = str(path)
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.isdir(path):
        raise AudioError(path, "is a folder, not a wav file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(path)
    except Exception as err:  # libsndfile reports many kinds of corruption
        raise AudioError(path, f"not a readable audio file ({_first_line(err)})") from None
    if info.format != "WAV" and info.format != "WAVEX":
        raise AudioError(path, f"not a wav file (format {info.format})")
    if info.frames <= 0:
        raise AudioError(path, "no audio samples (header only or truncated)")
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioError(path, f"sample rate {info.samplerate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz "
                               "(a broken header?)")
    canonical = _canonical_pcm16(path)
    return WavInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.subtype,
                   info.format == "WAV" and canonical)


def _canonical_pcm16(path: str) -> bool:
    """True if TF's strict decode_wav reads the file as is: RIFF/WAVE, a 16- or 18-byte PCM 'fmt '
    chunk first, one 'data' chunk holding whole frames, even-sized chunks that tile the file.
    Raise AudioError if the data chunk is truncated. Anything else takes libsndfile's path."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False  # RF64 and friends: leave them to libsndfile
        offset, block_align, data_chunks, canonical = 12, 0, 0, True
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = f.read(4), int.from_bytes(f.read(4), "little")
            if chunk_id == b"data":
                if offset + 8 + chunk_size > size:
                    raise AudioError(path, f"truncated: the data chunk declares {chunk_size} bytes but the file "
                                           f"has {size - offset - 8}")
                data_chunks += 1
                canonical &= block_align > 0 and chunk_size % block_align == 0
            elif chunk_id == b"fmt " and offset == 12 and chunk_size in (16, 18):
                fields = f.read(16)
                if len(fields) == 16:
                    audio_format, channels, rate, byte_rate, block, bits = struct.unpack("<HHIIHH", fields)
                    if audio_format == 1 and bits == 16 and channels >= 1 and block == 2 * channels \
                            and byte_rate == block * rate:
                        block_align = block
            canonical &= chunk_size % 2 == 0
            offset += 8 + chunk_size + (chunk_size & 1)
        return canonical and offset == size and block_align > 0 and data_chunks == 1


def read_wav(path: str) -> Clip:
    """Decode any wav as a 16 kHz mono note of exactly 4 s.

    Stereo is mixed to mono, other sample rates are resampled, and the note is
    zero-padded or cropped to 4 s; `Clip.fixups` says which of these happened.
    Only the first 4 s (and a little more for the resampling filter) are read.
    """
    info = probe_wav(path)
    wave, fixups = _decode(info, NUM_SAMPLES / SAMPLE_RATE)
    seconds = info.frames / info.sample_rate
    if seconds * SAMPLE_RATE < NUM_SAMPLES:
        fixups.append(f"zero-padded {seconds:.2f} s to {NUM_SAMPLES / SAMPLE_RATE:.0f} s")
    elif info.frames * SAMPLE_RATE > NUM_SAMPLES * info.sample_rate:
        fixups.append(f"cropped {seconds:.2f} s to the first {NUM_SAMPLES / SAMPLE_RATE:.0f} s")
    wave = np.pad(wave[:NUM_SAMPLES], (0, max(0, NUM_SAMPLES - wave.shape[0])))
    return Clip(np.asarray(wave, np.float32), str(path), info.sample_rate, info.channels, info.frames, fixups)


def read_recording(path: str, max_seconds: float = MAX_RECORDING_SECONDS) -> Clip:
    """Decode a whole wav (a recording of several notes) as 16 kHz mono, at least 4 s long (padded)."""
    info = probe_wav(path)
    seconds = info.frames / info.sample_rate
    if seconds > max_seconds:
        raise AudioError(str(path), f"{seconds:.0f} s long; recordings up to {max_seconds:.0f} s are classified "
                                    "(split it first)")
    wave, fixups = _decode(info, seconds)
    if wave.shape[0] < NUM_SAMPLES:
        fixups.append(f"zero-padded {seconds:.2f} s to {NUM_SAMPLES / SAMPLE_RATE:.0f} s")
        wave = np.pad(wave, (0, NUM_SAMPLES - wave.shape[0]))
    return Clip(np.asarray(wave, np.float32), str(path), info.sample_rate, info.channels, info.frames, fixups)


def _decode(info: WavInfo, seconds: float) -> tuple[np.ndarray, list[str]]:
    """The first `seconds` of a probed wav as 16 kHz mono float32, checked; and the fix-ups made."""
    path, rate = info.path, info.sample_rate
    needed = math.ceil(seconds * rate) + (rate // 100 if rate != SAMPLE_RATE else 0)
    try:
        data, rate = sf.read(path, frames=needed, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"cannot decode audio ({_first_line(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(path, f"samples reach {peak:.3g}, far outside audio full scale [-1, 1]")
    fixups = []
    if data.shape[1] > 1:
        fixups.append(f"mixed {data.shape[1]} channels to mono")
    wave = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        wave = resample_poly(wave, SAMPLE_RATE // g, rate // g).astype(np.float32)
        fixups.append(f"resampled {rate} Hz to {SAMPLE_RATE} Hz")
    return wave, fixups


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
