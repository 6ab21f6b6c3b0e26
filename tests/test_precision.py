"""Mixed precision (``config.dtype = "bfloat16"``): G and D compute in bfloat16, yet
every stored value (parameters, EMA, BN statistics, SN vectors, optimizer moments) and
every loss stays float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist
from sagan_jax import programs, sharding
from sagan_jax.models.layers import SPECTRAL

# Measured on the smoke model at init (CPU, jax 0.10.2) with this test's inputs: max |G_bf16 -
# G_f32| over the tanh images in [-1, 1] is 0.029 and max |D_bf16 - D_f32| / max |D_f32| over the
# logits (|logit| up to ~18) is 0.0023; three other seeds with uniform [-1, 1] D inputs gave
# 0.024-0.030 and 0.0015-0.0028. The tolerances sit ~3.5x (G) and ~4x (D) above the worst.
G_IMAGE_ATOL = 0.1
D_LOGIT_RTOL = 0.01

STATE_PARTS = (
  "g_params",
  "d_params",
  "ema_params",
  "g_batch_stats",
  "g_spectral",
  "d_spectral",
  "g_opt_state",
  "d_opt_state",
)


def _config(dtype):
  config = fashion_mnist.get_config("smoke")
  config.dtype = dtype
  return config


def _real_looking_images(rng, labels):
  """Fashion-MNIST-like [-1, 1] images (as tests/conftest.py's fake data): a dim noisy
  background and a bright class-dependent bar, scaled as the input pipeline does."""
  pixels = rng.integers(0, 50, (len(labels), 32, 32, 1)).astype(np.float32)
  for i, label in enumerate(labels):
    pixels[i, 2 * label + 2 : 2 * label + 10, 6:26] = 200
  return pixels / 127.5 - 1.0


@pytest.fixture(scope="module")
def init_state():
  """The initial state, on the host (each test puts its own copy on a device).

  Parameters, SN vectors and BN statistics are created in float32 whatever the compute
  dtype, so this is the float32 config's init, jitted as train_and_evaluate does: other
  tests compile the same program, which the session's persistent cache then shares.
  (The bfloat16 config's own init is checked, without compiling, in the train test.)
  """
  config = _config("float32")
  return jax.device_get(programs.programs(config, sharding.create_mesh(jax.devices()[:1])).init())


def _bad_leaves(tree):
  """(path, dtype) of every floating leaf that is not float32, and the number of floating leaves."""
  floating = [
    (jax.tree_util.keystr(p), np.dtype(x.dtype))
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
    if jnp.issubdtype(x.dtype, jnp.floating)
  ]
  return [(k, str(t)) for k, t in floating if t != np.float32], len(floating)


def test_bf16_forward_is_close_to_float32(init_state):
  state = init_state
  g32, d32 = programs.build_models(_config("float32"))
  g16, d16 = programs.build_models(_config("bfloat16"))
  assert g16.dtype == jnp.bfloat16 and g32.dtype == jnp.float32
  rng = np.random.default_rng(0)
  z = rng.standard_normal((16, g32.z_dim)).astype(np.float32)
  y = rng.integers(0, 10, 16).astype(np.int32)
  x = _real_looking_images(rng, y)
  g_vars = {"params": state.g_params, "batch_stats": state.g_batch_stats, SPECTRAL: state.g_spectral}
  d_vars = {"params": state.d_params, SPECTRAL: state.d_spectral}

  images = {
    n: np.asarray(jax.jit(functools.partial(g.apply, train=True))(g_vars, z, y))
    for n, g in (("f32", g32), ("bf16", g16))
  }
  logits = {n: np.asarray(jax.jit(d.apply)(d_vars, x, y)) for n, d in (("f32", d32), ("bf16", d16))}

  for out in (images, logits):
    assert out["bf16"].dtype == np.float32 and np.all(np.isfinite(out["bf16"]))
  g_err = float(np.max(np.abs(images["bf16"] - images["f32"])))
  d_err = float(np.max(np.abs(logits["bf16"] - logits["f32"])) / np.max(np.abs(logits["f32"])))
  # Not vacuous: the images are non-trivial and bfloat16 really was used (it rounds).
  assert np.std(images["f32"]) > 0.1 and np.max(np.abs(logits["f32"])) > 1.0
  assert g_err > 1e-4 and d_err > 1e-5, (g_err, d_err)
  assert g_err < G_IMAGE_ATOL, g_err
  assert d_err < D_LOGIT_RTOL, d_err


def test_bf16_train_steps_keep_state_and_losses_float32(init_state):
  config = _config("bfloat16")
  mesh = sharding.create_mesh(jax.devices()[:1])
  built = programs.programs(config, mesh)
  initial_shapes = built.init.eval_shape()
  state = jax.device_put(init_state, sharding.replicated(mesh))
  step = built.train_step
  rng = np.random.default_rng(1)
  b = config.batch_size
  for _ in range(2):
    labels = rng.integers(0, 10, (1, b)).astype(np.int32)
    batch = {"image": _real_looking_images(rng, labels[0])[None], "label": labels}
    state, metrics = step(state, sharding.global_batch(batch, mesh))
  state, metrics = jax.device_get((state, metrics))

  assert int(state.step) == 2 and int(state.nonfinite_streak) == 0  # both updates were applied
  moved = np.max(np.abs(state.d_params["linear"]["kernel"] - init_state.d_params["linear"]["kernel"]))
  assert moved > 0, "the steps did not update D"
  for part in STATE_PARTS:
    wrong, n = _bad_leaves(getattr(state, part))
    assert n, f"{part} has no floating leaves"
    assert not wrong, f"{part}: leaves not float32 after bfloat16 steps: {wrong}"
    wrong, n = _bad_leaves(getattr(initial_shapes, part))
    assert n and not wrong, f"{part}: leaves not float32 in the bfloat16 config's init: {wrong}"
  for name in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"):
    value = np.asarray(metrics[name])
    assert value.dtype == np.float32, (name, value.dtype)
    assert np.isfinite(value), (name, value)
