"""Evaluate a trained run:
python -m sagan_jax.evaluate --config=… --workdir=… [--step=N] [--num_samples=N].

Restores the latest (or the named) checkpoint of the workdir, scores the EMA generator
on `config.eval_metrics` and appends the result to workdir/metrics.jsonl and TensorBoard.
--config and --workdir are the training command's (same flags, same meaning).
"""
import functools
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
  from sagan_jax import checkpointing, sharding, train
  from sagan_jax.errors import UserError
  from sagan_jax.evaluation.evaluator import Evaluator

  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  found = os.listdir(directory) if os.path.isdir(directory) else []
  steps = sorted(int(d) for d in found if d.isdigit())
  if not steps:
    raise UserError(f"no checkpoint in {directory}; train first (python -m sagan_jax.main "
                    f"--config=… --workdir={workdir}) or pass the run's --workdir")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise UserError(f"no checkpoint of step {step} in {directory}; it holds steps {steps}")
  train.validate_config(config)
  mesh = sharding.create_mesh()
  generator, discriminator = train.build_models(config)
  evaluator = Evaluator(config, mesh, train.make_sampler(config, generator, mesh), workdir)
  g_tx, d_tx = train.build_optimizers(config)
  state = jax.jit(functools.partial(train.init_state, config, generator, discriminator, g_tx, d_tx),
                  out_shardings=sharding.replicated(mesh))()
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  try:
    state = ckpt.restore(step, state)
  finally:
    ckpt.close()
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
