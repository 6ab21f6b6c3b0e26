"""FID, IS and intra-FID against closed forms and against pytorch-fid; KID against its term-by-term
definition and torch-fidelity; class accuracy and precision / recall / density / coverage against
brute-force references, known cases and Naeem et al.'s prdc."""

import os

import numpy as np
import pytest
from conftest import import_pytorch_fid
from scipy import linalg

from sagan_jax.evaluation import metrics


def _import_pytorch_fid_score():
  return import_pytorch_fid("fid_score")[1]


def _features(seed, n=500, dim=64, shift=0.0):
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
  return rng.normal(size=(n, dim)) @ mixing + shift


def test_gaussian_stats_are_float64_mean_and_covariance():
  features = _features(0).astype(np.float32)
  mu, sigma = metrics.gaussian_stats(features)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-12)


def test_fid_matches_pytorch_fid():
  fid_score = _import_pytorch_fid_score()
  stats_a = metrics.gaussian_stats(_features(1))
  stats_b = metrics.gaussian_stats(_features(2, shift=0.3))
  want = fid_score.calculate_frechet_distance(*stats_a, *stats_b)
  got = metrics.frechet_distance(*stats_a, *stats_b)
  assert want > 1.0
  assert abs(got - want) <= 1e-6 * abs(want)


def test_fid_adds_eps_like_pytorch_fid_when_sqrtm_is_not_finite(monkeypatch):
  # scipy's sqrtm rarely returns inf on real data: make the first call of each FID do so.
  fid_score = _import_pytorch_fid_score()
  sqrtm, calls = linalg.sqrtm, []

  def sqrtm_first_call_inf(matrix, *args, **kwargs):
    calls.append(1)
    result = sqrtm(matrix)
    if len(calls) % 2:
      result = np.full_like(result, np.inf)
    return (result, 0.0) if kwargs.get("disp") is False else result

  monkeypatch.setattr(linalg, "sqrtm", sqrtm_first_call_inf)
  (mu_a, sigma_a), (mu_b, sigma_b) = (
    metrics.gaussian_stats(_features(3, n=50)),
    metrics.gaussian_stats(_features(4, n=50, shift=0.1)),
  )
  eps = 1e-2  # large enough to move the result well beyond the tolerance
  want = fid_score.calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b, eps=eps)
  got = metrics.frechet_distance(mu_a, sigma_a, mu_b, sigma_b, eps=eps)
  assert len(calls) == 4
  assert abs(got - want) <= 1e-6 * abs(want)
  monkeypatch.undo()
  unregularised = metrics.frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
  assert abs(got - unregularised) > 1e-4 * abs(unregularised)


def test_fid_of_a_distribution_with_itself_is_zero():
  stats = metrics.gaussian_stats(_features(5))
  assert abs(metrics.frechet_distance(*stats, *stats)) < 1e-6


def test_fid_of_diagonal_gaussians_equals_closed_form():
  rng = np.random.default_rng(6)
  mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
  var1, var2 = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
  want = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
  got = metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
  assert got == pytest.approx(want, rel=1e-10)


def test_fid_of_gaussians_with_full_covariances_equals_closed_form():
  # sigma2 = A sigma1 A with A symmetric positive definite commuting with sigma1:
  # (sigma1 sigma2)^½ = sigma1 A, so FID = ||Δmu||² + Tr(sigma1 + sigma2 - 2 sigma1 A).
  rng = np.random.default_rng(7)
  q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  sigma1 = q @ np.diag(rng.uniform(0.5, 2.0, 8)) @ q.T
  a = q @ np.diag(rng.uniform(0.5, 2.0, 8)) @ q.T
  sigma2 = a @ sigma1 @ a
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  want = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * sigma1 @ a)
  assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(want, rel=1e-9)


