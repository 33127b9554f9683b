"""A trained model put to use: one classifier interface over Keras, SavedModel and TFLite (inference), the
TFLite export with its metadata (tflite), the on-device check in LiteRT, MediaPipe and the browser
(ondevice), and the demo page's server (webpage)."""
