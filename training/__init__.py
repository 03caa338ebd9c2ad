"""Training on the core: EMNIST data (IDX files, the evaluation protocol, the official download),
the training loop, augmentation, typeset glyphs, fine-tuning, batch-norm recalibration and
evaluation of a checkpoint or an archive."""
