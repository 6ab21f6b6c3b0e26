"""FID, Inception Score and intra-FID as pure functions of features and logits (numpy/scipy).

Everything is computed in float64 on the host: the matrix square root of 2048x2048
covariances is where FID loses precision, and it runs once per evaluation.
"""
import logging
from collections.abc import Mapping

import numpy as np
from scipy import linalg
from scipy import special


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and covariance (D, D) of (N, D) features, float64, unbiased like np.cov."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"need at least two feature vectors of shape (N, D), got {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½), as pytorch-fid computes it.

  When sqrtm of the product is not finite (near-singular covariances), eps·I is added to
  both covariances; a small imaginary part from rounding is dropped, a large one raises.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"the two Gaussians differ in dimension: means {mu1.shape} vs {mu2.shape}, "
                     f"covariances {sigma1.shape} vs {sigma2.shape}.")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("FID: singular covariance product; adding %g to the diagonals", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"FID: sqrtm has an imaginary component of {np.max(np.abs(covmean.imag))}; "
                       "the covariances are not valid.")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits, num_splits: int = 10,
                    num_classes: int | None = None) -> tuple[float, float]:
  """Mean and std over `num_splits` splits of exp(E_x KL(p(y|x) || p(y))).

  p(y|x) is the softmax over the first `num_classes` logits; None (default) uses all of
  them, i.e. the 1008-way softmax of the TF 2015-12-05 graph that the original IS code
  (Salimans et al.) and most TF implementations use. Pass 1000 to drop the 8 unused
  classes. Splits are contiguous slices [i·N/k, (i+1)·N/k), as in the original code.
  """
  logits = np.asarray(logits, np.float64)[:, :num_classes]
  n = len(logits)
  if n < num_splits:
    raise ValueError(f"inception_score needs at least num_splits={num_splits} images, got {n}.")
  log_p = special.log_softmax(logits, axis=1)
  scores = []
  for i in range(num_splits):
    part = log_p[i * n // num_splits:(i + 1) * n // num_splits]
    log_py = special.logsumexp(part, axis=0) - np.log(len(part))  # log of the mean p(y|x)
    kl = np.sum(np.exp(part) * (part - log_py), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))


def intra_fid(features_by_class_fake: Mapping[int, np.ndarray],
              stats_by_class_real: Mapping[int, tuple[np.ndarray, np.ndarray]]
              ) -> tuple[float, dict[int, float]]:
  """Mean over classes of the FID between each class's fake features and its real stats.

  Returns the mean and the per-class FIDs (to spot collapsed classes).
  """
  if set(features_by_class_fake) != set(stats_by_class_real):
    missing = sorted(set(features_by_class_fake) ^ set(stats_by_class_real))
    raise ValueError(f"intra_fid needs the same classes on both sides; classes {missing[:5]} "
                     "appear on one side only.")
  per_class = {
      label: frechet_distance(*gaussian_stats(features), *stats_by_class_real[label])
      for label, features in features_by_class_fake.items()
  }
  return float(np.mean(list(per_class.values()))), per_class
