"""Runs one of the paper's ablations over seeds (sagan_jax.ablations describes them).

  python -m sagan_jax.ablations --sweep=table1 --out=DIR [--results=DIR]
      [--base_config=PATH[:variant]] [--steps=N] [--seeds=K] [--first_seed=S]
      [--baseline=VARIANT] [--eval_points=N] [--eval_samples=N] [--set FIELD=VALUE …]
      [--only=A,B] [--parallel=P] [--reuse=RESULTS …] [--report_only] [--print_commands]
  python -m sagan_jax.ablations --sweep=fig3 --out=DIR [the same flags]

For example, Table 1 and then Fig. 3 over three seeds, two runs at a time, their records and
tables in docs/ (Fig. 3 takes Table 1's runs of its very config instead of training them):

  python -m sagan_jax.ablations --sweep=table1 --out=runs/table1 \\
      --results=docs/ablations/table1 --seeds=3 --parallel=2
  python -m sagan_jax.ablations --sweep=fig3 --out=runs/fig3 \\
      --results=docs/ablations/fig3 --reuse=docs/ablations/table1 --seeds=3 --parallel=2

table1 trains no attention; self-attention at each feature side of the model; and at the same
sides a residual block with the attention block's parameter count. fig3 trains SN on D only at
1:1 and 5:1 D:G steps and SN on G and D at 1:1, at equal learning rates, and SN on G and D with
TTUR. Every variant × seed trains in OUT/<variant>/seed<k>/; RESULTS (--results, default OUT)
gets its record, runs/<variant>/seed<k>.json, then results.md/.csv, paired.csv and the plots.
Rerunning a command resumes it: finished runs are not retrained. A run that fails leaves no
record, and the sweep exits 1 with one error line after writing the tables.
"""

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

import os
import sys
import types

from absl import app, flags

from sagan_jax import cli, workdir
from sagan_jax.ablations import launcher, records, tables
from sagan_jax.ablations.variants import SWEEPS, Sweep
from sagan_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_enum(
  "sweep",
  None,
  list(SWEEPS),
  "table1: attention placement (the paper's Table 1); "
  "fig3: stabilisation, SN on G and TTUR (the paper's Fig. 3).",
)
flags.DEFINE_string(
  "base_config", "configs/fashion_mnist.py", "Config file (optionally :variant) every variant starts from."
)
flags.DEFINE_integer("steps", 600, "G steps per run.", lower_bound=1)
flags.DEFINE_string("out", None, "Output folder: one workdir per variant and seed.")
flags.DEFINE_string(
  "results", "", "Folder of the per-run records, tables and plots (default: --out); commit it."
)
flags.DEFINE_integer("seeds", 1, "Training seeds per variant.", lower_bound=1)
flags.DEFINE_integer("first_seed", 0, "The first training seed.")
flags.DEFINE_string(
  "baseline",
  None,
  "Variant every other is compared with, seed by seed "
  "(default: table1 self-attention at the base config's side, feat16 on the "
  "embedded default; fig3 sn_gd_ttur).",
)
flags.DEFINE_integer(
  "eval_points",
  None,
  "Evaluations per run, evenly spaced, the last at the end "
  "(default: table1 1; fig3 4, its curves need points).",
  lower_bound=1,
)
flags.DEFINE_integer("eval_samples", 2000, "Samples per evaluation.", lower_bound=1)
flags.DEFINE_multi_string(
  "set", [], "FIELD=VALUE: an extra override for every variant, e.g. --set model.ch=2."
)
flags.DEFINE_string("only", "", "Comma-separated variant names to run (default: all).")
flags.DEFINE_integer("parallel", 1, "Runs trained at once on this machine.", lower_bound=1)
flags.DEFINE_multi_string(
  "reuse",
  [],
  "Another sweep's --results folder: a finished run there with "
  "the very config a run here would train is taken instead of training it.",
)
flags.DEFINE_bool("report_only", False, "Train nothing: the tables and plots of the runs finished so far.")
flags.DEFINE_bool(
  "print_commands", False, "Print one launch command per variant and seed and exit (batch jobs, Cloud TPU)."
)
flags.mark_flags_as_required(["sweep", "out"])
SWEEP_FLAGS = (
  "base_config",
  "steps",
  "out",
  "results",
  "seeds",
  "first_seed",
  "baseline",
  "eval_points",
  "eval_samples",
  "set",
  "only",
  "parallel",
  "reuse",
  "report_only",
  "print_commands",
)


def _sweep_args(sweep: Sweep, config) -> types.SimpleNamespace:
  """The flags as attributes, with the sweep's own defaults where a flag was left out."""
  args = types.SimpleNamespace(**{name: FLAGS[name].value for name in SWEEP_FLAGS})
  # Runs start in the package's folder: a local --out / --results is made absolute here, where
  # the user named it (a gs:// URL stays as it is).
  local = lambda path: path if not path or workdir.is_remote(path) else os.path.abspath(path)
  args.out, args.results = local(args.out), local(args.results or args.out)
  args.baseline = args.baseline or sweep.default_baseline(config)
  if args.eval_points is None:
    args.eval_points = sweep.default_eval_points
  return args


def run_ablation() -> list:
  """Trains (or resumes, reports, prints the commands of) the sweep the flags name, writes its
  tables and plots; returns its records."""
  sweep = SWEEPS[FLAGS.sweep]
  for item in FLAGS.set:
    if "=" not in item:
      raise UserError(f"--set {item!r} is not FIELD=VALUE")
  config = records.load_base_config(FLAGS.base_config, FLAGS.set)
  args = _sweep_args(sweep, config)
  results = launcher.run_sweep(args, sweep.variants(config))
  if results:
    tables.write_tables(args, results, sweep.title)
    plot_title = f"{args.steps} steps, {args.base_config}"
    if sweep.bars:
      tables.plot_bars(args, results, sweep.bars, plot_title)
    tables.plot_curves(args, results, sweep.curves, plot_title)
  return results


def exit_if_any_failed(results: list) -> None:
  """One error line, exit status 1, when a run of the sweep failed (after its tables are
  written): a script or scheduler that runs the sweep must not take it for finished."""
  failed = [r for r in results if str(r.get("status", "")).startswith("failed")]
  if failed:
    runs = "; ".join(f"{r['variant']} seed {r['seed']} {r['status']}" for r in failed)
    sys.exit(
      f"error: {len(failed)} run(s) failed: {runs}. The tables cover the finished runs; "
      "rerun the same command to retry the failed ones (finished runs are not retrained)"
    )


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  exit_if_any_failed(cli.run(run_ablation))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
