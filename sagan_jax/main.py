"""Train SAGAN: python -m sagan_jax.main --config=configs/<name>.py[:smoke] --workdir=DIR.

Fields can be overridden as --config.<field>=<value>. Launched as several processes
(Cloud TPU pod slice, SLURM), JAX's distributed runtime is initialised from the
environment; a single process is left untouched.
"""
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :variant).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed():
  """Multi-process launches set these variables; jax.distributed reads the cluster's own.

  SLURM, Cloud TPU pods, Kubernetes and MPI are detected by JAX. Elsewhere set
  JAX_COORDINATOR_ADDRESS plus SAGAN_JAX_NUM_PROCESSES and SAGAN_JAX_PROCESS_ID (JAX reads
  no variable for those two).
  """
  import jax
  markers = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")
  if any(os.environ.get(m) for m in markers) and os.environ.get("SLURM_NTASKS", "2") != "1":
    explicit = {}
    if os.environ.get("SAGAN_JAX_NUM_PROCESSES"):
      explicit = dict(num_processes=int(os.environ["SAGAN_JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["SAGAN_JAX_PROCESS_ID"]))
    jax.distributed.initialize(**explicit)


def _enable_compilation_cache():
  """Restarts (resume after preemption) load the compiled train step instead of recompiling."""
  import jax
  cache = os.environ.get("SAGAN_JAX_XLA_CACHE", os.path.expanduser("~/.cache/sagan_jax/xla"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep TF off the accelerators.
  from sagan_jax import train
  from sagan_jax.errors import Preempted, UserError
  _maybe_initialize_distributed()
  _enable_compilation_cache()
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers:  # orbax narrates every save at INFO
    handler.addFilter(lambda r: r.levelno >= logging.WARNING or "orbax" not in r.pathname)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main)