def test_fid_refuses_mismatched_dimensions():
  with pytest.raises(ValueError, match="differ in dimension"):
    metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_of_uniform_predictions_is_one():
  mean, std = metrics.inception_score(np.zeros((100, 1008)))
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("num_classes", [None, 1000])
def test_inception_score_of_confident_balanced_predictions_is_the_class_count(num_classes):
  classes = 50
  labels = np.tile(np.arange(classes), 10)  # every split of 10 holds each class once
  logits = np.zeros((len(labels), 1008))
  logits[np.arange(len(labels)), labels] = 100.0
  mean, std = metrics.inception_score(logits, num_splits=10, num_classes=num_classes)
  assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_uses_the_requested_classes():
  # All the mass on the 8 extra logits: one class among 1008, uniform among the first 1000.
  logits = np.zeros((20, 1008))
  logits[:10, 1000] = logits[10:, 1001] = 100.0
  assert metrics.inception_score(logits, num_splits=1)[0] == pytest.approx(2.0, rel=1e-9)
  assert metrics.inception_score(logits, num_splits=1, num_classes=1000)[0] == pytest.approx(1.0)


def test_intra_fid_averages_per_class_fids():
  fake = {0: _features(8), 1: _features(9, shift=0.5)}
  real = {0: metrics.gaussian_stats(_features(10)), 1: metrics.gaussian_stats(_features(11, shift=0.2))}
  mean, per_class = metrics.intra_fid(fake, real)
  want = {c: metrics.frechet_distance(*metrics.gaussian_stats(fake[c]), *real[c]) for c in real}
  assert per_class == pytest.approx(want)
  assert mean == pytest.approx((want[0] + want[1]) / 2)
  assert per_class[1] > per_class[0]


def test_intra_fid_refuses_different_classes():
  with pytest.raises(ValueError, match="same classes"):
    metrics.intra_fid({0: _features(12)}, {1: metrics.gaussian_stats(_features(13))})


# Class accuracy


def test_class_accuracy_counts_argmax_hits_per_conditioning_label():
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
  predicted = np.array([0, 0, 0, 1, 1, 0, 1, 1, 1, 1])  # class 0: 3/4, class 1: 1/2, class 2: 0/4
  logits = np.full((len(labels), 5), -1.0)
  logits[np.arange(len(labels)), predicted] = 2.0
  accuracy, per_class, confusion = metrics.class_accuracy(logits, labels, num_classes=4)
  assert accuracy == pytest.approx(4 / 10)
  assert per_class == [pytest.approx(0.75), pytest.approx(0.5), 0.0, None]  # no sample of class 3
  assert confusion.shape == (4, 5) and confusion.sum() == len(labels)
  assert confusion[0].tolist() == [3, 1, 0, 0, 0] and confusion[2].tolist() == [0, 4, 0, 0, 0]


def test_class_accuracy_refuses_labels_out_of_range():
  with pytest.raises(ValueError, match="labels must lie"):
    metrics.class_accuracy(np.zeros((2, 3)), np.array([0, 3]), num_classes=3)


# Precision / recall / density / coverage against a brute-force reference


def _brute_force_prdc(real, fake, k):
  """Written from the papers' definitions, independently of metrics.prdc: all distances at
  once by explicit differences, radii by a full sort, and a loop per sample."""
  real, fake = real.astype(np.float64), fake.astype(np.float64)

  def distances(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))

  real_radius = np.sort(distances(real, real), axis=1)[:, k]  # index 0 is the point itself
  fake_radius = np.sort(distances(fake, fake), axis=1)[:, k]
  cross = distances(real, fake)  # (N, M)
  precision = np.mean([any(cross[i, j] < real_radius[i] for i in range(len(real))) for j in range(len(fake))])
  recall = np.mean([any(cross[i, j] < fake_radius[j] for j in range(len(fake))) for i in range(len(real))])
  density = sum(int(np.sum(cross[:, j] < real_radius)) for j in range(len(fake))) / (k * len(fake))
  coverage = np.mean([cross[i].min() < real_radius[i] for i in range(len(real))])
  return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("max_chunk_elements", [1, 5000, metrics.MAX_CHUNK_ELEMENTS])
