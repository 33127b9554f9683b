"""Constants shared by every module: the one place they are defined."""

SAMPLE_RATE = 16_000
CLIP_SECONDS = 4
NUM_SAMPLES = SAMPLE_RATE * CLIP_SECONDS  # 64,000 samples per NSynth note
HOLD_SECONDS = 3  # NSynth plays each note held 3 s, then released for the last second

# Log-mel frontend. tfio.audio.spectrogram pads the end, so it yields
# ceil(NUM_SAMPLES / HOP_LENGTH) = 64 frames: 64x64 with no image resize.
N_FFT = 2048  # 128 ms window: 7.8 Hz bins resolve the lowest bass notes
HOP_LENGTH = 1000
N_MELS = 64
N_FRAMES = -(-NUM_SAMPLES // HOP_LENGTH)
F_MIN = 20.0
F_MAX = SAMPLE_RATE / 2
TOP_DB = 80.0
INPUT_SHAPE = (N_FRAMES, N_MELS, 1)

# Instrument families in NSynth id order (instrument_family 0..10).
FAMILIES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet",
    "organ", "reed", "string", "synth_lead", "vocal",
)
NUM_CLASSES = len(FAMILIES)
# Instrument sources in NSynth id order (instrument_source 0..2).
SOURCES = ("acoustic", "electronic", "synthetic")

NUM_QUALITIES = 10  # NSynth's note qualities (bright, dark, distortion, ...): a 0/1 vector per note

SPLITS = ("train", "valid", "test")
DEFAULT_DATA_DIR = "../shared/nsynth"
DEFAULT_RUNS_DIR = "saved_models"
