"""Table 1 of the paper: where attention helps, and whether parameters alone explain it.

  python experiments/attention_placement.py --out=runs/table1 [--results=docs/ablations/table1]
      [--base_config=configs/fashion_mnist.py] [--steps=N] [--seeds=3] [--baseline=feat16]
      [--eval_points=4] [--eval_samples=N] [--parallel=2] [--print_commands] [--only=none,feat16]
      [--set FIELD=VALUE]

Variants: no attention; self-attention at each feature side the model has (feat8 …
feat64 for 128×128); and at the same sides, a residual block with exactly the
attention block's parameter count (`model.attention_block='residual'`). A side the
discriminator does not have (32×32 models: D's maps are 16 and 8) gets the block in
G only, as the variant's description says. Each run is evaluated --eval_points times with
the base config's metrics (FID/IS, or fid_fmnist, class accuracy and PRDC on the embedded
default); every variant is compared seed by seed with --baseline (default: self-attention
at the base config's side, feat16 on the embedded default).
"""
from sweep import (Variant, exit_if_any_failed, load_base_config, parse_args,
                   plot_bars, plot_curves, run_sweep, write_tables)

from sagan_jax.models.discriminator import discriminator_sides
from sagan_jax.models.generator import generator_sides


def variants(config) -> list:
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


def default_baseline(config) -> str:
  sides = tuple(config.model.attention_resolutions)
  return f"feat{sides[0]}" if sides and config.model.attention_block == "self_attention" else "none"


def main():
  args = parse_args(__doc__, default_steps=600, default_baseline=None)
  config = load_base_config(args.base_config, args.set)
  args.baseline = args.baseline or default_baseline(config)
  results = run_sweep(args, variants(config))
  if results:
    write_tables(args, results, "Attention placement (the paper's Table 1)")
    plot_bars(args, results, "attention_placement", f"{args.steps} steps, {args.base_config}")
    plot_curves(args, results, "attention_placement_curves", f"{args.steps} steps, {args.base_config}")
  exit_if_any_failed(results)


if __name__ == "__main__":
  main()
