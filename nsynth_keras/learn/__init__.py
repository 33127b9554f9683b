"""Training: one run from a TrainConfig (training), its multi-worker form (distributed) and the keras-tuner
search (tuning). The top of the library: it uses every wing below it."""
