"""GAN losses as pure functions of discriminator outputs (paper §3: hinge)."""

import jax
import jax.numpy as jnp


def hinge_d_loss(d_real, d_fake):
  """L_D = E[relu(1 − D(x, y))] + E[relu(1 + D(G(z), y))]."""
  return jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake))


def hinge_g_loss(d_fake):
  """L_G = −E[D(G(z), y)]."""
  return -jnp.mean(d_fake)


def nonsaturating_d_loss(d_real, d_fake):
  """Original GAN D loss (ablations only): softplus(−D(x)) + softplus(D(G(z)))."""
  return jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))


def nonsaturating_g_loss(d_fake):
  """Non-saturating G loss (ablations only): softplus(−D(G(z)))."""
  return jnp.mean(jax.nn.softplus(-d_fake))


LOSSES = {
  "hinge": (hinge_d_loss, hinge_g_loss),
  "nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss),
}


def get_losses(name: str):
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
  return LOSSES[name]
