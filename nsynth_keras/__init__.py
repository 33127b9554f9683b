"""Classify the instrument family of NSynth notes with Keras and TensorFlow."""

import os
import platform

# TensorFlow reads these once, when it loads, so they are set here, before any module imports it.
# Its C++ start-up chatter (CUDA factory "errors" on CPU machines) buries the output;
# set TF_CPP_MIN_LOG_LEVEL=0 to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow turns its oneDNN kernels on by itself only on x86 CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on an
# AVX2-only CPU it falls back to Eigen, which trained the homework CNN 1.6x slower there (bench/speed.py, README).
# Set TF_ENABLE_ONEDNN_OPTS=0 to get TensorFlow's own choice back.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each busy thread a malloc arena of its own (up to 8 per core), and memory freed in one arena
    is not reused by another: with the 10,000-log-mel reshuffle buffer of before, peak memory grew with every epoch.
    With today's 1,000 the gain is small and not always there (993 notes, 10 epochs: 839-848 vs 850-908 MiB with
    16 arenas); the scale figures were measured with two. Set MALLOC_ARENA_MAX yourself to choose (glibc reads it
    at start-up; this is skipped then)."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.system() != "Linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # -8: M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to limit
        pass


_limit_malloc_arenas()

__version__ = "0.1.0"
