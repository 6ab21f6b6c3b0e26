"""What every command-line tool of the package does before and around its work:
TF kept off the accelerators, jax.distributed on multi-process launches, the persistent
XLA cache, and a user's mistake printed as one line instead of a traceback.

Every tool starts as ``app.run(main, flags_parser=cli.parse_flags)`` and runs its work
inside ``cli.run``:

- ``parse_flags``: a bad flag, an unknown config field, a config file that does not load or
  a config variant that does not exist end in one ``error:`` line and exit code 2 (absl and
  ml_collections would print a traceback or a usage page, exit code 1). It also makes a
  second SIGINT/SIGTERM end the process at once, whatever it is doing.
- ``run``: a UserError, a full disk and an interrupted start-up end in one line.
"""
import contextlib
import logging
import os
import re
import signal
import sys
import threading

from sagan_jax import errors

USAGE_EXIT = 2          # a user's mistake
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _fail(message: str, code: int = USAGE_EXIT):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _tool_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0] or "python")


# Flags

def _last_line(text: str) -> str:
  """The exception line of a traceback folded into a message, without its type."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  last = lines[-1] if lines else ""
  return re.sub(r"^[A-Za-z_.]*(Error|Exception|Exit)\w*: ", "", last)


def _unknown_field(e: BaseException, argv) -> str | None:
  """ml_collections' KeyError/AttributeError for --config.a.b=… naming no field of the config."""
  text = str(e).replace("\\n", "\n").replace("\\'", "'")
  key = re.search(r"'(\w+)'", text)
  if not key:
    return None
  suggestion = re.search(r'Did you mean "(\w+)"', text)
  for arg in argv:
    override = re.match(r"^--?(?:no)?(\w+)\.([\w.]+)", arg)
    parts = override.group(2).split(".") if override else []
    if key.group(1) in parts:
      flag, at = override.group(1), parts.index(key.group(1))
      unknown = ".".join(parts[:at + 1])
      hint = ""
      if suggestion:
        hint = f" (did you mean --{flag}.{'.'.join(parts[:at] + [suggestion.group(1)] + parts[at + 1:])}?)"
      return (f"--{flag}.{override.group(2)}: the config has no field {unknown!r}{hint}; the "
              f"config file lists every field with a comment")
  return None


def flag_error(e: BaseException, argv) -> str:
  """One line for an exception raised while parsing the command line (all of it user input:
  flags, the config file they name, its variant, its overrides)."""
  from absl import flags
  text = str(e)
  if isinstance(e, (KeyError, AttributeError)) and (line := _unknown_field(e, argv)):
    return line
  required = re.match(r"flag --(\w+)=None: Flag --\w+ must have a value other than None", text)
  if required:
    return f"--{required.group(1)} is required (python -m {_tool_name()} --helpshort lists the flags)"
  if "Error whilst parsing config file" in text:  # config_flags folds in the file's traceback
    head = text.split(": Error whilst parsing config file")[0].strip()
    return f"{head}: {_last_line(text)}"
  config = next((a.split("=", 1)[1] for a in argv if re.match(r"^--?config=", a)), None)
  if config and config.split(":")[0].endswith(".json") and not isinstance(e, flags.Error):
    return (f"--config={config}: a config file is Python (configs/<name>.py), not a run's "
            f"config.json; evaluate reads the workdir's config.json itself (leave --config out); "
            f"to change fields give the .py config the run came from, with --config.X=… overrides")
  if "Failed loading config file" in text or isinstance(e, (OSError, ImportError, SyntaxError)):
    where = f"--config={config}" if config else "--config"
    detail = _last_line(text).replace("[Errno 2] ", "")
    if isinstance(e, SyntaxError):
      detail = f"{e.msg} ({e.filename}, line {e.lineno})"
    return f"{where}: the config file does not load ({detail})"
  if config and not isinstance(e, flags.Error):
    return (f"--config={config}: the config file does not load ({type(e).__name__}: "
            f"{_last_line(text)})")
  return " ".join(text.split()) or type(e).__name__


