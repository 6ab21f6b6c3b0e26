"""Sampling from the EMA generator, and the fixed inputs of a run's figures.

``Sampler`` draws images from the EMA G with the BN statistics the config names (and,
on request, the attention maps β each G layer used); ``discriminator_attention`` gives
D's β on real images. The fixed noise of the sample grid, the attention probes, the
class sheets and the evaluation is drawn by ``fixed_noise``, here only.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sagan_jax import sharding
from sagan_jax.data.source import label_values
from sagan_jax.models.attention import explicit_attention, sown_attention
from sagan_jax.models.layers import SPECTRAL

GRID_SEED_OFFSET = 12345  # from config.seed: the grid's z differ from the training noise
MAX_GRID_CLASSES = 10


def grid_classes(num_classes: int) -> np.ndarray:
  """At most MAX_GRID_CLASSES classes, spread over [0, num_classes): the rows of a grid (an
  unconditional model's grid: MAX_GRID_CLASSES rows of label 0)."""
  if num_classes == 0:
    return np.zeros(MAX_GRID_CLASSES, int)
  shown = min(MAX_GRID_CLASSES, num_classes)
  return np.unique(np.linspace(0, num_classes - 1, shown).round().astype(int))


def fixed_noise(labels, z_dim: int, seed: int, multiple: int):
  """(z, y, n): z ~ N(0, I) from ``seed`` for the n ``labels``, both padded to a multiple
  of ``multiple`` (the device count or a batch size) by repeating; callers drop the pad."""
  labels = np.asarray(labels)
  n = len(labels)
  padded = sharding.round_up(n, multiple)
  z = np.random.default_rng(seed).standard_normal((padded, z_dim)).astype(np.float32)
  return z, np.resize(labels, padded).astype(np.int32), n


def truncated_normal(rng: np.random.Generator, shape, truncation: float | None = None) -> np.ndarray:
  """float32 N(0, I) noise; with ``truncation`` T > 0, every entry outside [-T, T] is drawn
  again until none is (BigGAN's truncation trick, by resampling rather than clipping)."""
  z = rng.standard_normal(shape).astype(np.float32)
  if truncation is None:
    return z
  if not truncation > 0:
    raise ValueError(f"truncation must be > 0 (or None for none), not {truncation}")
  outside = np.abs(z) > truncation
  while outside.any():
    z[outside] = rng.standard_normal(int(outside.sum())).astype(np.float32)
    outside = np.abs(z) > truncation
  return z


def interpolate(a: np.ndarray, b: np.ndarray, weights, method: str = "slerp") -> np.ndarray:
  """Rows a → b at each of ``weights`` (in [0, 1]): (len(weights), *a.shape). 'lerp' is the
  straight line; 'slerp' the great circle at linearly interpolated norm, which keeps an
  interpolated Gaussian z as long as its ends (a straight line passes closer to 0)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  t = np.asarray(weights, np.float64).reshape((-1,) + (1,) * a.ndim)
  if method == "lerp":
    return ((1 - t) * a + t * b).astype(np.float32)
  if method != "slerp":
    raise ValueError(f"interpolation {method!r}: use 'slerp' or 'lerp'")
  norm_a = np.linalg.norm(a, axis=-1, keepdims=True)
  norm_b = np.linalg.norm(b, axis=-1, keepdims=True)
  unit_a, unit_b = a / np.maximum(norm_a, 1e-12), b / np.maximum(norm_b, 1e-12)
  angle = np.arccos(np.clip(np.sum(unit_a * unit_b, axis=-1, keepdims=True), -1.0, 1.0))
  sin = np.sin(angle)
  parallel = sin < 1e-6  # (anti)parallel ends: no plane to turn in; the straight line then
  safe_sin = np.where(parallel, 1.0, sin)
  on_circle = np.where(
    parallel,
    (1 - t) * unit_a + t * unit_b,
    (np.sin((1 - t) * angle) * unit_a + np.sin(t * angle) * unit_b) / safe_sin,
  )
  return (on_circle * ((1 - t) * norm_a + t * norm_b)).astype(np.float32)


def grid_inputs(config, num_devices: int):
  """(z, y, rows, cols) of the sample grid: one row per shown class, fixed across steps."""
  classes, cols = grid_classes(config.model.num_classes), config.num_sample_columns
  z, y, _ = fixed_noise(
    np.repeat(classes, cols), config.model.z_dim, config.seed + GRID_SEED_OFFSET, num_devices
  )
  return z, y, len(classes), cols


def probe_inputs(config, num_devices: int):
  """(z, y, n) of the training attention figure: the first sample of each grid row."""
  z, y, rows, cols = grid_inputs(config, num_devices)
  padded = sharding.round_up(rows, num_devices)
  return (np.resize(z[::cols][:rows], (padded, z.shape[1])), np.resize(y[::cols][:rows], padded), rows)


def class_sheet_inputs(config, classes, per_class: int, num_devices: int, seed: int):
  """(z, y, n): per_class samples of each class, untruncated z, padded to the devices."""
  return fixed_noise(np.repeat(np.asarray(classes), per_class), config.model.z_dim, seed, num_devices)


def discriminator_attention(discriminator, state, images, labels) -> dict:
  """{layer: β} of every D attention layer on these images (D's own forward, eval mode,
  in the explicit form whatever ``attention_impl`` trains)."""
  _, inter = explicit_attention(discriminator).apply(
    {"params": state.d_params, SPECTRAL: state.d_spectral}, images, labels, mutable=["intermediates"]
  )
  return sown_attention(inter)


class SamplerPrograms:
  """The jitted sampling programs of one config's G, independent of its seed (shared by the
  Samplers of every seed)."""

  def __init__(self, config, generator, mesh: Mesh):
    m = config.model
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    constrain = lambda x: jax.lax.with_sharding_constraint(x, batch)
    stat_names = {"batch_mean": "mean", "batch_var": "var"}
    self.sample_bn_stats = config.sample_bn_stats

    def standing_stats(state, key_data):
      variables = {"params": state.ema_params, "batch_stats": state.g_batch_stats, SPECTRAL: state.g_spectral}

      def measure(key):
        kz, ky = jax.random.split(key)
        z = constrain(jax.random.normal(kz, (config.batch_size, m.z_dim)))
        y = constrain(jax.random.randint(ky, (config.batch_size,), 0, label_values(m.num_classes)))
        _, inter = generator.apply(variables, z, y, train=True, mutable=["intermediates"])
        flat = flax.traverse_util.flatten_dict(inter["intermediates"])
        # sown values are 1-tuples; attention maps are dropped here, not carried through the map
        return {
          path[:-1] + (stat_names[path[-1]],): v[0] for path, v in flat.items() if path[-1] in stat_names
        }

      keys = jax.random.split(jax.random.wrap_key_data(key_data), config.standing_stats_batches)
      stats = jax.lax.map(measure, keys)
      return flax.traverse_util.unflatten_dict({k: jnp.mean(v, axis=0) for k, v in stats.items()})

    def generate(model, collect, state, stats, z, y):
      variables = {
        "params": state.ema_params,
        SPECTRAL: state.g_spectral,
        "batch_stats": state.g_batch_stats if stats is None else stats,
      }
      train_mode = config.sample_bn_stats == "batch"
      if not collect:
        return model.apply(variables, z, y, train=train_mode)
      images, inter = model.apply(variables, z, y, train=train_mode, mutable=["intermediates"])
      return images, sown_attention(inter)

    explicit = explicit_attention(generator)
    shardings = dict(in_shardings=(replicated, replicated, batch, batch), out_shardings=replicated)
    self.generate = jax.jit(functools.partial(generate, generator, False), **shardings)
    self.generate_attention = jax.jit(functools.partial(generate, explicit, True), **shardings)
    self.standing_stats = jax.jit(
      standing_stats, in_shardings=(replicated, replicated), out_shardings=replicated
    )


class Sampler:
  """sampler(state, z, y) -> images from the EMA generator; z, y batch-sharded.

  BN statistics follow ``config.sample_bn_stats``: 'standing' measures them afresh
  for the EMA weights on ``standing_stats_batches`` batches of new samples at the
  training batch size (BigGAN's standing stats; drawn with the key ``stats_key_data``,
  measured once per state, reused while the state is the same), 'running' uses G's
  running averages, 'batch' the statistics of the batch being sampled.

  ``with_attention(state, z, y)`` returns (images, {layer: β}) with β (B, queries, keys)
  the softmax weights each attention layer of G used (its sown 'attention'). It runs
  the explicit-softmax form whatever ``attention_impl`` trains, as only that form
  materialises β; training never collects them.
  """

  def __init__(self, programs: SamplerPrograms, stats_key_data):
    self._programs, self._stats_key_data = programs, stats_key_data
    self._cache = {}  # standing stats of the last state sampled, keyed by its EMA parameters

  def _stats(self, state):
    if self._programs.sample_bn_stats != "standing":
      return None
    params = jax.tree.leaves(state.ema_params)
    cached = self._cache.get("params")
    if (
      cached is None
      or len(cached) != len(params)
      or any(a is not b for a, b in zip(cached, params, strict=True))
    ):
      self._cache = {
        "params": params,  # holding them keeps their ids from being reused
        "stats": self._programs.standing_stats(state, self._stats_key_data),
      }
    return self._cache["stats"]

  def __call__(self, state, z, y):
    return self._programs.generate(state, self._stats(state), z, y)

  def with_attention(self, state, z, y):
    return self._programs.generate_attention(state, self._stats(state), z, y)
