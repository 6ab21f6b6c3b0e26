"""The jitted train step and sampler compile once: later calls with new data reuse them.

A recompile per step (a Python value leaking into the trace, a batch or state whose
sharding, dtype or weak type drifts between calls) would silently cost a full compile,
a minute on 2 cores, every step. Two independent counters: the jitted function's own
cache size, and jax.monitoring's trace/compile events for the function's name.
"""

import collections
import functools
import os

import jax
import numpy as np
import pytest

from configs import fashion_mnist
from sagan_jax import programs, sampling, sharding
from sagan_jax.step import make_train_step

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compile_events():
  """Counts trace and backend-compile events by function name while the test runs."""
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event in (TRACE_EVENT, COMPILE_EVENT):
      counts[event, kwargs.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _batch(rng, config):
  """A fresh host batch (new numpy arrays), shaped (D steps, B, 32, 32, 1)."""
  shape = (config.d_steps_per_g_step, config.batch_size)
  return {
    "image": rng.uniform(-1, 1, shape + (32, 32, 1)).astype(np.float32),
    "label": rng.integers(0, config.model.num_classes, shape).astype(np.int32),
  }


def _jitted_parts(fn):
  """fn itself if it is a jitted function, else the jitted functions it holds
  (sampling.SamplerPrograms)."""
  if hasattr(fn, "_cache_size"):
    return {"": fn}
  return {k: v for k, v in vars(fn).items() if hasattr(v, "_cache_size")}


def test_train_step_and_sampler_compile_once(compile_events):
  # The smoke config, Adam, one device: the very step train_and_evaluate compiles for it.
  config = fashion_mnist.get_config("smoke")
  mesh = sharding.create_mesh(jax.devices()[:1])
  g, d = programs.build_models(config)
  g_tx, d_tx = programs.build_optimizers(config)
  key = sharding.replicate(programs.seed_key_data(config.seed), mesh)
  state = jax.jit(
    functools.partial(programs.init_state, config, g, d, g_tx, d_tx), out_shardings=sharding.replicated(mesh)
  )(key)
  step = make_train_step(
    config, g, d, g_tx, d_tx, mesh, programs.resolve_kernels(config, mesh).parameter_update
  )
  assert step.earlier is None and step.last._cache_size() == 0  # 1:1: one program
  rng = np.random.default_rng(0)
  losses = []
  for i in range(4):
    batch = sharding.global_batch(_batch(rng, config), mesh)
    before = sum(compile_events.values())
    state, metrics = step(state, batch, key)
    losses.append(float(metrics["d_loss"]))
    assert step.last._cache_size() == 1, f"the train step was compiled again at call {i + 1}"
    if i == 0:
      assert compile_events[TRACE_EVENT, "train_step"] == 1, dict(compile_events)
      assert compile_events[COMPILE_EVENT, "jit(train_step)"] == 1, dict(compile_events)
    else:  # nothing at all is traced or compiled by a later step
      assert sum(compile_events.values()) == before, (i + 1, dict(compile_events))
  assert int(state.step) == 4
  assert len(set(losses)) == 4, losses  # every call ran on its own new batch

  sampler_programs = sampling.SamplerPrograms(config, g, mesh)
  sampler = sampling.Sampler(sampler_programs, sharding.replicate(programs.seed_key_data(1), mesh))
  jitted = _jitted_parts(sampler_programs)
  assert jitted, "found no jitted function in the sampler"
  z, y, _, _ = sampling.grid_inputs(config, mesh.size)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh))
  first = np.asarray(sampler(state, put(z), put(y)))
  assert sum(n for (event, _), n in compile_events.items() if event == TRACE_EVENT) > 1
  state, _ = step(state, sharding.global_batch(_batch(rng, config), mesh), key)
  z2, y = put(rng.standard_normal(z.shape).astype(np.float32)), put(y)
  before = dict(compile_events)
  second = np.asarray(sampler(state, z2, y))  # a new state (new EMA weights) and new noise
  third = np.asarray(sampler(state, put(z), y))  # the same state again
  assert dict(compile_events) == before, "the sampler traced or compiled again"
  assert first.shape == second.shape == (len(z), 32, 32, 1)
  assert not np.allclose(first, second) and not np.allclose(second, third)
  sizes = {k: f._cache_size() for k, f in jitted.items()}
  assert all(n <= 1 for n in sizes.values()) and any(n == 1 for n in sizes.values()), sizes
  assert step.last._cache_size() == 1 and compile_events[TRACE_EVENT, "train_step"] == 1


def _edited(config, field, value):
  config = config.copy_and_resolve_references()
  *parents, name = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  return config


def test_runs_of_one_config_share_their_programs():
  """programs.programs: one build per config and mesh, whatever the seed; fields only the loops
  read do not count."""
  config = fashion_mnist.get_config("smoke")
  mesh = sharding.create_mesh(jax.devices()[:1])
  built = programs.programs(config, mesh).compiled
  for field, value in (
    ("num_train_steps", 99),
    ("checkpoint_every_steps", 5),
    ("dataset.data_dir", "/elsewhere"),
    ("evals.periodic.num_samples", 7),
    ("max_nonfinite_steps", 3),
    ("num_sample_columns", 4),
    ("seed", 1),
    ("profile_steps", 2),
    ("model.kernels.conv_kernel_grad", built.kernels.conv_kernel_grad),
  ):
    assert programs.programs(_edited(config, field, value), mesh).compiled is built, field
  assert programs.programs(config, sharding.create_mesh(jax.devices()[:1])).compiled is built  # an equal mesh
  for field, value in (
    ("model.ch", 8),
    ("model.attention_impl", "dot_product_attention"),
    ("optimizer.d_lr", 1e-3),
    ("d_steps_per_g_step", 2),
    ("dtype", "bfloat16"),
    ("batch_size", 16),
    ("sample_bn_stats", "running"),
    ("ema_start_step", 3),
    ("loss", "nonsaturating"),
    ("model.kernels.resampling_conv", "composed"),
  ):
    assert programs.programs(_edited(config, field, value), mesh).compiled is not built, field
  config.model.ch = 8  # a later edit of the caller's config does not reach the built programs
  assert built.generator.ch == 4


