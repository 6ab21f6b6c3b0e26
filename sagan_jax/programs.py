"""A config's programs: the train state, the models and optimizers, and the jitted
init / train step / sampler on a mesh, built once per process and cached."""
import collections
import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sagan_jax import config as config_lib
from sagan_jax import sampling, sharding
from sagan_jax.models.discriminator import Discriminator
from sagan_jax.models.generator import Generator
from sagan_jax.models.layers import SPECTRAL
from sagan_jax.step import make_train_step


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


def build_models(config):
  m = config.model
  attention = dict(key_channel_ratio=m.key_channel_ratio, value_channel_ratio=m.value_channel_ratio,
                   pool_kv=m.pool_kv, impl=m.attention_impl, query_chunk=m.attention_query_chunk,
                   block=m.attention_block)
  dtype = config_lib.DTYPES[config.dtype]
  generator = Generator(
      resolution=m.resolution, ch=m.ch, z_dim=m.z_dim, num_classes=m.num_classes,
      image_channels=m.image_channels, attention_sides=config_lib.attention_sides(m, "g"),
      use_sn=m.g_spectral_norm, sn_gains=m.sn_cbn_gains, attention_kwargs=attention, dtype=dtype)
  discriminator = Discriminator(
      resolution=m.resolution, ch=config_lib.d_width(m), num_classes=m.num_classes,
      attention_sides=config_lib.attention_sides(m, "d"), use_sn=m.d_spectral_norm,
      attention_kwargs=attention, dtype=dtype)
  return generator, discriminator


def build_optimizers(config):
  """TTUR (paper §4.2): two Adams with their own learning rates; β1, β2 from the config."""
  o = config.optimizer
  adam = lambda lr: optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  return adam(o.g_lr), adam(o.d_lr)


def init_state(config, generator, discriminator, g_tx, d_tx) -> TrainState:
  m = config.model
  key_g, key_d = jax.random.split(jax.random.key(config.seed))
  z = jnp.zeros((2, m.z_dim), jnp.float32)
  y = jnp.zeros((2,), jnp.int32)
  x = jnp.zeros((2, m.resolution, m.resolution, m.image_channels), jnp.float32)
  g_vars = generator.init({"params": key_g}, z, y, train=False)
  d_vars = discriminator.init({"params": key_d}, x, y)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_vars["params"], g_batch_stats=g_vars["batch_stats"],
      g_spectral=g_vars.get(SPECTRAL, {}), g_opt_state=g_tx.init(g_vars["params"]),
      d_params=d_vars["params"], d_spectral=d_vars.get(SPECTRAL, {}),
      d_opt_state=d_tx.init(d_vars["params"]),
      ema_params=g_vars["params"], nonfinite_streak=jnp.zeros((), jnp.int32))


def abstract_state(config) -> TrainState:
  """The train state's shapes and dtypes, without computing (or compiling) it."""
  generator, discriminator = build_models(config)
  return jax.eval_shape(functools.partial(init_state, config, generator, discriminator,
                                          *build_optimizers(config)))


def parameter_count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class Programs:
  """One config's models and optimizers, and its jitted programs on one mesh."""
  generator: Generator
  discriminator: Discriminator
  init: Any        # init() -> the initial TrainState, replicated over the mesh
  train_step: Any  # step.make_train_step's
  sampler: sampling.Sampler


_PROGRAMS = collections.OrderedDict()  # (fingerprint, mesh) -> Programs, least recently used first
_MAX_PROGRAMS = 8


def programs(config, mesh: Mesh) -> Programs:
  """The Programs of ``config`` on ``mesh``, built once per process.

  jit traces and compiles per function object: rebuilding them for every run would
  trace and compile G and D again when a run is resumed in the same process, when its figures or evaluation follow training, or in a sweep or a
  test session running the same config again. Keyed by ``config.program_fingerprint``.
  """
  key = (config_lib.program_fingerprint(config), mesh)
  if key in _PROGRAMS:
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]
  config = config.copy_and_resolve_references()  # later edits of the caller's config stay out
  generator, discriminator = build_models(config)
  g_tx, d_tx = build_optimizers(config)
  init = jax.jit(functools.partial(init_state, config, generator, discriminator, g_tx, d_tx),
                 out_shardings=sharding.replicated(mesh))
  built = Programs(generator, discriminator, init,
                   make_train_step(config, generator, discriminator, g_tx, d_tx, mesh),
                   sampling.Sampler(config, generator, mesh))
  _PROGRAMS[key] = built
  while len(_PROGRAMS) > _MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return built