def parse_flags(argv):
  """absl's flag parsing (``app.run(main, flags_parser=cli.parse_flags)``) with every mistake
  as one ``error:`` line, exit code 2; positional arguments are refused the same way."""
  from absl import flags
  from ml_collections.config_flags import config_flags
  exit_on_second_signal()
  handle_interrupts()
  flag_values = flags.FLAGS
  try:
    errors.stop_if_interrupted()  # one that arrived while the tool's modules loaded
    rest = flag_values(argv)
    for name in list(flag_values):  # a config file that failed to load raises on first use
      flag = flag_values[name]
      if isinstance(flag.parser, config_flags.ConfigFileFlagParser) and flag.value is not None:
        getattr(flag.value, "get", None)
  except KeyboardInterrupt:
    stopped_at_start_up(signal.SIGINT)
  except Exception as e:  # pylint: disable=broad-except  (only user input is parsed here)
    _fail(flag_error(e, argv))
  if len(rest) > 1:
    _fail(f"unexpected arguments: {' '.join(rest[1:])}; every option is a --flag "
          f"(python -m {_tool_name()} --helpshort lists them)")
  return rest


# Signals

_WATCHER = []


def exit_on_second_signal() -> None:
  """A second SIGINT/SIGTERM ends the process at once (exit 128 + signal), whatever phase
  it is in: also when the main thread is blocked in native code (a data pipeline, a
  compile, a save) and Python signal handlers cannot run. The first keeps its meaning
  (training: finish the step, save, stop; elsewhere SIGINT stops with one line, and
  SIGTERM, with no Python handler outside the training loop, ends the process itself).

  Works through the signal module's wake-up file descriptor, which the C-level handler
  writes each signal number to as it arrives; a daemon thread counts them.
  """
  if _WATCHER or threading.current_thread() is not threading.main_thread():
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  try:
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  except ValueError:
    return

  def watch():
    seen = 0
    while True:
      for signum in os.read(read_fd, 64):
        if signum in STOP_SIGNALS:
          seen += 1
          if seen >= 2:
            name = signal.Signals(signum).name
            os.write(2, f"stopped at once by a second {name}: nothing more is saved; checkpoints "
                        f"written before stay, and rerunning the same command resumes from the "
                        f"last one\n".encode())
            os._exit(128 + signum)

  thread = threading.Thread(target=watch, name="second-signal-exit", daemon=True)
  thread.start()
  _WATCHER.append(thread)


def _interrupt(signum, frame):
  """SIGINT outside the training loop: noted, then raised as KeyboardInterrupt (as Python's
  own handler does). CPython drops the exception when it lands in a garbage-collection
  callback (JAX runs one), so the note lets the next ``errors.stop_if_interrupted`` (the
  training's set-up calls it) raise it again."""
  del frame
  errors.note_interrupt(signum)
  raise KeyboardInterrupt


def _note(signum, frame):
  del frame
  errors.note_interrupt(signum)


def hold_interrupts() -> None:
  """From the top of a tool's module, before it imports JAX: a SIGINT is only noted until
  ``parse_flags`` stops the tool with one line (a KeyboardInterrupt inside a native import
  can abort the interpreter, and CPython drops one raised in a gc callback)."""
  if (threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
    signal.signal(signal.SIGINT, _note)


def handle_interrupts() -> None:
  """Installs ``_interrupt`` for SIGINT, unless SIGINT is ignored (a background job, nohup)
  or a handler other than Python's (or hold_interrupts') is in place."""
  if (threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _note)):
    signal.signal(signal.SIGINT, _interrupt)


