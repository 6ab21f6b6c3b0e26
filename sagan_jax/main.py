"""Train SAGAN: python -m sagan_jax.main --config=configs/<name>.py[:smoke] --workdir=DIR.

Fields can be overridden as --config.<field>=<value>. Launched as several processes
(Cloud TPU pod slice, SLURM), JAX's distributed runtime is initialised from the
environment; a single process is left untouched.
"""

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

from absl import app, flags
from ml_collections import config_flags

from sagan_jax import cli, runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Path to a config file (optionally :variant).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def _train():
  config = FLAGS.config
  runtime.split_cpu_host([config.batch_size, config.eval.batch_size], config.cpu_devices)
  runtime.start(distributed=True)
  with signals.interrupts_deferred():
    from sagan_jax import train
  return train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  cli.run(_train)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
