"""A config's programs: the train state, the models and optimizers, and the jitted
init / train step / sampler on a mesh, built once per process and cached.

The compiled programs depend neither on the seed (it is an argument: runs of N seeds compile
once) nor on the host (the formulation choices are resolved from the config for the mesh's
devices, sagan_jax.kernels); ``programs`` binds a config's seed to them.
"""

import collections
import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sagan_jax import config as config_lib
from sagan_jax import kernels as kernels_lib
from sagan_jax import sampling, sharding
from sagan_jax.models.discriminator import Discriminator
from sagan_jax.models.generator import Generator
from sagan_jax.models.kernels import PLAIN, Kernels
from sagan_jax.models.layers import SPECTRAL
from sagan_jax.step import make_train_step

# From config.seed: the standing statistics' samples differ from the training noise.
STANDING_STATS_SEED_OFFSET = 1


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  g_spectral: Any
  g_opt_state: Any
  d_params: Any
  d_spectral: Any
  d_opt_state: Any
  ema_params: Any
  nonfinite_streak: jax.Array  # consecutive steps whose update was skipped as non-finite


def build_models(config, kernels: Kernels = PLAIN):
  """(G, D) of ``config``, computing with the ``kernels`` formulations (the plain ones unless
  given; the math is the same, models/kernels.py)."""
  m = config.model
  attention = dict(
    key_channel_ratio=m.key_channel_ratio,
    value_channel_ratio=m.value_channel_ratio,
    pool_kv=m.pool_kv,
    impl=m.attention_impl,
    query_chunk=m.attention_query_chunk,
    block=m.attention_block,
  )
  dtype = config_lib.DTYPES[config.dtype]
  generator = Generator(
    resolution=m.resolution,
    ch=m.ch,
    z_dim=m.z_dim,
    num_classes=m.num_classes,
    image_channels=m.image_channels,
    attention_sides=config_lib.attention_sides(m, "g"),
    use_sn=m.g_spectral_norm,
    sn_gains=m.sn_cbn_gains,
    attention_kwargs=attention,
    dtype=dtype,
    kernels=kernels,
    bn_eps=m.bn_eps,
  )
  discriminator = Discriminator(
    resolution=m.resolution,
    ch=config_lib.d_width(m),
    num_classes=m.num_classes,
    attention_sides=config_lib.attention_sides(m, "d"),
    use_sn=m.d_spectral_norm,
    attention_kwargs=attention,
    dtype=dtype,
    kernels=kernels,
    shortcut_preactivated=m.d_shortcut_preactivated,
  )
  return generator, discriminator


def build_optimizers(config):
  """TTUR (paper §4.2): two Adams with their own learning rates; β1, β2 from the config."""
  o = config.optimizer
  adam = lambda lr: optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  return adam(o.g_lr), adam(o.d_lr)


def seed_key_data(seed: int):
  """The raw data of the random key a seed names (the key init, the step and the sampler take,
  as data: the programs do not depend on it)."""
  return jax.random.key_data(jax.random.key(seed))


def init_state(config, generator, discriminator, g_tx, d_tx, key_data) -> TrainState:
  m = config.model
  key_g, key_d = jax.random.split(jax.random.wrap_key_data(key_data))
  z = jnp.zeros((2, m.z_dim), jnp.float32)
  y = jnp.zeros((2,), jnp.int32)
  x = jnp.zeros((2, m.resolution, m.resolution, m.image_channels), jnp.float32)
  g_vars = generator.init({"params": key_g}, z, y, train=False)
  d_vars = discriminator.init({"params": key_d}, x, y)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_vars["params"],
    g_batch_stats=g_vars["batch_stats"],
    g_spectral=g_vars.get(SPECTRAL, {}),
    g_opt_state=g_tx.init(g_vars["params"]),
    d_params=d_vars["params"],
    d_spectral=d_vars.get(SPECTRAL, {}),
    d_opt_state=d_tx.init(d_vars["params"]),
    ema_params=g_vars["params"],
    nonfinite_streak=jnp.zeros((), jnp.int32),
  )


def abstract_state(config) -> TrainState:
  """The train state's shapes and dtypes, without computing (or compiling) it."""
  generator, discriminator = build_models(config)
  key_data = jax.eval_shape(seed_key_data, config.seed)  # abstract: no device is touched
  return jax.eval_shape(
    functools.partial(init_state, config, generator, discriminator, *build_optimizers(config)), key_data
  )


