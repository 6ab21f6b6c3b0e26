"""The sampling tools' noise: truncation by resampling, slerp/lerp, class weights in the
conditional-BN embedding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax import sampling
from sagan_jax.models.layers import SNEmbed


def truncated_normal_variance(t: float) -> float:
  """Var of N(0, 1) conditioned on |z| ≤ t: 1 − 2 t φ(t) / (2 Φ(t) − 1)."""
  pdf = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
  mass = math.erf(t / math.sqrt(2))
  return 1 - 2 * t * pdf / mass


@pytest.mark.parametrize("t", [0.25, 0.5, 1.0, 2.0])
def test_truncation_resamples_into_the_interval_with_the_truncated_law(t):
  z = sampling.truncated_normal(np.random.default_rng(0), (4000, 64), t)
  assert z.dtype == np.float32 and z.shape == (4000, 64)
  assert np.abs(z).max() <= t
  # Resampling keeps the normal's shape inside the interval (clipping would pile mass at ±t).
  assert z.var() == pytest.approx(truncated_normal_variance(t), rel=0.01)
  assert np.mean(np.abs(z) > 0.98 * t) < 0.05


def test_no_truncation_is_the_plain_normal_and_seeded():
  a = sampling.truncated_normal(np.random.default_rng(3), (5, 7))
  b = np.random.default_rng(3).standard_normal((5, 7)).astype(np.float32)
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan")])
def test_truncation_must_be_positive(t):
  with pytest.raises(ValueError, match="> 0"):
    sampling.truncated_normal(np.random.default_rng(0), (2, 2), t)


def test_slerp_keeps_the_ends_and_moves_on_the_great_circle():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((2, 3, 16))
  w = np.linspace(0, 1, 5)
  path = sampling.interpolate(a, b, w, "slerp")
  assert path.shape == (5, 3, 16)
  np.testing.assert_allclose(path[0], a, atol=1e-5)
  np.testing.assert_allclose(path[-1], b, atol=1e-5)
  norms = np.linalg.norm(path, axis=-1)
  want = (1 - w)[:, None] * np.linalg.norm(a, axis=-1) + w[:, None] * np.linalg.norm(b, axis=-1)
  np.testing.assert_allclose(norms, want, rtol=1e-5)
  # equal angular steps: the angle to a grows linearly
  unit = path / norms[..., None]
  ua = a / np.linalg.norm(a, axis=-1, keepdims=True)
  angles = np.arccos(np.clip(np.sum(unit * ua, -1), -1, 1))
  np.testing.assert_allclose(angles, w[:, None] * angles[-1], atol=2e-3)  # arccos of float32 near 1


def test_lerp_is_the_straight_line_and_parallel_slerp_does_not_divide_by_zero():
  a, b = np.ones(4), 3 * np.ones(4)
  np.testing.assert_allclose(sampling.interpolate(a, b, [0.5], "lerp")[0], 2 * np.ones(4))
  np.testing.assert_allclose(sampling.interpolate(a, b, [0.5], "slerp")[0], 2 * np.ones(4), rtol=1e-6)
  with pytest.raises(ValueError, match="slerp"):
    sampling.interpolate(a, b, [0.5], "cubic")


def test_class_weights_mix_the_embedding_rows():
  embed = SNEmbed(5, 3, use_sn=False)
  labels = jnp.asarray([0, 4, 2])
  params = embed.init({"params": jax.random.key(0)}, labels)
  by_index = embed.apply(params, labels)
  one_hot = embed.apply(params, jnp.eye(5, dtype=jnp.float32)[labels])
  np.testing.assert_allclose(one_hot, by_index, rtol=1e-6, atol=1e-7)
  half = embed.apply(params, jnp.asarray([[0.5, 0, 0, 0, 0.5]], jnp.float32))
  np.testing.assert_allclose(half[0], (by_index[0] + by_index[1]) / 2, rtol=1e-6, atol=1e-7)
