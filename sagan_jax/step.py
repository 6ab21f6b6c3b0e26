"""The pure train step: ``d_steps_per_g_step`` D updates, one G update, the EMA of G.

One call makes the D updates (one per slice of the batch's leading axis, unrolled), then
one G update, then the EMA. It is one ``jax.jit`` over a ``Mesh``: parameters replicated,
batches split on the data axis, so BN statistics span the global batch. An update whose
loss, gradients or new state is not finite is not applied.
"""

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sagan_jax import augment, losses, sharding
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


def make_train_step(config, generator, discriminator, g_tx, d_tx, mesh: Mesh):
  """Returns jit(train_step)(state, batch, key_data) -> (state, metrics); batch arrays are
  (D steps, B, …); key_data is the run's random key (``programs.seed_key_data``), an
  argument so that runs of other seeds share the compiled step."""
  d_loss_fn, g_loss_fn = losses.get_losses(config.loss)
  m = config.model
  batch_shard = sharding.batch_sharding(mesh)
  constrain = lambda x: jax.lax.with_sharding_constraint(x, batch_shard)
  num_shards = mesh.shape[sharding.DATA_AXIS]

  def noise(key, batch_size):
    kz, ky = jax.random.split(key)
    z = constrain(jax.random.normal(kz, (batch_size, m.z_dim), jnp.float32))
    y = constrain(jax.random.randint(ky, (batch_size,), 0, m.num_classes, jnp.int32))
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
    updates, d_opt_state = d_tx.update(grads, state.d_opt_state, state.d_params)
    old = (state.d_params, state.d_spectral, state.d_opt_state)
    new = (optax.apply_updates(state.d_params, updates), spectral, d_opt_state)
    # The updated state too: an optimizer can turn finite gradients into NaN (eps=0, overflow).
    ok = _all_finite(loss, grads, new)
    d_params, d_spectral, d_opt_state = _keep_if(ok, new, old)
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
    updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
    old = (state.g_params, state.g_opt_state, state.g_batch_stats, state.g_spectral)
    new = (
      optax.apply_updates(state.g_params, updates),
      g_opt_state,
      new_vars["batch_stats"],
      new_vars.get(SPECTRAL, {}),
    )  # {} when the net has no SN (ablations)
    ok = _all_finite(loss, grads, new)
    g_params, g_opt_state, g_batch_stats, g_spectral = _keep_if(ok, new, old)
    state = state.replace(
      g_params=g_params, g_opt_state=g_opt_state, g_batch_stats=g_batch_stats, g_spectral=g_spectral
    )
    return state, {"g_loss": loss, "g_grad_norm": optax.global_norm(grads), "g_finite": ok}

  def update_ema(state):
    decay = ema_decay(config, state.step)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, state.g_params)
    return state.replace(ema_params=ema)

  def train_step(state, batch, key_data):
    keys = step_keys(jax.random.wrap_key_data(key_data), state.step)
    n_d = batch["image"].shape[0]
    d_keys = jax.random.split(keys[0], n_d)
    d_metrics = []
    for i in range(n_d):  # unrolled: XLA:CPU runs convolution gradients far slower in a loop
      state, metrics = d_update(state, (batch["image"][i], batch["label"][i], d_keys[i]))
      d_metrics.append(metrics)
    d_metrics = jax.tree.map(lambda *values: jnp.stack(values), *d_metrics)
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
  return jax.jit(
    train_step,
    in_shardings=(replicated, sharding.batch_sharding(mesh, 1), replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )
