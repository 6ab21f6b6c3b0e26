"""FID, IS and intra-FID against closed forms and against pytorch-fid."""

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
  (mu_a, sigma_a), (mu_b, sigma_b) = (metrics.gaussian_stats(_features(3, n=50)),
                                      metrics.gaussian_stats(_features(4, n=50, shift=0.1)))
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
  real = {0: metrics.gaussian_stats(_features(10)),
          1: metrics.gaussian_stats(_features(11, shift=0.2))}
  mean, per_class = metrics.intra_fid(fake, real)
  want = {c: metrics.frechet_distance(*metrics.gaussian_stats(fake[c]), *real[c]) for c in real}
  assert per_class == pytest.approx(want)
  assert mean == pytest.approx((want[0] + want[1]) / 2)
  assert per_class[1] > per_class[0]


def test_intra_fid_refuses_different_classes():
  with pytest.raises(ValueError, match="same classes"):
    metrics.intra_fid({0: _features(12)}, {1: metrics.gaussian_stats(_features(13))})
