"""The facts and rules every wing shares, with no TensorFlow: the NSynth constants and frontend defaults
(config), the project's errors, safe file writing (files) and the one declaration of every setting that
makes its flag, help, bounds and config.json entry (settings)."""
