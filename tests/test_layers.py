"""Spectral norm against numpy's SVD; batch norm modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.models import layers


def _sn_apply(kernel_shape, steps, seed=0):
  module = layers.SNDense(kernel_shape[-1], use_bias=False)
  x = jnp.ones((1, kernel_shape[0]))
  variables = module.init({"params": jax.random.key(seed)}, x)
  w = jax.random.normal(jax.random.key(seed + 1), kernel_shape)
  variables["params"]["kernel"] = w
  for _ in range(steps):
    _, updates = module.apply(variables, x, update_stats=True, mutable=[layers.SPECTRAL])
    variables = {**variables, **updates}
  return module, variables, np.asarray(w, np.float64)


def test_sigma_converges_to_largest_singular_value():
  _, variables, w = _sn_apply((24, 16), steps=50)
  sigma = float(variables[layers.SPECTRAL]["sn"]["sigma"])
  top = np.linalg.svd(w, compute_uv=False)[0]
  assert sigma == pytest.approx(top, rel=1e-4)


def test_normalised_weight_has_unit_spectral_norm():
  module, variables, _ = _sn_apply((3 * 3 * 8, 12), steps=50)
  normalised = layers.SpectralWeight().apply(
    {layers.SPECTRAL: variables[layers.SPECTRAL]["sn"]}, variables["params"]["kernel"], False
  )
  assert np.linalg.svd(np.asarray(normalised, np.float64), compute_uv=False)[0] == pytest.approx(
    1.0, rel=1e-4
  )


def test_conv_kernel_is_normalised_as_a_matrix():
  module = layers.SNConv(6, (3, 3))
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
  variables = module.init({"params": jax.random.key(1)}, x)
  for _ in range(60):
    _, updates = module.apply(variables, x, update_stats=True, mutable=[layers.SPECTRAL])
    variables = {**variables, **updates}
  w = np.asarray(variables["params"]["kernel"], np.float64).reshape(-1, 6)
  assert float(variables[layers.SPECTRAL]["sn"]["sigma"]) == pytest.approx(
    np.linalg.svd(w, compute_uv=False)[0], rel=1e-4
  )


def test_stats_do_not_move_in_eval_mode():
  module, variables, _ = _sn_apply((10, 7), steps=1)
  before = jax.tree.map(np.asarray, variables[layers.SPECTRAL])
  x = jnp.ones((1, 10))
  _, updates = module.apply(variables, x, update_stats=False, mutable=[layers.SPECTRAL])
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, updates[layers.SPECTRAL]))
  _, updates = module.apply(variables, x, update_stats=True, mutable=[layers.SPECTRAL])
  assert not np.array_equal(before["sn"]["u"], np.asarray(updates[layers.SPECTRAL]["sn"]["u"]))


def test_no_gradient_through_power_iteration_vectors():
  module, variables, w = _sn_apply((6, 5), steps=30)
  x = jnp.ones((1, 6))

  def loss(kernel):
    out, _ = module.apply(
      {**variables, "params": {"kernel": kernel}}, x, update_stats=True, mutable=[layers.SPECTRAL]
    )
    return out.sum()

  # d(W/σ)/dW with u, v fixed: (I - σ⁻¹ W... ) — check against finite differences of the
  # same expression with u, v frozen.
  sn = variables[layers.SPECTRAL]["sn"]
  u, v = np.asarray(sn["u"], np.float64), np.asarray(sn["v"], np.float64)

  def frozen(kernel):
    return (np.ones((1, 6)) @ (kernel / (v @ kernel @ u))).sum()

  grad = np.asarray(jax.grad(loss)(jnp.asarray(w, jnp.float32)), np.float64)
  eps, numeric = 1e-6, np.zeros_like(w)
  for idx in np.ndindex(*w.shape):
    d = np.zeros_like(w)
    d[idx] = eps
    numeric[idx] = (frozen(w + d) - frozen(w - d)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)


def test_conditional_batch_norm_uses_class_gains_and_batch_stats():
  module = layers.BatchNorm(num_classes=3)
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 5)) * 3 + 2
  y = jnp.array([0, 1, 2, 0, 1, 2])
  variables = module.init({"params": jax.random.key(1)}, x, y, train=True)
  variables["params"]["gain"]["embedding"] = jnp.arange(15.0).reshape(3, 5) / 10
  out, updates = module.apply(variables, x, y, train=True, update_stats=True, mutable=["batch_stats"])
  xn = np.asarray(x, np.float64)
  mean, var = xn.mean(axis=(0, 1, 2)), xn.var(axis=(0, 1, 2))
  gain = 1 + np.arange(15.0).reshape(3, 5)[np.asarray(y)] / 10
  expected = (xn - mean) / np.sqrt(var + 1e-5) * gain[:, None, None, :]
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), 0.1 * mean, rtol=1e-5)
  eval_out = module.apply({**variables, **updates}, x, y, train=False)
  assert not np.allclose(np.asarray(eval_out), np.asarray(out))  # running stats differ from batch
