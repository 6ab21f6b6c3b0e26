"""A network's parameters and optimizer state as flat vectors for the update, kept per array.

XLA compiles elementwise work one fusion per array: Adam's moments and update, the finite
check, the keep-if-finite select and the EMA over each network's few hundred arrays were most
of a small train step's compile. The step runs that work on the concatenation of a network's
arrays and splits the result back, so the state (and its checkpoints) keeps the layout of
``tx.init(params)``; the math per element is unchanged.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jax.flatten_util import ravel_pytree


class Flat(NamedTuple):
  params: jax.Array  # every parameter array, raveled and concatenated
  opt_state: Any  # the optimizer's state, each subtree shaped like the parameters a vector too


def vector(tree) -> jax.Array:
  return ravel_pytree(tree)[0]


def flatten(params, opt_state) -> tuple[Flat, Callable[[Flat], tuple]]:
  """(the flat form, a function from a flat form back to (params, opt_state) per array)."""
  params_def = jax.tree.structure(params)
  shaped_like_params = lambda sub: jax.tree.structure(sub) == params_def
  flat_params, unravel = ravel_pytree(params)
  flat_state = jax.tree.map(
    lambda sub: vector(sub) if shaped_like_params(sub) else sub, opt_state, is_leaf=shaped_like_params
  )

  def unflatten(flat: Flat) -> tuple:
    state = jax.tree.map(
      lambda leaf, sub: unravel(leaf) if shaped_like_params(sub) else leaf, flat.opt_state, opt_state
    )
    return unravel(flat.params), state

  return Flat(flat_params, flat_state), unflatten
