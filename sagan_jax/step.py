"""The pure train step: ``d_steps_per_g_step`` D updates, one G update, the EMA of G.

One call makes the D updates (one per slice of the batch's leading axis), then one G update,
then the EMA. Each program is one ``jax.jit`` over a ``Mesh``: parameters replicated, batches
split on the data axis, so BN statistics span the global batch. An update whose loss,
gradients or new state is not finite is not applied. The optimizer, that check and the EMA
see each network's arrays as they are or as one vector (``flat_update``; the kernels' choice
``parameter_update``).

At 1:1 the iteration is one program. At n:1 the first n-1 D updates are one compiled D-update
program called n-1 times, and the last is the 1:1 program: memory and compile time stay those
of a 1:1 step (n unrolled updates held n D passes' buffers and compiled n times the code; a
``lax.scan`` runs convolution gradients far slower on XLA:CPU).
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sagan_jax import augment, flat_update, losses, sharding
from sagan_jax.data.source import label_values
from sagan_jax.models.layers import SPECTRAL


def attention_gammas(params) -> dict:
  """γ of every attention layer, keyed like 'attention16/gamma'."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  return {k: v for k, v in flat.items() if k.endswith("/gamma")}


def _all_finite(*trees):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


def _keep_if(ok, new, old):
  """new where ok, else old: a non-finite update is never applied (nor checkpointed)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def ema_decay(config, step):
  """The EMA's decay after ``step`` G updates (a float32 scalar; 0 copies G).

  'constant': ``ema_decay`` from ``ema_start_step`` on, a copy of G before.
  'power': (1 - 1/t)^(γ+1), the power-function EMA of Karras et al. 2024 (EDM2): at every
  step an average over the last ~σ_rel of training (γ = ``ema_power_gamma``; 6.94: σ_rel 0.10),
  so a short run's EMA does not lag behind a G that is still improving fast.
  """
  t = jnp.asarray(step, jnp.float32)
  if config.ema_schedule == "power":  # log1p: 1 - 1/t rounds badly in float32 once t ~ 1e6
    return jnp.exp((config.ema_power_gamma + 1.0) * jnp.log1p(-1.0 / jnp.maximum(t, 1.0)))
  return jnp.where(t < config.ema_start_step, 0.0, config.ema_decay).astype(jnp.float32)


def step_keys(key, step):
  """Per-step randomness derived from (the run's key, step): a resumed run draws the same noise."""
  return jax.random.split(jax.random.fold_in(key, step), 4)


def concat_by_shard(a, b, num_shards: int):
  """[a; b] on the batch axis with every shard's rows kept on their device.

  Rows go shard by shard (a's rows of shard 0, b's rows of shard 0, a's rows of shard 1, …),
  so a batch split over devices is concatenated without moving data between them (a plain
  concatenate would put all of a on the first devices: an all-to-all on every D step).
  """
  pair = [x.reshape(num_shards, -1, *x.shape[1:]) for x in (a, b)]
  return jnp.concatenate(pair, axis=1).reshape(-1, *a.shape[1:])


def split_by_shard(x, num_shards: int):
  """The inverse of concat_by_shard: (a, b)."""
  x = x.reshape(num_shards, 2, -1, *x.shape[1:])
  return tuple(x[:, i].reshape(-1, *x.shape[3:]) for i in range(2))


def make_train_step(
  config, generator, discriminator, g_tx, d_tx, mesh: Mesh, parameter_update: str
) -> "TrainStep":
  """Returns the train step: ``step(state, batch, key_data) -> (state, metrics)``; batch arrays
  are (D steps, B, …); key_data is the run's random key (``programs.seed_key_data``), an
  argument so that runs of other seeds share the compiled programs. ``parameter_update``:
  the resolved kernels' choice ('per_array' or 'flat')."""
  flat = parameter_update == "flat"
  d_loss_fn, g_loss_fn = losses.get_losses(config.loss)
  m = config.model
  n_d = config.d_steps_per_g_step
  batch_shard = sharding.batch_sharding(mesh)
  constrain = lambda x: jax.lax.with_sharding_constraint(x, batch_shard)
  num_shards = mesh.shape[sharding.DATA_AXIS]

  def noise(key, batch_size):
    kz, ky = jax.random.split(key)
    z = constrain(jax.random.normal(kz, (batch_size, m.z_dim), jnp.float32))
    y = constrain(jax.random.randint(ky, (batch_size,), 0, label_values(m.num_classes), jnp.int32))
    return z, y

  def generate(state, z, y):
    """G in train mode (batch statistics) without touching its running stats or SN vectors."""
    return generator.apply(
      {"params": state.g_params, "batch_stats": state.g_batch_stats, SPECTRAL: state.g_spectral},
      z,
      y,
      train=True,
      update_stats=False,
    )

  def seen_by_d(key, images):
    """What D sees: the images, DiffAugment'ed where config.augment names policies."""
    if not config.augment:
      return images
    return constrain(augment.augment(jax.random.fold_in(key, 1), images, config.augment))

  def d_update(state, inputs):
    images, labels, key = inputs
    z, y_fake = noise(key, images.shape[0])
    fake = jax.lax.stop_gradient(generate(state, z, y_fake))
    both = seen_by_d(key, constrain(concat_by_shard(images, fake, num_shards)))

    def loss_fn(d_params):
      # Real and fake in one pass, so SN's power iteration advances once per D step.
      logits, new_vars = discriminator.apply(
        {"params": d_params, SPECTRAL: state.d_spectral},
        both,
        constrain(concat_by_shard(labels, y_fake, num_shards)),
        update_stats=True,
        mutable=[SPECTRAL],
      )
      d_real, d_fake = split_by_shard(logits, num_shards)
      return d_loss_fn(d_real, d_fake), (new_vars.get(SPECTRAL, {}), d_real, d_fake)

    (loss, (spectral, d_real, d_fake)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    old, unflatten = flat_update.flatten(state.d_params, state.d_opt_state, flat)
    grads = flat_update.vector(grads, flat)
    updates, opt_state = d_tx.update(grads, old.opt_state, old.params)
    new = flat_update.Flat(optax.apply_updates(old.params, updates), opt_state)
    # The updated state too: an optimizer can turn finite gradients into NaN (eps=0, overflow).
    ok = _all_finite(loss, grads, new, spectral)
    d_params, d_opt_state = unflatten(_keep_if(ok, new, old))
    d_spectral = _keep_if(ok, spectral, state.d_spectral)
    state = state.replace(d_params=d_params, d_spectral=d_spectral, d_opt_state=d_opt_state)
    metrics = {
      "d_loss": loss,
      "d_real": jnp.mean(d_real),
      "d_fake": jnp.mean(d_fake),
      "d_grad_norm": optax.global_norm(grads),
      "d_finite": ok,
    }
    return state, metrics

  def g_update(state, key):
    z, y = noise(key, config.batch_size)

    def loss_fn(g_params):
      fake, new_vars = generator.apply(
        {"params": g_params, "batch_stats": state.g_batch_stats, SPECTRAL: state.g_spectral},
        z,
        y,
        train=True,
        update_stats=True,
        mutable=["batch_stats", SPECTRAL],
      )
      d_fake = discriminator.apply(
        {"params": state.d_params, SPECTRAL: state.d_spectral}, seen_by_d(key, fake), y
      )
      return g_loss_fn(d_fake), new_vars

    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    old, unflatten = flat_update.flatten(state.g_params, state.g_opt_state, flat)
    grads = flat_update.vector(grads, flat)
    updates, opt_state = g_tx.update(grads, old.opt_state, old.params)
    new = flat_update.Flat(optax.apply_updates(old.params, updates), opt_state)
    stats = (new_vars["batch_stats"], new_vars.get(SPECTRAL, {}))  # {}: no SN (ablations)
    ok = _all_finite(loss, grads, new, stats)
    g_params, g_opt_state = unflatten(_keep_if(ok, new, old))
    g_batch_stats, g_spectral = _keep_if(ok, stats, (state.g_batch_stats, state.g_spectral))
    state = state.replace(
      g_params=g_params, g_opt_state=g_opt_state, g_batch_stats=g_batch_stats, g_spectral=g_spectral
    )
    return state, {"g_loss": loss, "g_grad_norm": optax.global_norm(grads), "g_finite": ok}

  def update_ema(state):
    decay = ema_decay(config, state.step)
    return state.replace(ema_params=flat_update.moving_average(state.ema_params, state.g_params, decay, flat))

  def iteration_keys(key_data, step):
    """(the D updates' keys, the G update's key) of iteration ``step``: the same in either program."""
    keys = step_keys(jax.random.wrap_key_data(key_data), step)
    return jax.random.split(keys[0], n_d), keys[1]

  def d_update_at(state, batch, key_data, index, d_finite):
    """D update ``index`` (< n_d - 1) of this iteration; d_finite: all earlier ones applied."""
    d_keys, _ = iteration_keys(key_data, state.step)
    state, metrics = d_update(state, (batch["image"][index], batch["label"][index], d_keys[index]))
    return state, d_finite & metrics["d_finite"]

  def train_step(state, batch, key_data, d_finite):
    """The iteration's last D update, the G update and the EMA."""
    d_keys, g_key = iteration_keys(key_data, state.step)
    last = n_d - 1
    state, d_metrics = d_update(state, (batch["image"][last], batch["label"][last], d_keys[last]))
    state, g_metrics = g_update(state, g_key)
    all_finite = jnp.logical_and(d_metrics.pop("d_finite") & g_metrics.pop("g_finite"), d_finite)
    streak = jnp.where(all_finite, 0, state.nonfinite_streak + 1)
    state = update_ema(state.replace(step=state.step + 1, nonfinite_streak=streak))
    metrics = {**d_metrics, **g_metrics}  # D's: the last D update's values
    metrics["nonfinite_streak"] = streak
    metrics.update({f"gamma/g/{k}": v for k, v in attention_gammas(state.g_params).items()})
    metrics.update({f"gamma/d/{k}": v for k, v in attention_gammas(state.d_params).items()})
    return state, metrics

  replicated = sharding.replicated(mesh)
  batches = sharding.batch_sharding(mesh, 1)
  last = jax.jit(
    train_step,
    in_shardings=(replicated, batches, replicated, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )
  earlier = None
  if n_d > 1:
    earlier = jax.jit(
      d_update_at,
      in_shardings=(replicated, batches, replicated, replicated, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,),
    )
  return TrainStep(n_d, earlier, last, mesh)


@dataclasses.dataclass
class TrainStep:
  """One train iteration as jitted programs: ``earlier`` (one D update, called n_d - 1 times;
  None at 1:1) then ``last`` (the last D update, G, the EMA). Called, lowered and compiled as
  one jitted function is (``lower`` gives a StepPrograms)."""

  d_steps: int
  earlier: Any
  last: Any
  mesh: Mesh
  _all_finite: Any = None

  @property
  def all_finite(self):
    """d_finite at an iteration's start ("every earlier D update was applied"): an array on the
    mesh like the programs' own d_finite outputs (a host bool would compile the D-update
    program twice); made at the first call (a compile-only mesh holds no arrays)."""
    if self._all_finite is None:
      self._all_finite = sharding.replicate(True, self.mesh)
    return self._all_finite

  def _programs(self, fn):
    """[(what fn gives for a program, times it runs per iteration)]."""
    parts = [(fn(self.last, True), 1)]
    if self.earlier is not None:
      parts.insert(0, (fn(self.earlier, False), self.d_steps - 1))
    return parts

  def __call__(self, state, batch, key_data):
    d_finite = self.all_finite
    for index in range(self.d_steps - 1):
      state, d_finite = self.earlier(state, batch, key_data, index, d_finite)
    return self.last(state, batch, key_data, d_finite)

  def lower(self, state, batch, key_data) -> "StepPrograms":
    d_finite = jax.ShapeDtypeStruct((), jnp.bool_, sharding=sharding.replicated(self.mesh))
    args = lambda is_last: (state, batch, key_data) + (() if is_last else (0,)) + (d_finite,)
    lowered = self._programs(lambda jitted, is_last: jitted.lower(*args(is_last)))
    return StepPrograms(lowered, self)

  def eval_shape(self, state, batch, key_data):
    """The iteration's outputs (those of its last program)."""
    d_finite = jax.ShapeDtypeStruct((), jnp.bool_, sharding=sharding.replicated(self.mesh))
    return self.last.eval_shape(state, batch, key_data, d_finite)


@dataclasses.dataclass(frozen=True)
class StepPrograms:
  """A train iteration's lowered (or compiled) programs with how often each runs: FLOPs and
  bytes add up over an iteration; memory is the largest program's."""

  parts: list  # [(jax Lowered or Compiled, runs per iteration)]
  step: TrainStep

  def compile(self) -> "StepPrograms":
    return StepPrograms([(part.compile(), runs) for part, runs in self.parts], self.step)

  def __call__(self, state, batch, key_data):
    d_finite = self.step.all_finite
    *earlier, (last, _) = self.parts
    for program, runs in earlier:
      for index in range(runs):
        state, d_finite = program(state, batch, key_data, index, d_finite)
    return last(state, batch, key_data, d_finite)

  def cost_analysis(self) -> dict:
    """XLA's cost figures summed over the iteration ({} where the compiler gives none)."""
    total = {}
    for part, runs in self.parts:
      for name, value in (part.cost_analysis() or {}).items():
        if isinstance(value, int | float):
          total[name] = total.get(name, 0.0) + runs * float(value)
    return total

  def memory_analysis(self):
    """The memory figures of the program that needs the most (compiled programs only)."""
    analyses = [part.memory_analysis() for part, _ in self.parts]
    total = lambda a: a.argument_size_in_bytes + a.output_size_in_bytes + a.temp_size_in_bytes
    return max(analyses, key=total)

  def as_text(self) -> str:
    return "\n".join(part.as_text() for part, _ in self.parts)
