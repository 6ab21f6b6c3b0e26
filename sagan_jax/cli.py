"""What every command-line tool of the package does before and around its work:
TF kept off the accelerators, jax.distributed on multi-process launches, the persistent
XLA cache, and a user's mistake printed as one line instead of a traceback."""
import logging
import os
import sys


def maybe_initialize_distributed():
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


def enable_compilation_cache():
  """Restarts (resume after preemption) load compiled programs instead of recompiling."""
  import jax
  cache = os.environ.get("SAGAN_JAX_XLA_CACHE", os.path.expanduser("~/.cache/sagan_jax/xla"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def start(argv, *, distributed: bool, log_level=logging.INFO):
  """Common start of a tool. ``distributed``: a command that may run as several processes and
  compiles large programs (main, evaluate): jax.distributed on multi-process launches and the
  persistent XLA cache. Every tool keeps TensorFlow (tf.data, event files) off the GPUs."""
  from absl import app
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # TF would otherwise take the GPUs' memory
  if distributed:
    maybe_initialize_distributed()
    enable_compilation_cache()
  logging.getLogger().setLevel(log_level)


def run(fn, *args, **kwargs):
  """fn(*args, **kwargs); a UserError ends the process with its one-line message (exit 2),
  a preemption with its own message and exit code."""
  from sagan_jax.errors import Preempted, UserError
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
