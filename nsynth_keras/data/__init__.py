"""From files to features: audio decoding and checks (audio), the note table of a json/wav folder (notes,
no TensorFlow), the leakage check of extra folders (leakage), every source as one tf.data dataset of notes
(datasets: DataSpec, make_dataset), the log-mel frontend and augmentations (features), the training and
evaluation pipelines (pipeline) and the twin audit of valid/test against training (twins)."""
