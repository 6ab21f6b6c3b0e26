"""ResNet generator with conditional BN and self-attention at configured sides.

z → SN-linear → 4×4 map → up-blocks (each doubles the side) → BN, ReLU, 3×3 conv, tanh.
Widths follow BigGAN-PyTorch's tables (the public SAGAN/BigGAN reference), in units of ``ch``.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sagan_jax.models.attention import attention_block
from sagan_jax.models.kernels import PLAIN, Kernels
from sagan_jax.models.layers import BatchNorm, SNConv, SNDense

# resolution -> (input width multipliers, output width multipliers) of the up-blocks.
G_ARCH = {
  32: ((4, 4, 4), (4, 4, 4)),
  64: ((16, 16, 8, 4), (16, 8, 4, 2)),
  128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
  256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
}
BOTTOM_SIDE = 4


def generator_sides(resolution: int) -> tuple:
  """Feature-map sides after each up-block: where attention can sit."""
  n_blocks = len(G_ARCH[resolution][0])
  return tuple(BOTTOM_SIDE * 2 ** (i + 1) for i in range(n_blocks))


class GBlock(nn.Module):
  features: int
  num_classes: int
  use_sn: bool
  sn_gains: bool
  dtype: Any | None = None
  kernels: Kernels = PLAIN
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, y, train: bool, update_stats: bool):
    conv = lambda feats, k, name, resample="none": SNConv(
      feats, k, resample, use_sn=self.use_sn, dtype=self.dtype, kernels=self.kernels, name=name
    )
    bn = lambda name: BatchNorm(
      self.num_classes, eps=self.bn_eps, sn_gains=self.sn_gains, dtype=self.dtype, name=name
    )
    h = nn.relu(bn("bn1")(x, y, train=train, update_stats=update_stats))
    h = conv(self.features, (3, 3), "conv1", resample="up")(h, update_stats)  # upsample, then conv
    h = nn.relu(bn("bn2")(h, y, train=train, update_stats=update_stats))
    h = conv(self.features, (3, 3), "conv2")(h, update_stats)
    shortcut = conv(self.features, (1, 1), "conv_sc", resample="up")(x, update_stats)
    return h + shortcut


class Generator(nn.Module):
  resolution: int = 32
  ch: int = 64
  z_dim: int = 128
  num_classes: int = 10
  image_channels: int = 3
  attention_sides: Sequence[int] = ()
  use_sn: bool = True
  sn_gains: bool = False  # SN on the conditional-BN class gains/biases.
  attention_kwargs: Any = None  # SelfAttention fields (pool_kv, value_channel_ratio, impl…).
  dtype: Any | None = None
  kernels: Kernels = PLAIN  # how convs and attention are computed (models/kernels.py)
  bn_eps: float = 1e-5  # of every batch norm (PyTorch's default; mmagic and StudioGAN use 1e-4)

  @nn.compact
  def __call__(self, z, y, *, train: bool, update_stats: bool = False):
    if self.resolution not in G_ARCH:
      raise ValueError(f"no generator for resolution {self.resolution}; have {sorted(G_ARCH)}")
    sides = generator_sides(self.resolution)
    bad = sorted(set(self.attention_sides) - set(sides))
    if bad:
      raise ValueError(
        f"generator has no feature side {bad} at resolution {self.resolution}; its sides are {sides}"
      )
    in_mult, out_mult = G_ARCH[self.resolution]
    c0 = in_mult[0] * self.ch
    h = SNDense(BOTTOM_SIDE * BOTTOM_SIDE * c0, use_sn=self.use_sn, dtype=self.dtype, name="linear")(
      z, update_stats
    )
    h = h.reshape(z.shape[0], BOTTOM_SIDE, BOTTOM_SIDE, c0)
    for i, (mult, side) in enumerate(zip(out_mult, sides, strict=True)):
      h = GBlock(
        mult * self.ch,
        self.num_classes,
        self.use_sn,
        self.sn_gains,
        self.dtype,
        self.kernels,
        self.bn_eps,
        name=f"block{i}",
      )(h, y, train, update_stats)
      if side in self.attention_sides:
        h = attention_block(
          use_sn=self.use_sn,
          dtype=self.dtype,
          kernels=self.kernels,
          **(self.attention_kwargs or {}),
          name=f"attention{side}",
        )(h, update_stats)
    h = nn.relu(
      BatchNorm(eps=self.bn_eps, dtype=self.dtype, name="bn_out")(h, train=train, update_stats=update_stats)
    )
    h = SNConv(
      self.image_channels, (3, 3), use_sn=self.use_sn, dtype=self.dtype, kernels=self.kernels, name="conv_out"
    )(h, update_stats)
    return jnp.tanh(h.astype(jnp.float32))
