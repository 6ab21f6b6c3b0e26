"""Spectral-normalised layers and (conditional) batch norm.

Spectral norm (Miyato et al. 2018) divides a weight by its largest singular value,
estimated by power iteration. The iteration vectors u, v and the last sigma live in
their own mutable collection ``SPECTRAL`` (never mixed with ``batch_stats``):
they move only when a layer is called with ``update_stats=True`` (training steps)
and are frozen otherwise (evaluation, sampling).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sagan_jax.models.convolution import resampling_conv2d
from sagan_jax.models.kernels import PLAIN, Kernels

SPECTRAL = "spectral"
Dtype = Any


def _l2_normalize(x, eps):
  return x * jax.lax.rsqrt(jnp.sum(x * x) + eps)


class SpectralWeight(nn.Module):
  """Returns ``kernel / sigma(kernel)`` for a kernel viewed as (prod(shape[:-1]), shape[-1]).

  The gradient does not flow through u and v (the common choice: Flax, PyTorch,
  compare_gan); it does flow through sigma = vᵀ W u.
  """

  n_steps: int = 1
  eps: float = 1e-12

  @nn.compact
  def __call__(self, kernel, update_stats: bool):
    w = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)
    u_var = self.variable(
      SPECTRAL,
      "u",
      lambda: _l2_normalize(jax.random.normal(self.make_rng("params"), (w.shape[1],)), self.eps),
    )
    v_var = self.variable(SPECTRAL, "v", lambda: _l2_normalize(w @ u_var.value, self.eps))
    sigma_var = self.variable(SPECTRAL, "sigma", lambda: jnp.ones((), jnp.float32))
    u, v = u_var.value, v_var.value
    if update_stats:
      for _ in range(self.n_steps):
        v = _l2_normalize(w @ u, self.eps)
        u = _l2_normalize(w.T @ v, self.eps)
      u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
    sigma = v @ w @ u
    if update_stats and not self.is_initializing():
      u_var.value, v_var.value = u, v
      sigma_var.value = jax.lax.stop_gradient(sigma)
    # An all-zero kernel has sigma 0: leave it as it is rather than dividing by 0.
    sigma = jnp.where(sigma > 0, sigma, 1.0)
    return kernel / sigma.astype(kernel.dtype)


class SNConv(nn.Module):
  """Conv with a spectrally normalised kernel (kernel viewed as (kh*kw*in, out)); ``resample``
  'up' upsamples its input 2× (nearest) first, 'down' averages its output over 2×2 windows."""

  features: int
  kernel_size: Sequence[int] = (3, 3)
  resample: str = "none"
  use_bias: bool = True
  use_sn: bool = True
  dtype: Dtype | None = None
  kernel_init: Any = nn.initializers.xavier_uniform()
  kernels: Kernels = PLAIN  # how the conv is computed (models/kernels.py)

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    kernel = self.param(
      "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32
    )
    if self.use_sn:
      kernel = SpectralWeight(name="sn")(kernel, update_stats)
    dtype = self.dtype or jnp.float32
    y = resampling_conv2d(x.astype(dtype), kernel.astype(dtype), self.resample, self.kernels)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y


class SNDense(nn.Module):
  """Dense layer with a spectrally normalised kernel."""

  features: int
  use_bias: bool = True
  use_sn: bool = True
  dtype: Dtype | None = None
  kernel_init: Any = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    if self.use_sn:
      kernel = SpectralWeight(name="sn")(kernel, update_stats)
    dtype = self.dtype or jnp.float32
    y = x.astype(dtype) @ kernel.astype(dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y


class SNEmbed(nn.Module):
  """Class embedding (num_classes, features), optionally spectrally normalised.

  The normalisation views the table as a (num_classes, features) matrix, as the
  projection discriminator's SN embedding does. ``labels``: (B,) class indices, or (B,
  num_classes) float class weights, which mix the classes' rows (class interpolation).
  """

  num_embeddings: int
  features: int
  use_sn: bool = True
  embedding_init: Any = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, labels, update_stats: bool = False):
    table = self.param("embedding", self.embedding_init, (self.num_embeddings, self.features), jnp.float32)
    if self.use_sn:
      table = SpectralWeight(name="sn")(table, update_stats)
    if jnp.issubdtype(labels.dtype, jnp.floating):
      return jnp.dot(labels.astype(table.dtype), table)
    return jnp.take(table, labels, axis=0)


class BatchNorm(nn.Module):
  """Batch norm over (N, H, W), optionally class-conditional, statistics in float32.

  ``gain``/``bias`` come either from learned vectors (num_classes=0) or, for the
  generator's conditional BN, from per-class embeddings: gain = 1 + embed_g(y),
  bias = embed_b(y) (BigGAN / released SAGAN form). Running averages live in
  ``batch_stats``; the batch mean/var are also sown into ``intermediates`` so
  standing statistics can be measured without a second model definition.
  Under ``jax.jit`` over a mesh the mean spans the global batch (cross-replica BN).
  """

  num_classes: int = 0
  momentum: float = 0.9  # Flax convention: PyTorch's 0.1.
  eps: float = 1e-5
  sn_gains: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, labels=None, *, train: bool, update_stats: bool = False):
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    x32 = x.astype(jnp.float32)
    if train:
      mean = jnp.mean(x32, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(x32), axis=(0, 1, 2)) - jnp.square(mean)
      var = jnp.maximum(var, 0.0)
      self.sow("intermediates", "batch_mean", mean)
      self.sow("intermediates", "batch_var", var)
      if update_stats and not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    if self.num_classes:
      if labels is None:
        raise ValueError("conditional BatchNorm needs labels")
      # Plain gains start at the identity; SN'd ones need a non-zero matrix to normalise.
      init = nn.initializers.xavier_uniform() if self.sn_gains else nn.initializers.zeros
      gain = 1.0 + SNEmbed(self.num_classes, c, use_sn=self.sn_gains, embedding_init=init, name="gain")(
        labels, update_stats
      )
      bias = SNEmbed(self.num_classes, c, use_sn=self.sn_gains, embedding_init=init, name="bias")(
        labels, update_stats
      )
      y = y * gain[:, None, None, :] + bias[:, None, None, :]
    else:
      y = y * self.param("scale", nn.initializers.ones, (c,)) + self.param(
        "bias", nn.initializers.zeros, (c,)
      )
    return y.astype(self.dtype or x.dtype)
