"""The training data: preprocessing, the resumable order, one module per source, the pipeline."""
