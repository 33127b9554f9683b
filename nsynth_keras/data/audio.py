"""Reading audio files (wav, flac, ogg, mp3) into 4-second, 16 kHz, mono float32 notes, with clear errors."""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from nsynth_keras.core.config import NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.core.errors import AudioError


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


# libsndfile's formats that every command reads (the same files the demo page decodes); TF's fast path takes wav.
AUDIO_FORMATS = ("WAV", "WAVEX", "FLAC", "OGG", "MP3")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MIN_RATE, MAX_RATE = 1_000, 384_000  # sample rates outside this are a broken (or hostile) header
MAX_ABS_SAMPLE = 1e4  # float samples far outside full scale [-1, 1] overflow the float32 log-mel power
# predict --hop streams recordings window by window (memory does not grow with length); this bounds the
# work: samples x channels of the file as stored, one hour of 96 kHz stereo.
MAX_RECORDING_SAMPLES = 3600 * 96_000 * 2


def probe_wav(path: str) -> WavInfo:
    """Read a wav header; raise AudioError if the file is missing, empty, unreadable or implausible."""
    path = str(path)
    if not os.path.exists(path):
        if os.path.islink(path):
            raise AudioError(path, f"a symbolic link that leads to no file (to {os.readlink(path)}: broken or a loop)")
        raise AudioError(path, "file not found")
    if os.path.isdir(path):
        raise AudioError(path, "is a folder, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(path)
    except Exception as err:  # libsndfile reports many kinds of corruption
        raise AudioError(path, f"not a readable audio file ({_last_line(err)})") from None
    if info.format not in AUDIO_FORMATS:
        raise AudioError(path, f"not a wav, flac, ogg or mp3 file (format {info.format})")
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
        fixups.append(_padded(seconds))
    elif info.frames * SAMPLE_RATE > NUM_SAMPLES * info.sample_rate:
        fixups.append(f"cropped {seconds:.2f} s to the first {NUM_SAMPLES / SAMPLE_RATE:.0f} s")
    wave = np.pad(wave[:NUM_SAMPLES], (0, max(0, NUM_SAMPLES - wave.shape[0])))
    return Clip(np.asarray(wave, np.float32), str(path), info.sample_rate, info.channels, info.frames, fixups)


def check_samples(values: np.ndarray, path: str) -> None:
    """Samples must be finite and near audio full scale (far outside it overflows the log-mel power)."""
    if not np.all(np.isfinite(values)):
        raise AudioError(path, "contains NaN or infinite samples")
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(path, f"samples reach {peak:.3g}, far outside audio full scale [-1, 1]")


def window_starts(num_samples: int, hop_seconds: float) -> list[int]:
    """Start samples (16 kHz) of the successive 4 s windows of a recording, every hop_seconds; only full
    windows (as MediaPipe's AudioClassifier makes them), and one padded window for a recording under 4 s."""
    if not (math.isfinite(hop_seconds) and hop_seconds > 0):
        raise ValueError(f"--hop {hop_seconds}: must be a finite number of seconds above 0")
    hop = max(1, round(hop_seconds * SAMPLE_RATE))
    return list(range(0, max(num_samples - NUM_SAMPLES, 0) + 1, hop))


@dataclass
class Recording:
    """A probed wav to classify window by window, and its length at 16 kHz."""

    info: WavInfo
    num_samples: int  # at 16 kHz
    fixups: list[str]


def open_recording(path: str, max_samples: int = MAX_RECORDING_SAMPLES) -> Recording:
    info = probe_wav(path)
    stored = info.frames * info.channels
    if stored > max_samples:
        raise AudioError(str(path), f"{stored:,} samples ({info.frames / info.sample_rate:.0f} s x {info.channels} "
                                    f"channels at {info.sample_rate} Hz); up to {max_samples:,} are classified "
                                    "(split it first)")
    num = -(-info.frames * SAMPLE_RATE // info.sample_rate)
    fixups = _conversion_fixups(info.channels, info.sample_rate)
    if num < NUM_SAMPLES:
        fixups.append(_padded(info.frames / info.sample_rate))
    return Recording(info, num, fixups)


def recording_windows(rec: Recording, hop_seconds: float, batch: int = 64):
    """Yield (start samples, windows [n, 64000] float32) of a recording, at most ``batch`` windows at a time.

    Only the frames a window needs are read (plus a margin for the resampling filter), so memory is
    bounded by the batch, not by the recording's length. A window equals the same samples of the whole
    file resampled at once (the filter's support lies inside the margin)."""
    info, path = rec.info, rec.info.path
    rate = info.sample_rate
    g = math.gcd(rate, SAMPLE_RATE)
    up, down = SAMPLE_RATE // g, rate // g
    margin = 0 if rate == SAMPLE_RATE else 20 * max(up, down) // up + down  # > the filter's half-length
    starts = window_starts(rec.num_samples, hop_seconds)
    try:
        f = sf.SoundFile(path)
    except Exception as err:
        raise AudioError(path, f"cannot decode audio ({_last_line(err)})") from None
    with f:
        for i in range(0, len(starts), batch):
            chunk = starts[i : i + batch]
            windows = np.zeros((len(chunk), NUM_SAMPLES), np.float32)
            for j, start in enumerate(chunk):
                # Source frames from a multiple of `down` (so 16 kHz samples line up exactly) to the window's end.
                first = max(0, (start * down // up - margin) // down * down)
                last = min(info.frames, -(-(start + NUM_SAMPLES) * down // up) + margin)
                try:
                    f.seek(first)
                    data = f.read(last - first, dtype="float32", always_2d=True)
                except Exception as err:
                    raise AudioError(path, f"cannot decode audio ({_last_line(err)})") from None
                check_samples(data, path)
                wave = data.mean(axis=1)
                if rate != SAMPLE_RATE:
                    wave = resample_poly(wave, up, down).astype(np.float32)
                offset = start - first * up // down
                piece = wave[offset : offset + NUM_SAMPLES]
                windows[j, : len(piece)] = piece
            yield chunk, windows


def _decode(info: WavInfo, seconds: float) -> tuple[np.ndarray, list[str]]:
    """The first `seconds` of a probed wav as 16 kHz mono float32, checked; and the fix-ups made."""
    path, rate = info.path, info.sample_rate
    needed = math.ceil(seconds * rate) + (rate // 100 if rate != SAMPLE_RATE else 0)
    try:
        data, rate = sf.read(path, frames=needed, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"cannot decode audio ({_last_line(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples")
    check_samples(data, path)
    wave = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        wave = resample_poly(wave, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return wave, _conversion_fixups(data.shape[1], rate)


def _conversion_fixups(channels: int, rate: int) -> list[str]:
    """What fitting a file to 16 kHz mono did to it, in the words every command prints."""
    return ([f"mixed {channels} channels to mono"] if channels > 1 else []) + (
        [f"resampled {rate} Hz to {SAMPLE_RATE} Hz"] if rate != SAMPLE_RATE else [])


def _padded(seconds: float) -> str:
    return f"zero-padded {seconds:.2f} s to {NUM_SAMPLES / SAMPLE_RATE:.0f} s"


def _last_line(err: Exception) -> str:
    """libsndfile puts the reason on the last line of its message."""
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
