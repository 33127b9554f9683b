"""A trained model put to use: one classifier interface over Keras, SavedModel and TFLite (inference), many
files and long recordings through it and the predict CSV (prediction), the TFLite export with its metadata
(tflite), the on-device check in LiteRT, MediaPipe and the browser (ondevice), and the demo page's server
(webpage)."""
