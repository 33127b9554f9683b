"""What a model is and where a run keeps it: the architectures and their registry (cnn) and the run-folder
contract (runs: file names, the recorded frontend and labels, loading a trained model)."""
