"""Train SAGAN: python -m sagan_jax.main --config=configs/<name>.py[:smoke] --workdir=DIR.

Fields can be overridden as --config.<field>=<value>. Launched as several processes
(Cloud TPU pod slice, SLURM), JAX's distributed runtime is initialised from the
environment; a single process is left untouched.
"""
from sagan_jax import cli

if __name__ == "__main__":
  cli.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :variant).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def _train(argv):
  config = FLAGS.config
  cli.split_cpu_host([config.batch_size, config.eval_batch_size])
  cli.start(argv, distributed=True)
  cli.quiet_orbax()
  with cli.interrupts_deferred():
    from sagan_jax import train
  return train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def main(argv):
  cli.run(_train, argv)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
