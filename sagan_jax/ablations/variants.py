"""What the paper's two ablations train: each a list of variants of a base config (config
overrides), with its title, default baseline and plots (``SWEEPS``, by the name
``--sweep`` takes), and a job: one variant at one training seed.

- table1, attention placement (the paper's Table 1): where attention helps, and whether
  parameters alone explain it.
- fig3, stabilisation (the paper's Fig. 3): spectral norm on G and TTUR stabilise training.
"""

from collections.abc import Callable
from typing import NamedTuple

from sagan_jax.models.discriminator import discriminator_sides
from sagan_jax.models.generator import generator_sides


class Variant(NamedTuple):
  name: str
  description: str
  overrides: dict  # config field -> value, as Python values


class Job(NamedTuple):
  """One run of a sweep: a variant trained at one seed."""

  variant: Variant
  seed: int

  @property
  def key(self) -> tuple:
    return self.variant.name, self.seed


def attention_placement_variants(config) -> list:
  """No attention; self-attention at each feature side the model has (feat8 … feat64 for
  128×128); and at the same sides, a residual block with exactly the attention block's
  parameter count (``model.attention_block='residual'``). A side the discriminator does not
  have (32×32 models: D's maps are 16 and 8) gets the block in G only, as the variant's
  description says."""
  res = config.model.resolution
  g_sides, d_sides = generator_sides(res), discriminator_sides(res)
  # The paper's Table 1 sides: feat8 … feat64 (at most 64; the last G map is the image's).
  sides = [s for s in g_sides if 8 <= s <= min(64, res)]
  out = [Variant("none", "no attention", {"model.attention_resolutions": ()})]
  for block, label in (("self_attention", "feat"), ("residual", "residual")):
    for side in sides:
      where = "G and D" if side in d_sides else "G only (D has no such side)"
      overrides = {"model.attention_block": block, "model.attention_resolutions": (side,)}
      if side not in d_sides:
        overrides["model.d_attention_resolutions"] = ()
      what = "self-attention" if block == "self_attention" else "residual block, same parameters,"
      out.append(Variant(f"{label}{side}", f"{what} at {side}×{side} in {where}", overrides))
  return out


def attention_placement_baseline(config) -> str:
  """Self-attention at the base config's side (feat16 on the embedded default), else none."""
  sides = tuple(config.model.attention_resolutions)
  return f"feat{sides[0]}" if sides and config.model.attention_block == "self_attention" else "none"


def stabilization_variants(config) -> list:
  """The four runs of the paper's §5.1: SN on D only at 1 and 5 D steps per G step, SN on G and
  D at 1:1, all three at equal learning rates, and SN on G and D with TTUR (the base config's
  lr_G < lr_D). "Equal" is the base config's lr_G for both nets (the paper: 1e-4 for both, TTUR
  1e-4 / 4e-4)."""
  g_lr, d_lr = config.optimizer.g_lr, config.optimizer.d_lr
  equal = {"optimizer.g_lr": g_lr, "optimizer.d_lr": g_lr}
  return [
    Variant(
      "sn_d_1to1",
      f"SN on D only, 1:1, lr {g_lr:g} both",
      {"model.g_spectral_norm": False, "d_steps_per_g_step": 1, **equal},
    ),
    Variant(
      "sn_d_5to1",
      f"SN on D only, 5:1, lr {g_lr:g} both",
      {"model.g_spectral_norm": False, "d_steps_per_g_step": 5, **equal},
    ),
    Variant(
      "sn_gd_1to1",
      f"SN on G and D, 1:1, lr {g_lr:g} both",
      {"model.g_spectral_norm": True, "d_steps_per_g_step": 1, **equal},
    ),
    Variant(
      "sn_gd_ttur",
      f"SN on G and D, 1:1, TTUR lr_G {g_lr:g} lr_D {d_lr:g}",
      {
        "model.g_spectral_norm": True,
        "d_steps_per_g_step": 1,
        "optimizer.g_lr": g_lr,
        "optimizer.d_lr": d_lr,
      },
    ),
  ]


class Sweep(NamedTuple):
  """One ablation: its variants of the base config, and how its results are shown."""

  title: str  # results.md's heading
  variants: Callable  # base config (with --set) -> [Variant], in table order
  default_baseline: Callable  # base config -> the variant every other is paired with
  default_eval_points: int
  bars: str | None  # RESULTS/<bars>_<metric>.png: the final metric per variant
  curves: str  # RESULTS/<curves>_<metric>.png: the metric along training


SWEEPS = {
  "table1": Sweep(
    "Attention placement (the paper's Table 1)",
    attention_placement_variants,
    attention_placement_baseline,
    default_eval_points=1,
    bars="attention_placement",
    curves="attention_placement_curves",
  ),
  # Fig. 3 is curves along training: they need points.
  "fig3": Sweep(
    "Stabilisation: SN on G and TTUR (the paper's Fig. 3)",
    stabilization_variants,
    lambda config: "sn_gd_ttur",
    default_eval_points=4,
    bars=None,
    curves="stabilization",
  ),
}