def test_seeds_are_data_one_compile_serves_every_seed_and_gives_the_constant_seeds_results(compiled):
  """Runs of three seeds compile their step and init once; each seed's results are bitwise those
  of a program with that seed compiled in as a constant (as before seeds were data), and
  different seeds differ."""
  config = fashion_mnist.get_config("smoke")
  programs.clear_cache()  # as in a new process: the first seed builds (or loads) the programs
  mesh = sharding.create_mesh(jax.devices()[:1])
  batch = sharding.global_batch(_batch(np.random.default_rng(0), config), mesh)
  results = {}
  for seed in (0, 1, 2):
    config.seed = seed
    built = programs.programs(config, mesh)
    state, metrics = built.train_step(built.init(), batch)
    results[seed] = jax.device_get((state.g_params, metrics["d_loss"]))
  names = compiled()
  assert names.count("train_step") == 1 and names.count("init_state") == 1, names
  assert not np.array_equal(results[0][1], results[1][1])

  g, d = built.generator, built.discriminator
  g_tx, d_tx = programs.build_optimizers(config)
  step = make_train_step(config, g, d, g_tx, d_tx, mesh, built.kernels.parameter_update)
  constant = programs.seed_key_data(2)
  init = jax.jit(lambda: programs.init_state(config, g, d, g_tx, d_tx, constant))
  state, metrics = jax.jit(lambda s, b: step.last.__wrapped__(s, b, constant, step.all_finite))(init(), batch)
  for a, b in zip(
    jax.tree.leaves(jax.device_get((state.g_params, metrics["d_loss"]))),
    jax.tree.leaves(results[2]),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)


SLOW = bool(os.environ.get("SAGAN_JAX_SLOW_TESTS"))


def _n_to_1(d_steps):
  """(config, mesh, key, init, step, batches) of a smoke run with d_steps D updates per G update."""
  config = fashion_mnist.get_config("smoke")
  config.d_steps_per_g_step = d_steps
  mesh = sharding.create_mesh(jax.devices()[:1])
  g, d = programs.build_models(config)
  g_tx, d_tx = programs.build_optimizers(config)
  key = sharding.replicate(programs.seed_key_data(config.seed), mesh)
  init = jax.jit(functools.partial(programs.init_state, config, g, d, g_tx, d_tx))
  step = make_train_step(
    config, g, d, g_tx, d_tx, mesh, programs.resolve_kernels(config, mesh).parameter_update
  )
  rng = np.random.default_rng(0)
  batches = [sharding.global_batch(_batch(rng, config), mesh) for _ in range(2)]
  return config, mesh, key, init, step, batches


def test_n_d_updates_are_one_d_update_program_called_n_minus_1_times(compile_events):
  """D:G 3:1: the earlier D updates compile one program (called twice an iteration, never
  again); an iteration is those two D updates, in order, then the 1:1 program; each moves D."""
  config, _, key, init, step, batches = _n_to_1(3)
  state = init(key)
  for batch in batches:
    state, metrics = step(state, batch, key)
  assert compile_events[COMPILE_EVENT, "jit(d_update_at)"] == 1, dict(compile_events)
  assert compile_events[COMPILE_EVENT, "jit(train_step)"] == 1, dict(compile_events)
  assert step.earlier._cache_size() == 1 and step.last._cache_size() == 1
  assert int(state.step) == 2

  by_hand, moved = init(key), []
  for batch in batches:
    d_finite = step.all_finite
    for index in range(config.d_steps_per_g_step - 1):
      before = jax.tree.leaves(by_hand.d_params)
      by_hand, d_finite = step.earlier(by_hand, batch, key, index, d_finite)
      moved.append(
        all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(by_hand.d_params), before, strict=True))
      )
    by_hand, by_hand_metrics = step.last(by_hand, batch, key, d_finite)
  assert moved == [True] * 4
  for a, b in zip(
    jax.tree.leaves((state, metrics)), jax.tree.leaves((by_hand, by_hand_metrics)), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(not SLOW, reason="compiles the unrolled 3:1 step (~1 min); set SAGAN_JAX_SLOW_TESTS=1")
def test_n_d_updates_equal_one_unrolled_program():
  """The host loop of 3:1 computes what one program of the same updates, unrolled, does (up to
  the rounding of another fusion)."""
  config, _, key, init, step, batches = _n_to_1(3)

  def unrolled(s, b, k):
    d_finite = step.all_finite
    for index in range(config.d_steps_per_g_step - 1):
      s, d_finite = step.earlier.__wrapped__(s, b, k, index, d_finite)
    return step.last.__wrapped__(s, b, k, d_finite)

  reference = jax.jit(unrolled)
  state, expected = init(key), init(key)
  for batch in batches:
    state, metrics = step(state, batch, key)
    expected, expected_metrics = reference(expected, batch, key)
  for name in ("d_loss", "g_loss", "d_real", "d_fake"):
    np.testing.assert_allclose(metrics[name], expected_metrics[name], rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
