"""Training code for the l3ic models (TensorFlow/Keras; install with `pip install .[train]`)."""
