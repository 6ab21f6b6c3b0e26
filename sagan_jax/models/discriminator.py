"""ResNet projection discriminator with self-attention at configured sides.

x → down-blocks (BigGAN D, pre-activation after the first) → ReLU → global sum pool
→ SN-linear + ⟨SN-embed(y), h⟩ (Miyato & Koyama's projection).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sagan_jax.models.attention import attention_block
from sagan_jax.models.kernels import PLAIN, Kernels
from sagan_jax.models.layers import SNConv, SNDense, SNEmbed

# resolution -> (output width multipliers, downsample flags) of the blocks.
D_ARCH = {
  32: ((4, 4, 4, 4), (True, True, False, False)),
  64: ((1, 2, 4, 8, 16), (True, True, True, True, False)),
  128: ((1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
  256: ((1, 2, 4, 8, 8, 16, 16), (True, True, True, True, True, True, False)),
}


def discriminator_sides(resolution: int) -> tuple:
  """Distinct feature-map sides after the blocks (attention goes after the first block of a side)."""
  sides, side = [], resolution
  for down in D_ARCH[resolution][1]:
    side = side // 2 if down else side
    if side not in sides:
      sides.append(side)
  return tuple(sides)


class DBlock(nn.Module):
  features: int
  downsample: bool
  preactivation: bool
  use_sn: bool
  dtype: Any | None = None
  kernels: Kernels = PLAIN
  shortcut_preactivated: bool = False  # the shortcut reads relu(x) (PyTorch's in-place ReLU)

  @nn.compact
  def __call__(self, x, update_stats: bool):
    conv = lambda feats, k, name, resample="none": SNConv(
      feats, k, resample, use_sn=self.use_sn, dtype=self.dtype, kernels=self.kernels, name=name
    )
    pool = "down" if self.downsample else "none"  # 2×2 mean after the conv
    activated = nn.relu(x) if self.preactivation else x
    h = conv(self.features, (3, 3), "conv1")(activated, update_stats)
    h = conv(self.features, (3, 3), "conv2", resample=pool)(nn.relu(h), update_stats)
    shortcut = activated if self.shortcut_preactivated else x
    if self.downsample or x.shape[-1] != self.features:
      # BigGAN's D convolves then pools (pools first in its first block, to save work); a 1×1
      # conv commutes with the mean, so both are the same map and the conv runs on the smaller.
      shortcut = conv(self.features, (1, 1), "conv_sc", resample=pool)(shortcut, update_stats)
    return h + shortcut


class Discriminator(nn.Module):
  resolution: int = 32
  ch: int = 64
  num_classes: int = 10
  attention_sides: Sequence[int] = ()
  use_sn: bool = True
  attention_kwargs: Any = None
  dtype: Any | None = None
  kernels: Kernels = PLAIN  # how convs and attention are computed (models/kernels.py)
  shortcut_preactivated: bool = False  # blocks after the first: shortcut of relu(x), not x

  @nn.compact
  def __call__(self, x, y, *, update_stats: bool = False):
    if self.resolution not in D_ARCH:
      raise ValueError(f"no discriminator for resolution {self.resolution}; have {sorted(D_ARCH)}")
    sides = discriminator_sides(self.resolution)
    bad = sorted(set(self.attention_sides) - set(sides))
    if bad:
      raise ValueError(
        f"discriminator has no feature side {bad} at resolution {self.resolution}; its sides are {sides}"
      )
    out_mult, downs = D_ARCH[self.resolution]
    h, side, attended = x, self.resolution, set()
    for i, (mult, down) in enumerate(zip(out_mult, downs, strict=True)):
      h = DBlock(
        mult * self.ch,
        down,
        i > 0,
        self.use_sn,
        self.dtype,
        self.kernels,
        self.shortcut_preactivated,
        name=f"block{i}",
      )(h, update_stats)
      side = side // 2 if down else side
      if side in self.attention_sides and side not in attended:
        attended.add(side)
        h = attention_block(
          use_sn=self.use_sn,
          dtype=self.dtype,
          kernels=self.kernels,
          **(self.attention_kwargs or {}),
          name=f"attention{side}",
        )(h, update_stats)
    h = jnp.sum(nn.relu(h).astype(jnp.float32), axis=(1, 2))
    out = SNDense(1, use_sn=self.use_sn, name="linear")(h, update_stats)[:, 0]
    if not self.num_classes:  # unconditional: no projection term
      return out
    embed = SNEmbed(self.num_classes, h.shape[-1], use_sn=self.use_sn, name="embed")(y, update_stats)
    return out + jnp.sum(embed * h, axis=-1)
