"""Fig. 3 of the paper: spectral norm on G and TTUR stabilise training.

  python experiments/stabilization.py --out=runs/fig3 [--base_config=configs/fashion_mnist.py]
      [--results=docs/ablations/fig3] [--steps=N] [--seeds=3] [--baseline=sn_gd_ttur]
      [--eval_points=4] [--eval_samples=N] [--parallel=2] [--print_commands] [--set FIELD=VALUE]

Four variants (paper §5.1):
  sn_d_1to1   SN on D only, 1 D step per G step, equal learning rates
  sn_d_5to1   SN on D only, 5 D steps per G step, equal learning rates
  sn_gd_1to1  SN on G and D, 1:1, equal learning rates
  sn_gd_ttur  SN on G and D, 1:1, TTUR (the base config's lr_G < lr_D)
"Equal" is the base config's lr_G for both nets (the paper: 1e-4 for both, TTUR 1e-4 /
4e-4). Each run is evaluated --eval_points times; the plots show the metric vs G step
(each seed faint, the mean bold); every variant is compared seed by seed with --baseline.
"""
from sweep import (Variant, exit_if_any_failed, load_base_config, parse_args,
                   plot_curves, run_sweep, write_tables)


def variants(config) -> list:
  g_lr, d_lr = config.optimizer.g_lr, config.optimizer.d_lr
  equal = {"optimizer.g_lr": g_lr, "optimizer.d_lr": g_lr}
  return [
      Variant("sn_d_1to1", f"SN on D only, 1:1, lr {g_lr:g} both",
              {"model.g_spectral_norm": False, "d_steps_per_g_step": 1, **equal}),
      Variant("sn_d_5to1", f"SN on D only, 5:1, lr {g_lr:g} both",
              {"model.g_spectral_norm": False, "d_steps_per_g_step": 5, **equal}),
      Variant("sn_gd_1to1", f"SN on G and D, 1:1, lr {g_lr:g} both",
              {"model.g_spectral_norm": True, "d_steps_per_g_step": 1, **equal}),
      Variant("sn_gd_ttur", f"SN on G and D, 1:1, TTUR lr_G {g_lr:g} lr_D {d_lr:g}",
              {"model.g_spectral_norm": True, "d_steps_per_g_step": 1,
               "optimizer.g_lr": g_lr, "optimizer.d_lr": d_lr}),
  ]


def main():
  args = parse_args(__doc__, default_steps=600, default_baseline="sn_gd_ttur", default_eval_points=4)  # curves need points
  config = load_base_config(args.base_config, args.set)
  results = run_sweep(args, variants(config))
  if results:
    write_tables(args, results, "Stabilisation: SN on G and TTUR (the paper's Fig. 3)")
    plot_curves(args, results, "stabilization", f"{args.steps} steps, {args.base_config}")
  exit_if_any_failed(results)


if __name__ == "__main__":
  main()