@pytest.mark.parametrize("k", [1, 5])
def test_prdc_matches_a_brute_force_reference(k, max_chunk_elements):
  # Overlapping but different distributions, so no metric sits at 0 or 1; float32 as features come.
  real = _features(20, n=230, dim=3).astype(np.float32)
  fake = (_features(21, n=170, dim=3) * 1.3 + 0.4).astype(np.float32)
  want = _brute_force_prdc(real, fake, k)
  got = metrics.prdc(real, fake, k, max_chunk_elements=max_chunk_elements)
  assert all(0.05 < want[name] < 0.95 for name in ("precision", "recall", "coverage")), want
  assert got == pytest.approx(want, abs=1e-12)


def test_knn_radii_match_sorted_distances_and_count_duplicates_as_neighbours():
  features = _features(22, n=300, dim=8)
  features[1] = features[0]  # a duplicate is a neighbour at distance 0, as in Naeem et al.'s code
  d = np.sqrt(((features[:, None] - features[None]) ** 2).sum(-1))
  for k in (1, 5):
    radii = np.sqrt(metrics.knn_sq_radii(features, k, max_chunk_elements=1000))
    np.testing.assert_allclose(radii, np.sort(d, axis=1)[:, k], rtol=1e-9, atol=1e-12)
  assert metrics.knn_sq_radii(features, 1)[0] == 0.0


def test_prdc_of_identical_sets_is_one():
  features = _features(23, n=400, dim=16).astype(np.float32)
  got = metrics.prdc(features, features.copy())
  assert got["precision"] == got["recall"] == got["coverage"] == 1.0
  # Each real ball holds its own point and its k-1 nearest neighbours (the k-th lies on the
  # open ball's boundary): k per ball, so density is exactly 1.
  assert got["density"] == pytest.approx(1.0, abs=1e-12)


def test_prdc_of_disjoint_far_sets_is_zero():
  real = _features(24, n=200, dim=16)
  got = metrics.prdc(real, _features(25, n=150, dim=16, shift=100.0))
  assert got == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_of_independent_samples_of_one_distribution_meets_naeem_et_al_expectations():
  # Naeem et al. 2020: E[density] = 1 (Lemma 1); E[coverage] = 1 - Π_{i<k} (N-1-i)/(N+M-1-i)
  # (Lemma 2), here ~0.67 for N=2000 real and M=500 fake.
  n, m, k = 2000, 500, 5
  rng = np.random.default_rng(28)
  real, fake = rng.normal(size=(n, 6)), rng.normal(size=(m, 6))
  got = metrics.prdc(real, fake, k)
  want_coverage = metrics.expected_coverage_of_identical(n, m, k)
  assert 0.6 < want_coverage < 0.75
  assert got["coverage"] == pytest.approx(want_coverage, abs=0.04)
  assert got["density"] == pytest.approx(1.0, abs=0.1)


def test_expected_coverage_equals_the_binomial_form():
  import math

  for n, m, k in ((10_000, 10_000, 5), (10_000, 2000, 5), (50, 7, 3)):
    want = 1 - math.comb(n - 1, k) / math.comb(n + m - 1, k)  # all k nearest of the pool are real
    assert metrics.expected_coverage_of_identical(n, m, k) == pytest.approx(want, rel=1e-12)
  assert metrics.expected_coverage_of_identical(10_000, 10_000) == pytest.approx(0.9688, abs=1e-4)


def test_prdc_separates_fidelity_from_diversity_when_modes_are_dropped():
  # Real data: two far clusters; fake: only the first (faithful but half as diverse).
  rng = np.random.default_rng(29)
  real = np.concatenate([rng.normal(size=(500, 4)), rng.normal(size=(500, 4)) + 50.0])
  fake = rng.normal(size=(500, 4))
  got = metrics.prdc(real, fake)
  assert got["precision"] > 0.9 and got["density"] > 0.7
  assert 0.3 < got["recall"] < 0.55 and 0.3 < got["coverage"] < 0.55


