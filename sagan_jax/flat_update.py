"""The optimizer's update on a network's arrays as they are, or on all of them as one vector.

XLA compiles elementwise work one fusion per array: Adam's moments and update, the finite
check, the keep-if-finite select and the EMA over each network's few hundred arrays were most
of a small train step's compile on XLA:CPU. With ``flat`` (``model.kernels.parameter_update``
'flat') that work runs on the concatenation of a network's arrays and is split back
afterwards, so the state (and its checkpoints) keeps the layout of ``tx.init(params)`` either
way; the math per element is the same.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jax.flatten_util import ravel_pytree


class Flat(NamedTuple):
  params: Any  # the parameters: their tree, or every array raveled and concatenated
  opt_state: Any  # the optimizer's state; flat: its subtrees shaped like the parameters too


def vector(tree, flat: bool):
  """The tree as the update sees it: one vector when flat, else as it is."""
  return ravel_pytree(tree)[0] if flat else tree


def flatten(params, opt_state, flat: bool) -> tuple[Flat, Callable[[Flat], tuple]]:
  """(the update's view of params and opt_state, a function from such a view back to
  (params, opt_state) in their own layout)."""
  if not flat:
    return Flat(params, opt_state), tuple
  params_def = jax.tree.structure(params)
  shaped_like_params = lambda sub: jax.tree.structure(sub) == params_def
  flat_params, unravel = ravel_pytree(params)
  flat_state = jax.tree.map(
    lambda sub: vector(sub, True) if shaped_like_params(sub) else sub, opt_state, is_leaf=shaped_like_params
  )

  def unflatten(view: Flat) -> tuple:
    state = jax.tree.map(
      lambda leaf, sub: unravel(leaf) if shaped_like_params(sub) else leaf, view.opt_state, opt_state
    )
    return unravel(view.params), state

  return Flat(flat_params, flat_state), unflatten


def moving_average(average, params, decay, flat: bool):
  """decay · average + (1 − decay) · params, per array or on the flat vectors."""
  if not flat:
    return jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, average, params)
  flat_average, unravel = ravel_pytree(average)
  return unravel(decay * flat_average + (1.0 - decay) * vector(params, True))
