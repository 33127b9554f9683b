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

__version__ = "0.1.0"