def test_prdc_holds_only_chunks_of_the_distance_matrix():
  import tracemalloc

  real, fake = _features(30, n=3000, dim=16), _features(31, n=3000, dim=16)
  full_matrix = 3000 * 3000 * 8  # 72 MB in float64
  tracemalloc.start()
  metrics.prdc(real, fake, max_chunk_elements=1 << 16)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert peak < full_matrix / 10, peak


def test_prdc_refuses_too_few_points_and_mismatched_dimensions():
  with pytest.raises(ValueError, match="more than k points"):
    metrics.prdc(_features(32, n=50, dim=4), _features(33, n=5, dim=4), k=5)
  with pytest.raises(ValueError, match="differ in dimension"):
    metrics.prdc(_features(32, n=50, dim=4), _features(33, n=50, dim=5))


# KID


def _brute_force_mmd2(x, y):
  """Unbiased MMD² written term by term from Bińkowski et al. (2018), eq. 2: pairwise loops."""
  d, m = x.shape[1], len(x)

  def kernel(a, b):
    return (sum(float(ai) * float(bi) for ai, bi in zip(a, b, strict=True)) / d + 1.0) ** 3

  within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  cross = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
  return within / (m * (m - 1)) - 2 * cross / (m * m)


def test_unbiased_mmd2_matches_the_term_by_term_definition():
  x, y = _features(40, n=12, dim=5), _features(41, n=12, dim=5, shift=0.5)
  np.testing.assert_allclose(metrics.unbiased_mmd2(x, y), _brute_force_mmd2(x, y), rtol=1e-12)


def test_kid_of_one_distribution_is_near_zero_and_grows_with_the_shift():
  rng = np.random.default_rng(42)
  real = rng.normal(size=(600, 8))

  def kid_of(shift):
    return metrics.kid(rng.normal(size=(600, 8)) + shift, real, subsets=10, subset_size=200)[0]

  same, near, far = kid_of(0.0), kid_of(0.2), kid_of(1.0)
  assert abs(same) < 0.01 < near < far  # unbiased: ~0, and can dip below it


def test_kid_draws_its_subsets_with_the_fake_set_first():
  """Subset i pairs the i-th draw from the fake set with the one after it from the real set."""
  fake, real = _features(46, n=50, dim=4), _features(47, n=60, dim=4, shift=0.3)
  rng = np.random.RandomState(7)
  want = []
  for _ in range(3):
    x = fake[rng.choice(50, 20, replace=False)]
    want.append(_brute_force_mmd2(x, real[rng.choice(60, 20, replace=False)]))
  got = metrics.kid(fake, real, subsets=3, subset_size=20, seed=7)
  np.testing.assert_allclose(got, (np.mean(want), np.std(want)), rtol=1e-10)


def test_kid_refuses_subsets_larger_than_a_set():
  with pytest.raises(ValueError, match="KID subsets of 61"):
    metrics.kid(_features(48, n=80, dim=4), _features(49, n=60, dim=4), subsets=2, subset_size=61)


PEERS = os.path.join(os.path.dirname(__file__), "fixtures", "metrics", "peers.npz")


def test_kid_and_prdc_agree_with_torch_fidelity_and_naeem_et_als_prdc():
  """experiments/metric_fixtures.py ran torch-fidelity 0.3.0's KID and prdc 0.2's compute_prdc
  on these float32 features: the same numbers here (KID to float32 rounding: the peer computes
  its kernels in float32, this package in float64)."""
  with np.load(PEERS) as peer:
    kid_mean, kid_std = metrics.kid(
      peer["fake"],
      peer["real"],
      int(peer["kid_subsets"]),
      int(peer["kid_subset_size"]),
      int(peer["kid_seed"]),
    )
    np.testing.assert_allclose(kid_mean, peer["kid_mean"], rtol=1e-5)
    np.testing.assert_allclose(kid_std, peer["kid_std"], rtol=1e-4)
    got = metrics.prdc(peer["real"], peer["fake"], int(peer["k"]))
    for name in ("precision", "recall", "density", "coverage"):
      assert got[name] == pytest.approx(float(peer[name]), abs=1e-12), name
