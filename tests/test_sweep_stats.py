"""The sweeps' statistics (sagan_jax/ablations/stats.py) against numpy float64 and t tables."""

import math

import numpy as np
import pytest

from sagan_jax.ablations import stats

# Two-sided 95% Student-t quantiles from a printed table: dof 2, 4, 9.
T975 = {2: 4.302652729911275, 4: 2.7764451051977987, 9: 2.2621571627409915}


@pytest.mark.parametrize(
  "values", [[100.0, 110.0, 96.0], [0.61, 0.64, 0.70, 0.58, 0.66], list(np.linspace(3, 9, 10))]
)
def test_interval_is_the_t_interval_of_the_mean(values):
  x = np.asarray(values, np.float64)
  n = len(x)
  sd = x.std(ddof=1)
  half = T975[n - 1] * sd / np.sqrt(n)
  iv = stats.interval(values)
  assert iv.n == n
  np.testing.assert_allclose(
    [iv.mean, iv.sd, iv.se, iv.low, iv.high],
    [x.mean(), sd, sd / np.sqrt(n), x.mean() - half, x.mean() + half],
    rtol=1e-9,
  )


def test_one_value_has_no_interval():
  iv = stats.interval([3.0])
  assert iv.mean == 3.0 and math.isnan(iv.low) and math.isnan(iv.sd)
  assert stats.verdict("fid_fmnist", iv, "base") == "one seed: no interval"


def test_paired_takes_differences_seed_by_seed_over_common_seeds():
  a = {0: 10.0, 1: 12.0, 2: 11.0, 3: 99.0}
  b = {0: 9.0, 1: 10.0, 2: 10.5, 5: 0.0}
  diff = stats.paired(a, b)
  d = np.array([1.0, 2.0, 0.5])
  assert diff.n == 3 and diff.mean == pytest.approx(d.mean())
  assert diff.sd == pytest.approx(d.std(ddof=1))
  assert stats.paired({0: 1.0}, {1: 1.0}) is None


def test_verdict_names_the_better_side_by_the_metrics_direction():
  lower = stats.interval([-5.0, -6.0, -4.0])  # variant − baseline < 0
  assert stats.verdict("fid_fmnist", lower, "feat16").startswith("better than feat16")
  assert stats.verdict("class_accuracy", lower, "feat16").startswith("worse than feat16")
  wide = stats.interval([-5.0, 4.0, -1.0])
  assert stats.verdict("coverage", wide, "feat16").startswith("not resolved: the interval includes 0")


def test_seeds_to_resolve_is_the_fewest_whose_interval_excludes_zero():
  diff = stats.interval([1.0, -0.5, 2.0])  # mean 0.833, sd 1.258
  n = stats.seeds_to_resolve(diff)
  t = lambda k: stats.t_quantile(0.95, k - 1)
  assert t(n) * diff.sd / math.sqrt(n) < abs(diff.mean) <= t(n - 1) * diff.sd / math.sqrt(n - 1)
  assert stats.seeds_to_resolve(stats.interval([1.0, -1.0])) is None  # mean 0
  assert f"~{n} seeds" in stats.verdict("fid_fmnist", diff, "b")
