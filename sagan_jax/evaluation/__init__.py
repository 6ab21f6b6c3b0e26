"""Evaluation: FID Inception network, metrics (FID, IS, intra-FID) and the Fashion-MNIST classifier for fid_fmnist."""
