"""Evaluation: the metric registry, feature spaces (the FID Inception, the Fashion-MNIST
classifier), cached reference statistics, the metrics' math, and the evaluator."""
