"""FID, KID, Inception Score, intra-FID, class accuracy and precision / recall / density /
coverage as pure functions of features, logits and labels (numpy/scipy).

Everything is computed in float64 on the host: the matrix square root of 2048x2048
covariances is where FID loses precision, and it runs once per evaluation. The k-NN
metrics compute their pairwise distances in row chunks of bounded size, so 10k x 10k
sets need tens of MiB, not the GiB of the full distance matrix.
"""

import logging
from collections.abc import Mapping

import numpy as np
from scipy import linalg, special


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
    raise ValueError(
      f"the two Gaussians differ in dimension: means {mu1.shape} vs {mu2.shape}, "
      f"covariances {sigma1.shape} vs {sigma2.shape}."
    )
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("FID: singular covariance product; adding %g to the diagonals", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(
        f"FID: sqrtm has an imaginary component of {np.max(np.abs(covmean.imag))}; "
        "the covariances are not valid."
      )
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits, num_splits: int = 10, num_classes: int | None = None) -> tuple[float, float]:
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
    part = log_p[i * n // num_splits : (i + 1) * n // num_splits]
    log_py = special.logsumexp(part, axis=0) - np.log(len(part))  # log of the mean p(y|x)
    kl = np.sum(np.exp(part) * (part - log_py), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))


def intra_fid(
  features_by_class_fake: Mapping[int, np.ndarray],
  stats_by_class_real: Mapping[int, tuple[np.ndarray, np.ndarray]],
) -> tuple[float, dict[int, float]]:
  """Mean over classes of the FID between each class's fake features and its real stats.

  Returns the mean and the per-class FIDs (to spot collapsed classes).
  """
  if set(features_by_class_fake) != set(stats_by_class_real):
    missing = sorted(set(features_by_class_fake) ^ set(stats_by_class_real))
    raise ValueError(
      f"intra_fid needs the same classes on both sides; classes {missing[:5]} appear on one side only."
    )
  per_class = {
    label: frechet_distance(*gaussian_stats(features), *stats_by_class_real[label])
    for label, features in features_by_class_fake.items()
  }
  return float(np.mean(list(per_class.values()))), per_class


