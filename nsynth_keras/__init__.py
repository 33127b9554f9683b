"""Classify the instrument family of NSynth notes with Keras and TensorFlow."""

import os

# TensorFlow's C++ start-up chatter (CUDA factory "errors" on CPU machines) buries the output;
# set TF_CPP_MIN_LOG_LEVEL=0 to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
