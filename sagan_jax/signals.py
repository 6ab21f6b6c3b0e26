"""Every way a signal stops a process of the package, in one place.

- In the training loop (``StopSignals``): SIGTERM, SIGINT, SIGHUP (a closed terminal, a dropped
  ssh session) and SIGQUIT set a flag; the loop finishes its step, writes a checkpoint and stops.
- Outside it (start-up, a tool's work): a SIGINT is noted and raised as KeyboardInterrupt, and
  the tool stops with one line (``stopped_outside_the_loop``). While a native library imports
  (TensorFlow, jaxlib) it is only noted (``interrupts_deferred``): a KeyboardInterrupt inside
  such an import can abort the interpreter, and CPython drops one raised in a gc callback, so
  ``stop_if_interrupted`` raises a noted one again at the next safe point.
- A second stop signal ends the process at once, whatever it is doing
  (``exit_on_second_signal``).
"""

import contextlib
import os
import signal
import sys
import threading

# What stops a training with a checkpoint (the loop's handlers) and, sent twice, ends any process.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_NOTED = []  # SIGINTs noted outside the training loop
_WATCHER = []


def _main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


def note_interrupt(signum: int) -> None:
  _NOTED.append(signum)


def forget_interrupts() -> None:
  _NOTED.clear()


def stop_if_interrupted() -> None:
  """Raises KeyboardInterrupt if a SIGINT was noted: one whose exception CPython dropped (in
  a garbage-collection callback) or that was held back while native libraries imported."""
  if _NOTED:
    raise KeyboardInterrupt


class StopSignals:
  """In the training loop, a stop signal sets ``signal_name`` instead of killing the process;
  the loop finishes its step, saves and stops. The previous handlers are restored on exit."""

  def __init__(self):
    self.signal_name, self.signal_number, self._previous = None, None, {}

  def _handle(self, signum, frame):
    del frame
    self.signal_name, self.signal_number = signal.Signals(signum).name, signum

  def __enter__(self):
    if _main_thread():
      for sig in STOP_SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def exit_on_second_signal() -> None:
  """A second stop signal ends the process at once (exit 128 + signal), whatever phase it is
  in: also when the main thread is blocked in native code (a data pipeline, a compile, a save)
  and Python signal handlers cannot run. The first keeps its meaning (training: finish the step,
  save, stop; elsewhere SIGINT stops with one line, and SIGTERM, with no Python handler outside
  the training loop, ends the process itself).

  Works through the signal module's wake-up file descriptor, which the C-level handler writes
  each signal number to as it arrives; a daemon thread counts them.
  """
  if _WATCHER or not _main_thread():
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
            os.write(
              2,
              f"stopped at once by a second {name}: nothing more is saved; checkpoints "
              f"written before stay, and rerunning the same command resumes from the "
              f"last one\n".encode(),
            )
            os._exit(128 + signum)

  thread = threading.Thread(target=watch, name="second-signal-exit", daemon=True)
  thread.start()
  _WATCHER.append(thread)


def _interrupt(signum, frame):
  """SIGINT outside the training loop: noted, then raised as KeyboardInterrupt (as Python's own
  handler does); the note survives CPython dropping the exception."""
  del frame
  note_interrupt(signum)
  raise KeyboardInterrupt


def _note(signum, frame):
  del frame
  note_interrupt(signum)


def hold_interrupts() -> None:
  """From the top of a tool's module, before it imports JAX: a SIGINT is only noted until the
  flags are parsed, when the tool stops with one line."""
  if _main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _note)


def handle_interrupts() -> None:
  """Installs ``_interrupt`` for SIGINT, unless SIGINT is ignored (a background job, nohup) or a
  handler other than Python's (or hold_interrupts') is in place."""
  if _main_thread() and signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _note):
    signal.signal(signal.SIGINT, _interrupt)


@contextlib.contextmanager
def interrupts_deferred():
  """A SIGINT is only noted inside the block and raised when it ends (inside the import of a
  native extension a KeyboardInterrupt aborts the interpreter)."""
  if not _main_thread() or signal.getsignal(signal.SIGINT) not in (_interrupt, signal.default_int_handler):
    yield
    return
  previous = signal.signal(signal.SIGINT, _note)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  stop_if_interrupted()


def stopped_outside_the_loop(signum: int = signal.SIGINT):
  """The one line (and exit) of a SIGINT that arrived outside the training loop, whose own
  handler finishes the step and saves: during imports, flag parsing, set-up, or a tool's work."""
  name = signal.Signals(signum).name
  print(
    f"stopped by {name} outside the training loop (start-up, shut-down or a tool's work), "
    f"with no training step running; what was written before stays; rerun the same command "
    f"to resume",
    file=sys.stderr,
  )
  sys.exit(128 + signum)
