"""Classify the instrument family of NSynth notes with Keras and TensorFlow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides the commands' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
