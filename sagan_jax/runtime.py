"""Process start-up of the package's tools: the CPU host split into devices, TensorFlow kept off
the accelerators, jax.distributed on multi-process launches, the persistent XLA cache, and the
log filter that keeps orbax's narration out.

Every tool calls ``start`` once, after its flags are parsed and before JAX touches a device.
"""

import logging
import os
import sys

from sagan_jax import signals, workdir

# XLA:CPU runs a small convolution on about one thread; split into one device per core, the
# batch's shares run side by side (1.27x at ch=8 on 2 cores, README Performance). 'auto'
# (config.cpu_devices 0) is capped because more than 2 was not measured.
MAX_AUTO_CPU_DEVICES = 4
CPU_DEVICE_FLAG = "--xla_force_host_platform_device_count"
LAUNCH_MARKERS = (
  "JAX_COORDINATOR_ADDRESS",
  "SLURM_NTASKS",
  "TPU_WORKER_HOSTNAMES",
  "MEGASCALE_COORDINATOR_ADDRESS",
)


def multi_process_launch(environ=os.environ) -> bool:
  return any(environ.get(m) for m in LAUNCH_MARKERS) and environ.get("SLURM_NTASKS", "2") != "1"


def split_cpu_host(batch_sizes, requested: int = 0, environ=os.environ, cores: int | None = None) -> int:
  """Gives JAX's CPU platform ``requested`` devices (config.cpu_devices; 0: one per usable core,
  at most MAX_AUTO_CPU_DEVICES, a count that divides every one of ``batch_sizes``), unless
  XLA_FLAGS already sets the count or this is a multi-process launch. Only the host (CPU)
  platform is affected: a GPU or TPU run's devices are unchanged. Call before JAX's first use
  of a device. Returns the count chosen (1: no split, nothing set; 0: left to XLA_FLAGS or the
  launch)."""
  flags = environ.get("XLA_FLAGS", "")
  if CPU_DEVICE_FLAG in flags or multi_process_launch(environ):
    return 0
  if requested:
    count = requested
  else:
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    count = max(
      n
      for n in range(1, max(1, min(cores, MAX_AUTO_CPU_DEVICES)) + 1)
      if all(b % n == 0 for b in batch_sizes)
    )
  if count > 1:
    environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICE_FLAG}={count}".strip()
  return count


def maybe_initialize_distributed():
  """Multi-process launches set these variables; jax.distributed reads the cluster's own.

  SLURM, Cloud TPU pods, Kubernetes and MPI are detected by JAX. Elsewhere set
  JAX_COORDINATOR_ADDRESS plus SAGAN_JAX_NUM_PROCESSES and SAGAN_JAX_PROCESS_ID (JAX reads
  no variable for those two).
  """
  import jax

  if multi_process_launch():
    explicit = {}
    if os.environ.get("SAGAN_JAX_NUM_PROCESSES"):
      explicit = dict(
        num_processes=int(os.environ["SAGAN_JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["SAGAN_JAX_PROCESS_ID"]),
      )
    jax.distributed.initialize(**explicit)


def xla_cache_dir() -> str:
  """$SAGAN_JAX_XLA_CACHE, or the cache root's xla/."""
  return os.environ.get("SAGAN_JAX_XLA_CACHE") or os.fspath(workdir.cache_root() / "xla")


def enable_compilation_cache():
  """Restarts (resume after preemption) load compiled programs instead of recompiling."""
  import jax

  jax.config.update("jax_compilation_cache_dir", xla_cache_dir())
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _quiet_orbax(record: logging.LogRecord) -> bool:
  """A log filter: orbax narrates every save at INFO (dropped), and a failed save logs its
  traceback once from each of its threads (kept as one line each: the failure itself reaches
  the caller, which reports it, or prints its traceback if it is not a user's); asyncio logs
  each failed read of a damaged checkpoint's arrays (dropped)."""
  if record.name == "asyncio" and "exception was never retrieved" in str(record.msg):
    return False  # TensorStore's reads of a damaged checkpoint, one per array: the restore reports it
  if "orbax" not in record.pathname:
    return True
  if record.levelno < logging.WARNING:
    return False
  record.exc_info = record.exc_text = record.stack_info = None
  return True


def _closed_loop_callback(value, tb) -> bool:
  """TensorStore's completion callback of a write that failed after orbax closed the event
  loop of its save thread: asyncio's 'Event loop is closed', printed once per array."""
  if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
    return False
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"


def _in_checkpoint_io(tb) -> bool:
  """Whether a traceback passes through orbax's or TensorStore's code."""
  while tb is not None:
    name = tb.tb_frame.f_code.co_filename
    if "/orbax/" in name or "/tensorstore/" in name:
      return True
    tb = tb.tb_next
  return False


def quiet_orbax() -> None:
  """orbax's narration off, and a failed save or restore reported by the caller in one line
  rather than by every thread of it with a traceback."""
  for handler in logging.getLogger().handlers:
    if _quiet_orbax not in handler.filters:
      handler.addFilter(_quiet_orbax)
  if getattr(sys.excepthook, "__name__", "") == "_quiet_excepthook":
    return
  hook, unraisable_hook = sys.excepthook, sys.unraisablehook

  def _quiet_excepthook(kind, value, tb):
    if not _closed_loop_callback(value, tb):
      hook(kind, value, tb)

  def _quiet_unraisablehook(unraisable):
    # A restore of a damaged checkpoint: TensorStore's callbacks and orbax's abandoned reads
    # report each array this way (hundreds of tracebacks); the restore's failure reaches the caller.
    value, tb = unraisable.exc_value, unraisable.exc_traceback
    if not (_closed_loop_callback(value, tb) or _in_checkpoint_io(tb)):
      unraisable_hook(unraisable)

  sys.excepthook = _quiet_excepthook
  sys.unraisablehook = _quiet_unraisablehook


def check_backend() -> None:
  """JAX's devices, or one line when the platforms JAX_PLATFORMS names do not start here (JAX
  raises a RuntimeError the first time and a bare AssertionError after)."""
  import jax

  try:
    jax.devices()
  except (RuntimeError, AssertionError) as e:
    from sagan_jax.errors import UserError

    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "(JAX's default)"
    detail = " ".join(str(e).split())[:200] or f"JAX has no {platforms!r} backend installed"
    raise UserError(
      f"JAX_PLATFORMS={platforms}: JAX cannot start it on this machine ({detail}); unset "
      f"JAX_PLATFORMS to use what is here, or install the accelerator's packages "
      f"(make ACCELERATOR=cuda|tpu venv)"
    ) from None


def start(
  *, distributed: bool, log_level=logging.INFO, tensorflow: bool = True, compilation_cache: bool = False
):
  """Common start of a tool. ``distributed``: a command that may run as several processes and
  compiles large programs (main, evaluate): jax.distributed on multi-process launches and the
  persistent XLA cache (``compilation_cache``: the cache alone). A tool that reads data or event
  files (``tensorflow``) keeps TensorFlow off the GPUs; every tool keeps orbax's narration out
  of its log."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with signals.interrupts_deferred():
    if tensorflow:
      import tensorflow as tf

      tf.config.set_visible_devices([], "GPU")  # TF would otherwise take the GPUs' memory
    import jax  # noqa: F401  (its native libraries load while SIGINT waits)

    if distributed:
      maybe_initialize_distributed()
    check_backend()
    if distributed or compilation_cache:
      enable_compilation_cache()
  logging.getLogger().setLevel(log_level)
  quiet_orbax()