def class_accuracy(logits, labels, num_classes: int) -> tuple[float, list[float | None], np.ndarray]:
  """How often a classifier assigns a sample to the label it was conditioned on.

  Returns the fraction of all samples whose argmax logit is their label, that fraction
  per label 0..num_classes-1 (None for a label no sample has), and the confusion counts
  (num_classes, logits' width): row = conditioning label, column = predicted class.
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  if logits.ndim != 2 or labels.shape != (len(logits),) or not len(labels):
    raise ValueError(f"need logits (N, K) and labels (N,) with N > 0, got {logits.shape} and {labels.shape}.")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}].")
  predicted = np.argmax(logits, axis=1)
  correct = predicted == labels
  confusion = np.zeros((num_classes, logits.shape[1]), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_class = [
    float(correct[labels == c].mean()) if np.any(labels == c) else None for c in range(num_classes)
  ]
  return float(correct.mean()), per_class, confusion


# k-NN metrics: Kynkäänniemi et al. 2019 (precision, recall), Naeem et al. 2020 (density, coverage)

PRDC_K = 5  # Naeem et al.'s choice (with 10k real and 10k fake samples)
MAX_CHUNK_ELEMENTS = 1 << 22  # distances held at once: 32 MiB of float64


def _row_chunks(a: np.ndarray, b: np.ndarray, max_elements: int):
  """(start, squared Euclidean distances (rows, len(b)) float64) over row chunks of a.

  The same chunking and the same operations for the same inputs: identical sets give
  bit-identical distances whichever function asks, so a tie stays a tie.
  """
  rows = max(1, max_elements // max(1, len(b)))
  b_sq = np.einsum("ij,ij->i", b, b)
  for start in range(0, len(a), rows):
    chunk = a[start : start + rows]
    d2 = chunk @ b.T  # in place from here: one (rows, len(b)) array per chunk
    d2 *= -2.0
    d2 += np.einsum("ij,ij->i", chunk, chunk)[:, None]
    d2 += b_sq[None, :]
    yield start, np.maximum(d2, 0.0, out=d2)


def _as_features(features, name: str) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f"{name} must be (N, D) feature vectors, got shape {features.shape}.")
  return features


def knn_sq_radii(features, k: int = PRDC_K, max_chunk_elements: int = MAX_CHUNK_ELEMENTS) -> np.ndarray:
  """Squared distance (N,) float64 of each point to its k-th nearest *other* point.

  The radius of the point's ball in the k-NN manifold estimate (NND_k in both papers):
  the (k+1)-th smallest distance to the set, the point itself (distance 0) included.
  """
  features = _as_features(features, "features")
  if not 1 <= k < len(features):
    raise ValueError(f"k-NN radii with k={k} need more than k points, got {len(features)}.")
  radii = np.empty(len(features))
  for start, d2 in _row_chunks(features, features, max_chunk_elements):
    rows = np.arange(len(d2))
    d2[rows, start + rows] = 0.0  # itself, exactly (the expansion leaves rounding there)
    radii[start : start + len(d2)] = np.partition(d2, k, axis=1)[:, k]
  return radii


def prdc(
  real_features,
  fake_features,
  k: int = PRDC_K,
  real_sq_radii=None,
  max_chunk_elements: int = MAX_CHUNK_ELEMENTS,
) -> dict[str, float]:
  """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

  With B(x, r) the open ball and NND_k(x) the distance from x to its k-th nearest
  neighbour within its own set (real X_1..X_N, fake Y_1..Y_M):
    precision = 1/M Σ_j 1[Y_j ∈ ∪_i B(X_i, NND_k(X_i))]   fake samples on the real manifold
    recall    = 1/N Σ_i 1[X_i ∈ ∪_j B(Y_j, NND_k(Y_j))]   real samples on the fake manifold
    density   = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]  real balls per fake sample, / k
    coverage  = 1/N Σ_i 1[∃ j: Y_j ∈ B(X_i, NND_k(X_i))]   real balls holding a fake sample
  Strict "<" as in Naeem et al.'s reference code (prdc); Euclidean distance; the same k
  for all four. `real_sq_radii` (knn_sq_radii(real_features, k)) may be passed when the
  real set is scored many times.
  """
  real, fake = _as_features(real_features, "real_features"), _as_features(fake_features, "fake_features")
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"real and fake features differ in dimension: {real.shape} vs {fake.shape}.")
  if real_sq_radii is None:
    real_sq_radii = knn_sq_radii(real, k, max_chunk_elements)
  real_sq_radii = np.asarray(real_sq_radii, np.float64)
  if real_sq_radii.shape != (len(real),):
    raise ValueError(f"real_sq_radii must have shape ({len(real)},), got {real_sq_radii.shape}.")
  fake_sq_radii = knn_sq_radii(fake, k, max_chunk_elements)
  on_real_manifold = np.zeros(len(fake), bool)
  real_balls_per_fake = np.zeros(len(fake), np.int64)
  on_fake_manifold = np.empty(len(real), bool)
  covered = np.empty(len(real), bool)
  for start, d2 in _row_chunks(real, fake, max_chunk_elements):
    stop = start + len(d2)
    in_real_ball = d2 < real_sq_radii[start:stop, None]  # fake j inside real i's ball
    on_real_manifold |= in_real_ball.any(axis=0)
    real_balls_per_fake += np.count_nonzero(in_real_ball, axis=0)
    covered[start:stop] = in_real_ball.any(axis=1)
    on_fake_manifold[start:stop] = (d2 < fake_sq_radii[None, :]).any(axis=1)
  return {
    "precision": float(on_real_manifold.mean()),
    "recall": float(on_fake_manifold.mean()),
    "density": float(real_balls_per_fake.sum() / (k * len(fake))),
    "coverage": float(covered.mean()),
  }


def expected_coverage_of_identical(num_real: int, num_fake: int, k: int = PRDC_K) -> float:
  """E[coverage] when real and fake are independent samples of one distribution (Naeem et
  al. 2020, Lemma 2): 1 - Π_{i<k} (N-1-i)/(N+M-1-i), the chance that some fake sample is
  among a real point's k nearest neighbours in the pooled set. ~0.97 at N=M=10k, k=5.
  """
  ratios = [(num_real - 1 - i) / (num_real + num_fake - 1 - i) for i in range(k)]
  return float(1.0 - np.prod(ratios))


# KID: Bińkowski et al. 2018, with torch-fidelity's subset protocol (so the numbers compare)

KID_SEED = 2020  # torch-fidelity's rng_seed


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """k(x, y) = (x·y / d + 1)³, the polynomial kernel of the KID paper."""
  return (a @ b.T / a.shape[1] + 1.0) ** 3


def unbiased_mmd2(x, y) -> float:
  """The unbiased estimate of MMD² between two equal-sized sets under the cubic kernel:
  the within-set sums without their diagonals over m(m-1), less twice the cross sum over m²."""
  m = len(x)
  k_xx, k_yy = _cubic_kernel(x, x), _cubic_kernel(y, y)
  k_xy = _cubic_kernel(x, y)
  within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
  return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(fake_features, real_features, subsets: int, subset_size: int, seed: int = KID_SEED):
  """Kernel Inception Distance: unbiased MMD² (cubic kernel) of ``subsets`` pairs of random
  subsets of ``subset_size`` (each set's drawn without replacement, the fake one first, from
  numpy's RandomState(seed): torch-fidelity's draws). Returns (mean, std over the subsets, ddof 0);
  computed in float64."""
  fake, real = _as_features(fake_features, "fake_features"), _as_features(real_features, "real_features")
  if fake.shape[1] != real.shape[1]:
    raise ValueError(f"real and fake features differ in dimension: {real.shape} vs {fake.shape}.")
  if not 2 <= subset_size <= min(len(fake), len(real)):
    raise ValueError(
      f"KID subsets of {subset_size} need 2 to min(fake, real) = {min(len(fake), len(real))} samples per set."
    )
  rng = np.random.RandomState(seed)
  values = []
  for _ in range(subsets):
    x = fake[rng.choice(len(fake), subset_size, replace=False)]
    y = real[rng.choice(len(real), subset_size, replace=False)]
    values.append(unbiased_mmd2(x, y))
  return float(np.mean(values)), float(np.std(values))