@contextlib.contextmanager
def interrupts_deferred():
  """A SIGINT is only noted inside the block and raised when it ends: inside the import of a
  native extension (TensorFlow, jaxlib) a KeyboardInterrupt aborts the interpreter."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) not in (_interrupt, signal.default_int_handler)):
    yield
    return
  previous = signal.signal(signal.SIGINT, _note)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  errors.stop_if_interrupted()


def stopped_at_start_up(signum: int):
  """The one line of a SIGINT that arrived outside the training loop (whose own handler
  finishes the step and saves): during imports, flag parsing, set-up, or a tool's work."""
  name = signal.Signals(signum).name
  print(f"stopped by {name} outside the training loop (start-up, shut-down or a tool's work), "
        f"with no training step running; what was written before stays; rerun the same command "
        f"to resume", file=sys.stderr)
  sys.exit(128 + signum)


# Start and run

def multi_process_launch(environ=os.environ) -> bool:
  markers = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")
  return any(environ.get(m) for m in markers) and environ.get("SLURM_NTASKS", "2") != "1"


# XLA:CPU runs a small convolution on about one thread; split into one device per core, the
# batch's shares run side by side (experiments/cpu_flags_benchmark.py: 1.27x at ch=8 on 2
# cores). Capped because more than 2 was not measured.
MAX_CPU_DEVICES = 4
CPU_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def split_cpu_host(batch_sizes, environ=os.environ, cores: int | None = None) -> int:
  """Gives JAX's CPU platform one device per usable core (at most MAX_CPU_DEVICES, and a
  count that divides every one of ``batch_sizes``), unless XLA_FLAGS already sets the count
  or this is a multi-process launch. Only the host (CPU) platform is affected: a GPU or TPU
  run's devices are unchanged. Call before JAX's first use of a device. Returns the count
  chosen (1: no split, nothing set; 0: the count was left to XLA_FLAGS or the launch)."""
  flags = environ.get("XLA_FLAGS", "")
  if CPU_DEVICE_FLAG in flags or multi_process_launch(environ):
    return 0
  cores = cores if cores is not None else len(os.sched_getaffinity(0))
  count = max(n for n in range(1, max(1, min(cores, MAX_CPU_DEVICES)) + 1)
              if all(b % n == 0 for b in batch_sizes))
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
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}; every option is a --flag")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with interrupts_deferred():
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")  # TF would otherwise take the GPUs' memory
    import jax  # pylint: disable=unused-import  (its native libraries, while SIGINT waits)
    if distributed:
      maybe_initialize_distributed()
      enable_compilation_cache()
  logging.getLogger().setLevel(log_level)


def _quiet_orbax(record: logging.LogRecord) -> bool:
  """A log filter: orbax narrates every save at INFO (dropped), and a failed save logs its
  traceback once from each of its threads (kept as one line each: the failure itself reaches
  the caller, which reports it, or prints its traceback if it is not a user's)."""
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


def quiet_orbax() -> None:
  """For a training: orbax's narration off, and a failed save (a full disk) reported by the
  caller in one line rather than by every thread of the save with a traceback."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(_quiet_orbax)
  hook = sys.excepthook

  def excepthook(kind, value, tb):
    if not _closed_loop_callback(value, tb):
      hook(kind, value, tb)

  sys.excepthook = excepthook


def disk_full_message(e: BaseException) -> str:
  where = getattr(e, "filename", None)
  return (f"no space left on the device{f' writing {where}' if where else ''} "
          f"({' '.join(str(e).split())[:200]}); free space there (old runs, older checkpoints: "
          f"lower keep_checkpoints) and rerun the same command: what was saved before stays "
          f"and a training resumes from its last checkpoint")


def run(fn, *args, **kwargs):
  """fn(*args, **kwargs); a UserError ends the process with its one-line message (exit 2),
  a preemption with its own message and exit code, a full disk with one line saying what to
  free (exit 2), a SIGINT outside the training loop with one line (exit 130)."""
  from sagan_jax.errors import Preempted, UserError, disk_full
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    _fail(" ".join(str(e).split()))
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    stopped_at_start_up(signal.SIGINT)
  except Exception as e:  # pylint: disable=broad-except
    full = disk_full(e)
    if full is None:
      raise
    _fail(disk_full_message(full))
