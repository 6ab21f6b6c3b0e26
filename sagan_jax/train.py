"""SAGAN training: the state, one jitted D/G step over a device mesh, and the loop.

One call of the train step makes ``d_steps_per_g_step`` discriminator updates
(a ``lax.scan`` over the batch's leading axis) and one generator update, then the
EMA of G. The whole step is one ``jax.jit`` over a ``Mesh``: parameters replicated,
batches split on the data axis, so BN statistics span the global batch.
"""
import collections
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from sagan_jax import checkpointing, losses, sharding, visualize
from sagan_jax.errors import Preempted, TrainingDiverged, UserError
from sagan_jax.models.attention import (ATTENTION_BLOCKS, ATTENTION_IMPLS, explicit_attention,
                                        sown_attention)
from sagan_jax.models.discriminator import Discriminator, discriminator_sides
from sagan_jax.models.generator import G_ARCH, Generator, generator_sides
from sagan_jax.models.layers import SPECTRAL

SAMPLE_BN_STATS = ("standing", "running", "batch")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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


def _attention_sides(model_config, which: str):
  override = model_config.get(f"{which}_attention_resolutions")
  return tuple(model_config.attention_resolutions if override is None else override)


def validate_config(config) -> None:
  """Raises UserError, naming the field, for a config that cannot train."""
  m = config.model
  if m.resolution not in G_ARCH:
    raise UserError(f"model.resolution {m.resolution} is not supported; use one of {sorted(G_ARCH)}")
  for which, sides in (("g", generator_sides(m.resolution)), ("d", discriminator_sides(m.resolution))):
    bad = sorted(set(_attention_sides(m, which)) - set(sides))
    if bad:
      net = "generator" if which == "g" else "discriminator"
      raise UserError(
          f"attention side(s) {bad} do not exist in the {m.resolution}×{m.resolution} {net}, whose "
          f"feature sides are {sides}; fix model.attention_resolutions "
          f"(or model.{which}_attention_resolutions)")
  for name in ("num_train_steps", "batch_size", "d_steps_per_g_step", "log_every_steps",
               "sample_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    if config[name] <= 0:
      raise UserError(f"{name} must be positive, got {config[name]}")
  if config.max_nonfinite_steps <= 0:
    raise UserError(f"max_nonfinite_steps must be positive, got {config.max_nonfinite_steps}")
  if m.attention_impl not in ATTENTION_IMPLS:
    raise UserError(f"model.attention_impl {m.attention_impl!r} is not one of {ATTENTION_IMPLS}")
  if m.attention_impl == "dot_product_attention" and m.key_channel_ratio != m.value_channel_ratio:
    raise UserError(
        f"model.attention_impl 'dot_product_attention' needs equal key and value widths, but "
        f"key_channel_ratio is {m.key_channel_ratio} and value_channel_ratio {m.value_channel_ratio}; "
        f"use attention_impl 'chunked' or 'xla' for the released code's C/2 values")
  if m.attention_query_chunk <= 0:
    raise UserError(f"model.attention_query_chunk must be positive, got {m.attention_query_chunk}")
  if m.attention_block not in ATTENTION_BLOCKS:
    raise UserError(f"model.attention_block {m.attention_block!r} is not one of {ATTENTION_BLOCKS}")
  if config.sample_bn_stats not in SAMPLE_BN_STATS:
    raise UserError(f"sample_bn_stats {config.sample_bn_stats!r} is not one of {SAMPLE_BN_STATS}")
  if config.dtype not in DTYPES:
    raise UserError(f"dtype {config.dtype!r} is not one of {sorted(DTYPES)}")
  if config.loss not in losses.LOSSES:
    raise UserError(f"loss {config.loss!r} is not one of {sorted(losses.LOSSES)}")


def build_models(config):
  m = config.model
  attention = dict(key_channel_ratio=m.key_channel_ratio, value_channel_ratio=m.value_channel_ratio,
                   pool_kv=m.pool_kv, impl=m.attention_impl, query_chunk=m.attention_query_chunk,
                   block=m.attention_block)
  dtype = DTYPES[config.dtype]
  generator = Generator(
      resolution=m.resolution, ch=m.ch, z_dim=m.z_dim, num_classes=m.num_classes,
      image_channels=m.image_channels, attention_sides=_attention_sides(m, "g"),
      use_sn=m.g_spectral_norm, sn_gains=m.sn_cbn_gains, attention_kwargs=attention, dtype=dtype)
  discriminator = Discriminator(
      resolution=m.resolution, ch=m.ch, num_classes=m.num_classes,
      attention_sides=_attention_sides(m, "d"), use_sn=m.d_spectral_norm,
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


def attention_gammas(params) -> dict:
  """γ of every attention layer, keyed like 'attention16/gamma'."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  return {k: v for k, v in flat.items() if k.endswith("/gamma")}


def _all_finite(*trees):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


def _keep_if(ok, new, old):
  """new where ok, else old: a non-finite update is never applied (nor checkpointed)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def step_keys(seed: int, step):
  """Per-step randomness derived from (seed, step): a resumed run draws the same noise."""
  return jax.random.split(jax.random.fold_in(jax.random.key(seed), step), 4)


def make_train_step(config, generator, discriminator, g_tx, d_tx, mesh: Mesh):
  """Returns jit(train_step)(state, batch) -> (state, metrics); batch arrays are (D steps, B, …)."""
  d_loss_fn, g_loss_fn = losses.get_losses(config.loss)
  m = config.model
  batch_shard = sharding.batch_sharding(mesh)
  constrain = lambda x: jax.lax.with_sharding_constraint(x, batch_shard)

  def noise(key, batch_size):
    kz, ky = jax.random.split(key)
    z = constrain(jax.random.normal(kz, (batch_size, m.z_dim), jnp.float32))
    y = constrain(jax.random.randint(ky, (batch_size,), 0, m.num_classes, jnp.int32))
    return z, y

  def generate(state, z, y):
    """G in train mode (batch statistics) without touching its running stats or SN vectors."""
    return generator.apply({"params": state.g_params, "batch_stats": state.g_batch_stats,
                            SPECTRAL: state.g_spectral}, z, y, train=True, update_stats=False)

  def d_update(state, inputs):
    images, labels, key = inputs
    z, y_fake = noise(key, images.shape[0])
    fake = jax.lax.stop_gradient(generate(state, z, y_fake))

    def loss_fn(d_params):
      # Real and fake in one pass, so SN's power iteration advances once per D step.
      logits, new_vars = discriminator.apply(
          {"params": d_params, SPECTRAL: state.d_spectral},
          jnp.concatenate([images, fake]), jnp.concatenate([labels, y_fake]),
          update_stats=True, mutable=[SPECTRAL])
      d_real, d_fake = jnp.split(logits, 2)
      return d_loss_fn(d_real, d_fake), (new_vars.get(SPECTRAL, {}), d_real, d_fake)

    (loss, (spectral, d_real, d_fake)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    updates, d_opt_state = d_tx.update(grads, state.d_opt_state, state.d_params)
    ok = _all_finite(loss, grads)
    old = (state.d_params, state.d_spectral, state.d_opt_state)
    new = (optax.apply_updates(state.d_params, updates), spectral, d_opt_state)
    d_params, d_spectral, d_opt_state = _keep_if(ok, new, old)
    state = state.replace(d_params=d_params, d_spectral=d_spectral, d_opt_state=d_opt_state)
    metrics = {"d_loss": loss, "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake),
               "d_grad_norm": optax.global_norm(grads), "d_finite": ok}
    return state, metrics

  def g_update(state, key):
    z, y = noise(key, config.batch_size)

    def loss_fn(g_params):
      fake, new_vars = generator.apply(
          {"params": g_params, "batch_stats": state.g_batch_stats, SPECTRAL: state.g_spectral},
          z, y, train=True, update_stats=True, mutable=["batch_stats", SPECTRAL])
      d_fake = discriminator.apply({"params": state.d_params, SPECTRAL: state.d_spectral}, fake, y)
      return g_loss_fn(d_fake), new_vars

    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
    ok = _all_finite(loss, grads, new_vars)
    old = (state.g_params, state.g_opt_state, state.g_batch_stats, state.g_spectral)
    new = (optax.apply_updates(state.g_params, updates), g_opt_state, new_vars["batch_stats"],
           new_vars.get(SPECTRAL, {}))  # {} when the net has no SN (ablations)
    g_params, g_opt_state, g_batch_stats, g_spectral = _keep_if(ok, new, old)
    state = state.replace(g_params=g_params, g_opt_state=g_opt_state, g_batch_stats=g_batch_stats,
                          g_spectral=g_spectral)
    return state, {"g_loss": loss, "g_grad_norm": optax.global_norm(grads), "g_finite": ok}

  def update_ema(state):
    decay = jnp.where(state.step < config.ema_start_step, 0.0, config.ema_decay)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, state.g_params)
    return state.replace(ema_params=ema)

  def train_step(state, batch):
    keys = step_keys(config.seed, state.step)
    n_d = batch["image"].shape[0]
    d_keys = jax.random.split(keys[0], n_d)
    state, d_metrics = jax.lax.scan(d_update, state, (batch["image"], batch["label"], d_keys))
    state, g_metrics = g_update(state, keys[1])
    all_finite = jnp.all(d_metrics.pop("d_finite")) & g_metrics.pop("g_finite")
    streak = jnp.where(all_finite, 0, state.nonfinite_streak + 1)
    state = update_ema(state.replace(step=state.step + 1, nonfinite_streak=streak))
    metrics = {k: v[-1] for k, v in d_metrics.items()}  # the last D step's values
    metrics.update(g_metrics)
    metrics["nonfinite_streak"] = streak
    metrics.update({f"gamma/g/{k}": v for k, v in attention_gammas(state.g_params).items()})
    metrics.update({f"gamma/d/{k}": v for k, v in attention_gammas(state.d_params).items()})
    return state, metrics

  replicated = sharding.replicated(mesh)
  return jax.jit(train_step, in_shardings=(replicated, sharding.batch_sharding(mesh, 1)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


class Sampler:
  """sampler(state, z, y) -> images from the EMA generator; z, y batch-sharded.

  BN statistics follow ``config.sample_bn_stats``: 'standing' measures them afresh
  for the EMA weights on ``standing_stats_batches`` batches of new samples at the
  training batch size (BigGAN's standing stats; measured once per state, reused while
  the state is the same), 'running' uses G's running averages, 'batch' the statistics
  of the batch being sampled.

  ``with_attention(state, z, y)`` returns (images, {layer: β}) with β (B, queries, keys)
  the softmax weights each attention layer of G used (its sown 'attention'). It runs
  the explicit-softmax form whatever ``attention_impl`` trains, as only that form
  materialises β; training never collects them.
  """

  def __init__(self, config, generator, mesh: Mesh):
    self.config = config
    m = config.model
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    constrain = lambda x: jax.lax.with_sharding_constraint(x, batch)
    stat_names = {"batch_mean": "mean", "batch_var": "var"}

    def standing_stats(state):
      variables = {"params": state.ema_params, "batch_stats": state.g_batch_stats,
                   SPECTRAL: state.g_spectral}

      def measure(key):
        kz, ky = jax.random.split(key)
        z = constrain(jax.random.normal(kz, (config.batch_size, m.z_dim)))
        y = constrain(jax.random.randint(ky, (config.batch_size,), 0, m.num_classes))
        _, inter = generator.apply(variables, z, y, train=True, mutable=["intermediates"])
        flat = flax.traverse_util.flatten_dict(inter["intermediates"])
        # sown values are 1-tuples; attention maps are dropped here, not carried through the map
        return {path[:-1] + (stat_names[path[-1]],): v[0] for path, v in flat.items()
                if path[-1] in stat_names}

      keys = jax.random.split(jax.random.key(config.seed + 1), config.standing_stats_batches)
      stats = jax.lax.map(measure, keys)
      return flax.traverse_util.unflatten_dict({k: jnp.mean(v, axis=0) for k, v in stats.items()})

    def generate(model, collect, state, stats, z, y):
      variables = {"params": state.ema_params, SPECTRAL: state.g_spectral,
                   "batch_stats": state.g_batch_stats if stats is None else stats}
      train_mode = config.sample_bn_stats == "batch"
      if not collect:
        return model.apply(variables, z, y, train=train_mode)
      images, inter = model.apply(variables, z, y, train=train_mode, mutable=["intermediates"])
      return images, sown_attention(inter)

    explicit = explicit_attention(generator)
    shardings = dict(in_shardings=(replicated, replicated, batch, batch), out_shardings=replicated)
    self._generate = jax.jit(functools.partial(generate, generator, False), **shardings)
    self._generate_attention = jax.jit(functools.partial(generate, explicit, True), **shardings)
    self._standing_stats = jax.jit(standing_stats, in_shardings=(replicated,),
                                   out_shardings=replicated)
    self._cache = {}  # standing stats of the last state sampled, keyed by its EMA parameters

  def _stats(self, state):
    if self.config.sample_bn_stats != "standing":
      return None
    params = jax.tree.leaves(state.ema_params)
    cached = self._cache.get("params")
    if cached is None or len(cached) != len(params) or any(a is not b for a, b in zip(cached, params)):
      self._cache = {"params": params,  # holding them keeps their ids from being reused
                     "stats": self._standing_stats(state)}
    return self._cache["stats"]

  def __call__(self, state, z, y):
    return self._generate(state, self._stats(state), z, y)

  def with_attention(self, state, z, y):
    return self._generate_attention(state, self._stats(state), z, y)


def make_sampler(config, generator, mesh: Mesh) -> Sampler:
  return Sampler(config, generator, mesh)


# Config fields only the loops (training, evaluation, data) read: the compiled programs
# do not depend on them, so configs that differ only there share one set of programs.
LOOP_FIELDS = ("num_train_steps", "log_every_steps", "sample_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "async_checkpoints", "max_nonfinite_steps", "num_sample_columns",
               "dataset", "inception_weights")


def program_fingerprint(config) -> str:
  """The config minus LOOP_FIELDS and eval_* fields, as canonical JSON."""
  fields = {k: v for k, v in config.to_dict().items()
            if k not in LOOP_FIELDS and not k.startswith("eval_")}
  return json.dumps(fields, sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class Programs:
  """One config's models and optimizers, and its jitted programs on one mesh."""
  generator: Generator
  discriminator: Discriminator
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  init: Any        # init() -> the initial TrainState, replicated over the mesh
  train_step: Any  # make_train_step's
  sampler: Sampler


_PROGRAMS = collections.OrderedDict()  # (fingerprint, mesh) -> Programs, least recently used first
_MAX_PROGRAMS = 8


def programs(config, mesh: Mesh) -> Programs:
  """The Programs of ``config`` on ``mesh``, built once per process.

  jit traces and compiles per function object: rebuilding them for every run would
  trace G and D again (~15 s on a CPU for the smallest model) when a run is resumed in
  the same process, when its figures or evaluation follow training, or in a sweep or a
  test session running the same config again. Keyed by ``program_fingerprint``.
  """
  key = (program_fingerprint(config), mesh)
  if key in _PROGRAMS:
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]
  config = config.copy_and_resolve_references()  # later edits of the caller's config stay out
  generator, discriminator = build_models(config)
  g_tx, d_tx = build_optimizers(config)
  init = jax.jit(functools.partial(init_state, config, generator, discriminator, g_tx, d_tx),
                 out_shardings=sharding.replicated(mesh))
  built = Programs(generator, discriminator, g_tx, d_tx, init,
                   make_train_step(config, generator, discriminator, g_tx, d_tx, mesh),
                   make_sampler(config, generator, mesh))
  _PROGRAMS[key] = built
  while len(_PROGRAMS) > _MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return built


def sample_grid_inputs(config, num_devices: int):
  """Fixed z and labels for the sample grid: one row per class (at most 10 classes shown)."""
  m = config.model
  classes = np.unique(np.linspace(0, m.num_classes - 1, min(10, m.num_classes)).round().astype(int))
  cols = config.num_sample_columns
  n = len(classes) * cols
  padded = -(-n // num_devices) * num_devices  # the batch must split over the devices
  rng = np.random.default_rng(config.seed + 12345)
  z = rng.standard_normal((padded, m.z_dim)).astype(np.float32)
  y = np.resize(np.repeat(classes, cols), padded).astype(np.int32)
  return z, y, len(classes), cols


def _next_batches(iterator, d_steps: int) -> dict:
  """Stacks one host batch per D step: arrays of shape (d_steps, local batch, …)."""
  batches = [next(iterator) for _ in range(d_steps)]
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


class _StopSignals:
  """SIGTERM/SIGINT set a flag instead of killing the process: the loop finishes its
  step, writes a checkpoint and stops. Handlers are restored on exit."""

  def __init__(self):
    self.signal_name, self.signal_number, self._previous = None, None, {}

  def _handle(self, signum, frame):
    del frame
    self.signal_name, self.signal_number = signal.Signals(signum).name, signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"workdir {workdir!r} is not writable ({e.strerror}); choose another --workdir")


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains (or resumes) the run in ``workdir`` up to ``config.num_train_steps``."""
  # The loop's TF-based pieces load here, so the step and models import without TF
  # (benchmarks on accelerator hosts that have JAX but no TensorFlow).
  from clu import metric_writers, periodic_actions
  from sagan_jax import input_pipeline
  validate_config(config)
  _check_workdir(workdir)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)

  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, owner=True)
  checkpointing.check_config_compatible(config, workdir, resuming=ckpt.latest_step() is not None)
  built = programs(config, mesh)
  # A resume restores into the state's shapes, dtypes and shardings without computing
  # (or compiling) the initial state it would overwrite.
  start_step, state = ckpt.restore_latest(jax.eval_shape(built.init))
  if state is None:
    state = built.init()
  else:
    logging.info("resumed from %s at step %d", ckpt.directory, start_step)
  if start_step >= config.num_train_steps:
    logging.info("already trained %d of %d steps; nothing to do", start_step, config.num_train_steps)
    ckpt.close()
    return state

  def data_from(step):
    return input_pipeline.create_train_iterator(
        config, start_index=step * config.batch_size * config.d_steps_per_g_step,
        process_index=jax.process_index(), process_count=jax.process_count(), workdir=workdir)

  data = data_from(start_step)
  train_step, sampler = built.train_step, built.sampler
  evaluator = None
  if config.eval_every_steps > 0:
    from sagan_jax.evaluation.evaluator import Evaluator  # loads TF-based input (see above)
    evaluator = Evaluator(config, mesh, sampler, workdir)
  grid_z, grid_y, grid_rows, grid_cols = sample_grid_inputs(config, mesh.size)
  # The attention figure: the first sample of each grid row, padded to the device count.
  n_probe = -(-grid_rows // mesh.size) * mesh.size
  probe_z, probe_y = (np.resize(a[::grid_cols][:grid_rows], (n_probe,) + a.shape[1:])
                      for a in (grid_z, grid_y))
  probe_queries = None
  if config.model.attention_block == "self_attention" and _attention_sides(config.model, "g"):
    side = max(_attention_sides(config.model, "g"))
    probe_queries = visualize.query_points(side, min(4, side * side), config.seed)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh))
  grid_z, grid_y, probe_z, probe_y = (put(a) for a in (grid_z, grid_y, probe_z, probe_y))

  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in flax.traverse_util.flatten_dict(
        config.to_dict(), sep=".").items()})
  logging.info("Adam β1=%s β2=%s, lr_G=%s lr_D=%s, %d D step(s) per G step, sampling BN stats: %s",
               config.optimizer.b1, config.optimizer.b2, config.optimizer.g_lr,
               config.optimizer.d_lr, config.d_steps_per_g_step, config.sample_bn_stats)
  report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)
  seen_labels = []

  def write_samples(step):
    images = np.asarray(sampler(state, grid_z, grid_y))[:grid_rows * grid_cols]
    grid = visualize.image_grid(images, grid_rows, grid_cols)
    if is_chief:
      visualize.save_png(grid, os.path.join(workdir, "samples", f"step_{step:08d}.png"))
    figures = {"samples": grid[None]}
    if probe_queries is not None:  # G's last attention layer, as `python -m sagan_jax.visualize`
      images, maps = jax.device_get(sampler.with_attention(state, probe_z, probe_y))
      layer = visualize.last_attention_layer(maps)
      figures["attention/generator"] = visualize.attention_figure(
          images[:grid_rows], maps[layer][:grid_rows], probe_queries)[None]
    writer.write_images(step, figures)

  step = start_step
  last_log_time, last_log_step = time.time(), step
  restored_after_divergence = False
  with _StopSignals() as stop:
    while step < config.num_train_steps:
      host_batch = _next_batches(data, config.d_steps_per_g_step)
      if len(seen_labels) < 10:
        seen_labels.append(host_batch["label"])
        if len(seen_labels) == 10:
          input_pipeline.log_class_histogram(np.concatenate(seen_labels), config.model.num_classes)
      state, metrics = train_step(state, sharding.global_batch(host_batch, mesh))
      step += 1
      report(step)
      streak = int(metrics["nonfinite_streak"])  # one scalar per step: divergence is caught at once
      if streak:
        losses_now = {k: float(metrics[k]) for k in ("d_loss", "g_loss")}
        logging.warning("step %d: non-finite loss or gradient %s; update skipped (%d in a row)",
                        step, losses_now, streak)
        if streak >= config.max_nonfinite_steps:
          good_step = ckpt.latest_step()
          if restored_after_divergence or good_step is None:
            raise TrainingDiverged(
                f"training diverged: {streak} consecutive non-finite steps up to step {step} "
                f"(d_loss={losses_now['d_loss']}, g_loss={losses_now['g_loss']})"
                + (" again after restoring the last good checkpoint" if restored_after_divergence
                   else " and no checkpoint to restore") +
                "; lower the learning rates or check the data, then resume")
          ckpt.wait()
          step, state = ckpt.restore_latest(state)
          data = data_from(step)
          restored_after_divergence = True
          logging.warning("restored the last good checkpoint, step %d, after %d non-finite steps",
                          step, streak)
          continue
      if stop.signal_name or ckpt.reached_preemption(step):
        ckpt.save(step, state)
        ckpt.wait()
        ckpt.close()
        writer.flush()
        reason = stop.signal_name or "a preemption notice"
        raise Preempted(f"stopped by {reason} after step {step}; checkpoint saved in "
                        f"{ckpt.directory}; rerun the same command to resume",
                        exit_code=128 + (stop.signal_number or signal.SIGTERM))
      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        scalars = jax.device_get(metrics)
        now = time.time()
        scalars["steps_per_sec"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
        last_log_time, last_log_step = now, step
        writer.write_scalars(step, scalars)
      if step % config.sample_every_steps == 0 or step == config.num_train_steps:
        write_samples(step)
      if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
        ckpt.save(step, state)
        if not config.async_checkpoints:
          ckpt.wait()
      if evaluator and (step % config.eval_every_steps == 0 or step == config.num_train_steps):
        writer.write_scalars(step, evaluator.evaluate(state, step, config.eval_num_samples))
  ckpt.wait()
  ckpt.close()
  writer.flush()
  return state
