"""Notes made, not recorded: the procedural synthesizer (synth), SoundFont and synthesizer rendering into
the NSynth json/wav layout (rendering), and NSynth-release files for the real TFDS builder (release)."""
