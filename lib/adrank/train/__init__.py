"""Training on Horovod ranks (TF2): input, models, gradient paths, loop and launch."""