def parameter_count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


class Compiled(NamedTuple):
  """One config's models and jitted programs on one mesh, whatever its seed."""

  generator: Generator
  discriminator: Discriminator
  kernels: Kernels  # the formulations they compute in (config.model.kernels, resolved)
  init: Any  # jit: key_data -> the initial TrainState, replicated over the mesh
  train_step: Any  # jit: (state, batch, key_data) -> (state, metrics); step.make_train_step's
  sampler: sampling.SamplerPrograms


class Seeded(NamedTuple):
  """A program with the run's key bound as its last argument: ``fn(*args)``, ``fn.lower(*args)``
  and ``fn.eval_shape(*args)`` as the jitted function takes them without it."""

  jitted: Any
  key_data: Any

  def __call__(self, *args):
    return self.jitted(*args, self.key_data)

  def lower(self, *args):
    return self.jitted.lower(*args, self.key_data)

  def eval_shape(self, *args):
    """The outputs' shapes, dtypes and shardings, from the jitted function's own trace (cached:
    nothing is traced again, nothing compiled or run)."""
    return self.jitted.eval_shape(*args, self.key_data)


class Programs(NamedTuple):
  """A config's programs with its seed bound: what a training or a tool runs."""

  generator: Generator
  discriminator: Discriminator
  kernels: Kernels
  init: Seeded  # () -> the initial TrainState of the config's seed
  train_step: Seeded  # (state, batch) -> (state, metrics)
  sampler: sampling.Sampler
  compiled: Compiled


_COMPILED = collections.OrderedDict()  # (fingerprint, kernels, mesh) -> Compiled, least recently used first
_MAX_COMPILED = 8


def resolve_kernels(config, mesh: Mesh) -> Kernels:
  """config.model.kernels resolved for the mesh's devices (sagan_jax.kernels)."""
  return kernels_lib.resolve(config.model.kernels, mesh.devices.flat)


def compiled_programs(config, mesh: Mesh) -> Compiled:
  """The seed-free programs of ``config`` on ``mesh``, built once per process.

  jit traces and compiles per function object: rebuilding them for every run would trace and
  compile G and D again when a run is resumed in the same process, when its figures or
  evaluation follow training, or when a sweep or a test session runs the same config again
  (any seed). Keyed by ``config.program_fingerprint`` and the resolved kernels.
  """
  kernels = resolve_kernels(config, mesh)
  key = (config_lib.program_fingerprint(config), kernels, mesh)
  if key in _COMPILED:
    _COMPILED.move_to_end(key)
    return _COMPILED[key]
  config = config.copy_and_resolve_references()  # later edits of the caller's config stay out
  generator, discriminator = build_models(config, kernels)
  g_tx, d_tx = build_optimizers(config)
  replicated = sharding.replicated(mesh)
  init = jax.jit(
    functools.partial(init_state, config, generator, discriminator, g_tx, d_tx),
    in_shardings=(replicated,),
    out_shardings=replicated,
  )
  built = Compiled(
    generator,
    discriminator,
    kernels,
    init,
    make_train_step(config, generator, discriminator, g_tx, d_tx, mesh, kernels.parameter_update),
    sampling.SamplerPrograms(config, generator, mesh),
  )
  _COMPILED[key] = built
  while len(_COMPILED) > _MAX_COMPILED:
    _COMPILED.popitem(last=False)
  return built


def clear_cache() -> None:
  """Forgets every config's built programs (as a new process would start); JAX's own caches
  stay."""
  _COMPILED.clear()


def programs(config, mesh: Mesh) -> Programs:
  """The programs of ``config`` on ``mesh`` with its seed bound (compiled once per process for
  every seed)."""
  built = compiled_programs(config, mesh)
  key_data = sharding.replicate(seed_key_data(config.seed), mesh)
  stats_key_data = sharding.replicate(seed_key_data(config.seed + STANDING_STATS_SEED_OFFSET), mesh)
  return Programs(
    built.generator,
    built.discriminator,
    built.kernels,
    Seeded(built.init, key_data),
    Seeded(built.train_step, key_data),
    sampling.Sampler(built.sampler, stats_key_data),
    built,
  )
