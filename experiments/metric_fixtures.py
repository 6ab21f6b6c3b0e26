"""The fixture of tests/test_metrics.py's agreement checks: KID by torch-fidelity and precision /
recall / density / coverage by prdc (Naeem et al.'s own package), computed on fixed random
features that are saved beside their results.

Runs in a venv with PyTorch (not this package's):

  python3.11 -m venv /tmp/peers && /tmp/peers/bin/pip install torch torch-fidelity==0.3.0 prdc==0.2
  /tmp/peers/bin/python experiments/metric_fixtures.py --out=tests/fixtures/metrics/peers.npz

(Versions used: Python 3.11, torch 2.14.1, torch-fidelity 0.3.0, prdc 0.2, numpy 1.26.4.)
"""

import argparse

import numpy as np


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  import prdc
  import torch
  from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

  rng = np.random.default_rng(0)
  dim = 32
  # Two overlapping Gaussians of another scale and mean: every metric away from its extremes.
  real = rng.normal(size=(1100, dim)).astype(np.float32)
  fake = (1.2 * rng.normal(size=(900, dim)) + 0.3).astype(np.float32)
  subsets, subset_size, seed = 20, 400, 2020
  kid = kid_features_to_metric(
    torch.from_numpy(fake),
    torch.from_numpy(real),
    kid_subsets=subsets,
    kid_subset_size=subset_size,
    rng_seed=seed,
    verbose=False,
  )
  k = 5
  scores = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
  np.savez_compressed(
    args.out,
    real=real,
    fake=fake,
    kid_subsets=subsets,
    kid_subset_size=subset_size,
    kid_seed=seed,
    kid_mean=kid[KEY_METRIC_KID_MEAN],
    kid_std=kid[KEY_METRIC_KID_STD],
    k=k,
    **{name: float(value) for name, value in scores.items()},
  )
  print({"kid": kid, "prdc": scores})


if __name__ == "__main__":
  main()
