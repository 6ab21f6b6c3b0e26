"""The train step's optimizer update on flat vectors (sagan_jax.flat_update) against optax
on the parameter tree: the same numbers, the same state layout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sagan_jax import flat_update


def parameters(seed):
  rng = np.random.RandomState(seed)
  shapes = {"conv": {"kernel": (3, 3, 4, 8), "bias": (8,)}, "embed": (10, 8), "gamma": ()}
  return jax.tree.map(
    lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32),
    shapes,
    is_leaf=lambda x: isinstance(x, tuple),
  )


def test_flatten_then_unflatten_gives_back_params_and_state_bitwise():
  params = parameters(0)
  tx = optax.adam(1e-3, b1=0.0, b2=0.9)
  opt_state = tx.update(parameters(1), tx.init(params), params)[1]  # moments not all zero
  flat, unflatten = flat_update.flatten(params, opt_state, True)
  assert flat.params.shape == (3 * 3 * 4 * 8 + 8 + 80 + 1,)
  mu = flat.opt_state[0].mu
  assert mu.shape == flat.params.shape and flat.opt_state[0].count.shape == ()
  back_params, back_state = unflatten(flat)
  assert jax.tree.structure(back_state) == jax.tree.structure(opt_state)
  for a, b in zip(
    jax.tree.leaves((back_params, back_state)), jax.tree.leaves((params, opt_state)), strict=True
  ):
    assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("b1, b2", [(0.0, 0.9), (0.5, 0.999)])
def test_adam_on_the_flat_vector_is_adam_on_the_tree(b1, b2):
  """Three steps of the paper's Adam (β1=0, β2=0.9) and of one with momentum, from the same
  state: the same parameters and moments, to rounding (the two programs are compiled into
  other loops; a few elements differ in their last bit)."""
  tx = optax.adam(1e-3, b1=b1, b2=b2)
  params = tree_params = parameters(0)
  opt_state = tree_state = tx.init(params)

  @jax.jit
  def flat_step(params, opt_state, grads):
    old, unflatten = flat_update.flatten(params, opt_state, True)
    updates, state = tx.update(flat_update.vector(grads, True), old.opt_state, old.params)
    return unflatten(flat_update.Flat(optax.apply_updates(old.params, updates), state))

  @jax.jit
  def tree_step(params, opt_state, grads):
    updates, state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state

  for step in range(3):
    grads = parameters(10 + step)
    params, opt_state = flat_step(params, opt_state, grads)
    tree_params, tree_state = tree_step(tree_params, tree_state, grads)
  for a, b in zip(
    jax.tree.leaves((params, opt_state)), jax.tree.leaves((tree_params, tree_state)), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)


def test_per_array_is_the_arrays_as_they_are_and_both_averages_agree():
  params, other = parameters(0), parameters(1)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  view, back = flat_update.flatten(params, opt_state, False)
  assert view.params is params and view.opt_state is opt_state and flat_update.vector(params, False) is params
  assert back(view) == (params, opt_state)
  per_array = flat_update.moving_average(params, other, 0.9, False)
  flat = flat_update.moving_average(params, other, 0.9, True)
  assert jax.tree.structure(flat) == jax.tree.structure(params)
  for a, b, p, q in zip(*map(jax.tree.leaves, (flat, per_array, params, other)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, 0.9 * np.float64(p) + 0.1 * np.float64(q), rtol=1e-6, atol=1e-7)
