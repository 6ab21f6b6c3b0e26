"""Evaluate a trained run:
python -m sagan_jax.evaluate --workdir=… [--step=N] [--num_samples=N] [--noise_seed=S]
[--config=… [--config.X=…]].

Restores the latest (or the named) checkpoint of the workdir, scores the EMA generator
on `config.eval.metrics` and appends the result to workdir/metrics.jsonl and TensorBoard.
The config is the one training wrote to workdir/config.json, unless --config names one
(e.g. to change config.eval fields); its model must be the workdir's.
"""

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file (default: the workdir's config.json); its model must match the run's.",
  lock_config=True,
)
flags.DEFINE_string("workdir", None, "The training run's --workdir.")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.DEFINE_integer("num_samples", None, "Samples to score (default: config.eval.num_samples).")
flags.DEFINE_integer(
  "noise_seed",
  None,
  "Seed of the samples' noise (default: the run's, the same at every evaluation); "
  "another seed scores other samples of the same generator.",
)
flags.mark_flags_as_required(["workdir"])


def evaluate_checkpoint(
  config, workdir: str, step: int | None = None, num_samples: int | None = None, noise_seed: int | None = None
) -> dict:
  """Scores the checkpoint `step` (None: the latest) of `workdir`; returns the scalars.

  ``config`` None: the run's own (workdir/config.json).
  """
  import jax
  from clu import metric_writers

  from sagan_jax.evaluation.evaluator import Evaluator
  from sagan_jax.run import open_run

  run = open_run(workdir, step, config=config)
  names = tuple(run.config.eval.metrics)
  evaluator = Evaluator(run.config, run.mesh, run.programs.sampler, workdir, run.programs.kernels, names)
  scalars = evaluator.evaluate(
    run.state, run.step, num_samples or run.config.eval.num_samples, names, noise_seed
  )
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  writer.write_scalars(run.step, scalars)
  writer.flush()
  return scalars


def _evaluate():
  from sagan_jax import runtime
  from sagan_jax.errors import UserError

  runtime.start(distributed=True)
  if FLAGS.num_samples is not None and FLAGS.num_samples <= 0:
    raise UserError(
      f"--num_samples={FLAGS.num_samples}: score at least one sample (default: config.eval.num_samples)"
    )
  return evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step, FLAGS.num_samples, FLAGS.noise_seed)


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  from sagan_jax import cli

  scalars = cli.run(_evaluate)
  print(", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))  # the one-line result


if __name__ == "__main__":
  from sagan_jax import cli

  app.run(main, flags_parser=cli.parse_flags)
