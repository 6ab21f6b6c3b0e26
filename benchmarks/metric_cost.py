"""Seconds each Inception-space metric takes on the host at a given sample count, on random
2048-d features (the cost depends on the counts and the dimension, not on the values).

  python benchmarks/metric_cost.py --num=10000 [--num=50000] [--metrics=fid,kid,prdc]

Real and generated sets of the same size; the reference's k-NN radii are computed once and
cached by the evaluator, so prdc is timed with and without them.
"""

import argparse
import time

import numpy as np

from sagan_jax.evaluation import metrics


def timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(num: int, dim: int, names) -> dict:
  rng = np.random.default_rng(0)
  real = rng.standard_normal((num, dim), np.float32)
  fake = (rng.standard_normal((num, dim), np.float32) + 0.1).astype(np.float32)
  row = {"num": num}
  if "fid" in names:
    stats = metrics.gaussian_stats(real)
    row["fid_s"] = timed(lambda: metrics.frechet_distance(*metrics.gaussian_stats(fake), *stats))
  if "kid" in names:
    row["kid_s"] = timed(lambda: metrics.kid(fake, real, subsets=100, subset_size=1000))
  if "prdc" in names:
    radii = {}
    row["knn_radii_of_the_reference_s"] = timed(lambda: radii.setdefault("r", metrics.knn_sq_radii(real)))
    row["prdc_with_cached_radii_s"] = timed(lambda: metrics.prdc(real, fake, real_sq_radii=radii["r"]))
  return row


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num", type=int, action="append", default=None)
  parser.add_argument("--metrics", default="fid,kid,prdc")
  parser.add_argument("--dim", type=int, default=2048)
  args = parser.parse_args()
  for num in args.num or [10_000]:
    row = measure(num, args.dim, args.metrics.split(","))
    print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)


if __name__ == "__main__":
  main()
