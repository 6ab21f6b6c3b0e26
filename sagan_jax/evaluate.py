"""Evaluate a trained run:
python -m sagan_jax.evaluate --config=… --workdir=… [--step=N] [--num_samples=N].

Restores the latest (or the named) checkpoint of the workdir, scores the EMA generator
on `config.eval_metrics` and appends the result to workdir/metrics.jsonl and TensorBoard.
--config and --workdir are the training command's (same flags, same meaning).
"""
import logging
import os
import sys

from absl import app, flags

from sagan_jax.main import FLAGS, _maybe_initialize_distributed

flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.DEFINE_integer("num_samples", None,
                     "Samples to score (default: config.eval_final_num_samples).")


def evaluate_checkpoint(config, workdir: str, step: int | None = None,
                        num_samples: int | None = None) -> dict:
  """Scores the checkpoint `step` (None: the latest) of `workdir`; returns the scalars."""
  import jax
  from clu import metric_writers
  from sagan_jax import restore, sharding, train
  from sagan_jax.evaluation.evaluator import Evaluator

  mesh = sharding.create_mesh()
  step, state = restore.restore_run(config, workdir, step, mesh)
  evaluator = Evaluator(config, mesh, train.programs(config, mesh).sampler, workdir)
  scalars = evaluator.evaluate(state, step, num_samples or config.eval_final_num_samples)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  writer.write_scalars(step, scalars)
  writer.flush()
  return scalars


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep TF off the accelerators.
  from sagan_jax.errors import UserError
  _maybe_initialize_distributed()
  logging.getLogger().setLevel(logging.INFO)
  try:
    evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step, FLAGS.num_samples)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
