"""The EMA of G's weights, both schedules, against a float64 reference of the same trajectory."""

import json

import flax
import jax
import numpy as np
import pytest

from configs import cifar10, fashion_mnist
from sagan_jax import config as config_lib
from sagan_jax import programs, run, sharding, step
from sagan_jax.errors import UserError


def _decays(schedule, steps, **fields):
  config = fashion_mnist.get_config("smoke")
  config.ema_schedule = schedule
  for k, v in fields.items():
    config[k] = v
  return np.array([float(step.ema_decay(config, t)) for t in steps])


def test_power_decay_is_edm2s_formula_and_constant_starts_at_its_step():
  t = np.arange(1, 4001)
  got = _decays("power", t, ema_power_gamma=6.94)
  np.testing.assert_allclose(got, (1 - 1 / t.astype(np.float64)) ** 7.94, rtol=2e-6, atol=1e-7)
  assert got[0] == 0.0  # the first update copies G
  # A long run (sagan128's 1M steps): 1 - β stays right to float32's precision, not 1 - 1/t's.
  late = np.array([1e5, 1e6])
  np.testing.assert_allclose(
    1 - _decays("power", late, ema_power_gamma=6.94), -np.expm1(7.94 * np.log1p(-1 / late)), rtol=1e-2
  )
  # The horizon 1/(1-β) grows with training: ~t/(γ+1), an average over a fixed share of it.
  assert 1 / (1 - got[2999]) == pytest.approx(3000 / 7.94, rel=2e-3)
  const = _decays("constant", [0, 799, 800, 3000], ema_decay=0.999, ema_start_step=800)
  np.testing.assert_allclose(const, [0.0, 0.0, 0.999, 0.999], rtol=1e-7)


def test_train_steps_ema_matches_float64_reference():
  """Steps the real train step and recomputes the EMA in float64 from each step's G.

  The power schedule only: the step applies step.ema_decay whatever the schedule, and the
  constant one's decays are checked above (one compile less for the suite).
  """
  config = fashion_mnist.get_config("smoke")
  config.ema_schedule = "power"
  config.ema_power_gamma = 2.0  # a short horizon, so that 6 steps exercise it
  mesh = sharding.create_mesh(jax.devices()[:1])
  built = programs.programs(config, mesh)
  state = built.init()
  rng = np.random.default_rng(0)
  flat = lambda tree: {
    k: np.asarray(v, np.float64)
    for k, v in flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/").items()
  }
  reference = flat(state.g_params)
  for t in range(1, 7):
    batch = {
      "image": rng.uniform(-1, 1, (1, 8, 32, 32, 1)).astype(np.float32),
      "label": rng.integers(0, 10, (1, 8)).astype(np.int32),
    }
    state, _ = built.train_step(state, sharding.global_batch(batch, mesh))
    decay = (1 - 1 / t) ** 3.0
    g = flat(state.g_params)
    reference = {k: decay * reference[k] + (1 - decay) * g[k] for k in g}
  ema = flat(state.ema_params)
  assert set(ema) == set(reference)
  for k in ema:
    np.testing.assert_allclose(ema[k], reference[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # and the EMA is not G itself (a test that could not fail otherwise)
  g = flat(state.g_params)
  assert max(np.max(np.abs(ema[k] - g[k])) for k in g) > 1e-4


def test_defaults_and_a_run_written_before_the_field(tmp_path):
  assert fashion_mnist.get_config().ema_schedule == "power"
  assert cifar10.get_config().ema_schedule == "constant"  # BigGAN's 0.9999 for long runs
  saved = json.loads(fashion_mnist.get_config("smoke").to_json())
  del saved["ema_schedule"], saved["ema_power_gamma"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  old = run.load_config(str(tmp_path))
  assert old.ema_schedule == "constant" and old.ema_decay == 0.999  # what it trained with
  config_lib.validate_config(old)


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("ema_schedule", "cosine", "ema_schedule must be one of"),
    ("ema_power_gamma", -1.0, "ema_power_gamma must be a number of 0 or more"),
  ],
)
def test_bad_ema_fields_are_refused(field, value, message):
  config = fashion_mnist.get_config("smoke")
  config[field] = value
  with pytest.raises(UserError, match=message):
    config_lib.validate_config(config)
