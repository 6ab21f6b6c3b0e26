"""Writes a run's report page (sagan_jax.report describes it).

python -m sagan_jax.report --workdir=DIR [--step=N] [--figures=false] [--out=PATH]
    [--columns=K] [--num_real=N] [--budget_mb=M] [--query_stride=S]
"""

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

# orbax (checkpointing) and JAX (cli's config) load while SIGINT waits, as native libraries must
from sagan_jax import (
  checkpointing,  # noqa: F401
  cli,
  report,
)


def _write():
  from absl import flags

  from sagan_jax import runtime

  runtime.start(distributed=False)
  f = flags.FLAGS
  return report.write_report(
    f.workdir,
    f.out,
    f.figures,
    step=f.step,
    columns=f.columns,
    num_real=f.num_real,
    budget_bytes=int(f.budget_mb * 2**20) if f.budget_mb else None,
    query_stride=f.query_stride,
  )


def _main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  print(cli.run(_write))


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "A training run's --workdir.")
  flags.DEFINE_string("out", None, "Output HTML file (default: WORKDIR/report.html).")
  cli.define_step_flag("Checkpoint of the explorer (default: the latest).")
  flags.DEFINE_bool(
    "figures",
    True,
    "Open the checkpoint and build the attention explorer "
    "(false: curves, samples and config only; no JAX program runs).",
  )
  flags.DEFINE_integer(
    "columns", None, "Explorer: G samples per class row (default: as many as fit the budget, at most 5)."
  )
  flags.DEFINE_integer("num_real", None, "Explorer: real images for D's layers (default: one per class row).")
  flags.DEFINE_float("budget_mb", None, "Explorer: MiB of 8-bit maps on the page (default 3).")
  flags.DEFINE_integer(
    "query_stride",
    None,
    "Explorer: store every S-th query cell of each layer (default: 1 unless the budget needs coarser).",
  )
  flags.mark_flags_as_required(["workdir"])
  app.run(_main, flags_parser=cli.parse_flags)
