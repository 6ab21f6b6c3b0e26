"""A run's workdir: the name of every file and folder in it, the one atomic writer, the lock
that keeps a second training out, the run's config.json and its metrics.jsonl; and the cache
root the package keeps downloads and derived data in.

Every path goes through ``etils.epath`` (orbax's own path layer): a workdir may be a local
folder or a ``gs://`` URL, and nothing of a remote workdir is written to the local disk.
"""

import fcntl
import json
import logging
import os
import shutil
import socket
import time

from etils import epath

from sagan_jax.errors import DiskFull, UserError, disk_full

# The layout of a run
CONFIG = "config.json"  # the run's config (training writes it when it starts)
METRICS = "metrics.jsonl"  # one JSON line per evaluation
CHECKPOINTS = "checkpoints"  # orbax's step folders
UNREADABLE = "unreadable_checkpoints"  # damaged checkpoints, set aside
BEST = "best"  # the checkpoint of the best evaluation so far (config.best_metric), never rotated
LOCK = ".training.lock"  # flocked by the training that owns the workdir
LABEL_MAP = "label_map.txt"  # an image folder's classes, '<label>\t<name>' per line
SAMPLES = "samples"  # the sample grid, step_<8 digits>.png
ATTENTION = "attention"  # python -m sagan_jax.visualize's attention figures
SHEETS = "sheets"  # … and its class sheets
NEAREST = "nearest"  # … and its nearest training images of samples
REPORT = "report.html"  # python -m sagan_jax.report's page
PROFILE = "profile"  # jax.profiler traces (config.profile_steps)
EVENTS_GLOB = "events.out.tfevents.*"  # TensorBoard's event files (clu's writer)


def is_remote(path) -> bool:
  return "://" in os.fspath(path)


def path(workdir, *names) -> epath.Path:
  """A workdir (or a file of it) through the path layer: absolute on a local disk, as given
  for a URL."""
  text = os.fspath(workdir)
  root = epath.Path(text if is_remote(text) else os.path.abspath(text))
  return root.joinpath(*names) if names else root


def step_png(step: int, suffix: str = "") -> str:
  """The name of a step's figure: step_00001200.png, step_00001200_<suffix>.png."""
  return f"step_{step:08d}{'_' + suffix if suffix else ''}.png"


# Writing


def write_atomic(target: epath.Path, data: str | bytes) -> None:
  """Writes ``data`` so that no reader, kill or full disk meets half of it: on a local disk
  beside the file, then renamed over it; an object store shows an object once complete."""
  target = epath.Path(target)
  write = (
    (lambda p: p.write_bytes(data))
    if isinstance(data, bytes)
    else (lambda p: p.write_text(data, encoding="utf-8"))
  )
  if is_remote(target):
    write(target)
    return
  tmp = target.parent / f"{target.name}.tmp{os.getpid()}"
  try:
    write(tmp)
    os.replace(tmp, target)
  finally:
    if tmp.exists():
      tmp.unlink()


# config.json


# What a run writes besides its checkpoints: a workdir holding any of them holds a run.
RUN_FILES = (CONFIG, METRICS, SAMPLES, REPORT, ATTENTION, SHEETS, EVENTS_GLOB)


def run_files(workdir) -> list:
  """The names of RUN_FILES present in ``workdir`` (event files by their pattern)."""
  root = path(workdir)
  if not root.exists():
    return []
  return [name for name in RUN_FILES if (list(root.glob(name)) if "*" in name else (root / name).exists())]


def remove_if_empty(workdir) -> None:
  """Deletes a local ``workdir`` folder that holds nothing (no-op otherwise)."""
  if not is_remote(workdir):
    try:
      os.rmdir(path(workdir))
    except OSError:
      pass


def publish(staging: str, target: str) -> None:
  """Moves a finished local ``staging`` folder or file to ``target``, replacing what is there:
  the old one is moved aside first and deleted only once the new one is in place."""
  aside = None
  if os.path.lexists(target):
    aside = os.path.join(os.path.dirname(target) or ".", f".{os.path.basename(target)}.old{os.getpid()}")
    os.replace(target, aside)
  os.replace(staging, target)
  if aside:
    shutil.rmtree(aside) if os.path.isdir(aside) and not os.path.islink(aside) else os.unlink(aside)


def read_config_dict(workdir) -> dict:
  """The JSON object of a run's config.json, or a UserError saying what to do."""
  target = path(workdir, CONFIG)
  if not target.exists():
    raise UserError(
      f"{target} does not exist; pass the --workdir of a training run "
      f"(python -m sagan_jax.main writes it when a run starts)"
    )
  try:
    saved = json.loads(target.read_text())
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
      raise ValueError("not a JSON object of config fields with a 'model' object")
    return saved
  except (OSError, ValueError) as e:
    raise UserError(
      f"{target} is not readable as a run's config ({' '.join(str(e).split())}); "
      f"restore it from a copy of the run, or delete it and rerun the training with "
      f"the config it was trained with, which records that one"
    ) from None


def write_config_json(workdir, text: str) -> None:
  write_atomic(path(workdir, CONFIG), text)


# metrics.jsonl


def append_metrics_line(workdir, line: dict, step: int) -> None:
  """Appends one JSON line to metrics.jsonl by writing the whole file anew, so that a reader
  (or a kill, or a full disk) never meets half a line: an object store cannot append, and a
  local file is written beside and renamed over. A full disk leaves the file as it was and is
  one DiskFull line saying what to free."""
  target = path(workdir, METRICS)
  try:
    text = target.read_text() if target.exists() else ""
    if text and not text.endswith("\n"):
      text += "\n"  # a half line an older writer left: our line stays whole after it
    text += json.dumps(line) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
  except Exception as e:  # pylint: disable=broad-except  (gfile raises its own types for URLs)
    full = disk_full(e)
    if full is None:
      raise
    raise DiskFull(
      f"no space left on the device of {target} while recording the evaluation of step {step} "
      f"({' '.join(str(full).split())[:160]}); {target.name} is as it was before; free space "
      f"there (other runs, or lower keep_checkpoints) and rerun the same command (a training "
      f"resumes from its last checkpoint; python -m sagan_jax.evaluate --workdir=… --step=N "
      f"scores a checkpoint again)"
    ) from None


def read_metrics_lines(workdir) -> list:
  """The evaluations of metrics.jsonl; a line that is not a JSON object with a step (half a
  line a killed writer left, a hand edit) is skipped with a warning naming it."""
  target = path(workdir, METRICS)
  if not target.exists():
    return []
  evaluations, skipped = [], []
  for number, line in enumerate(target.read_bytes().decode(errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    try:
      evaluation = json.loads(line)
    except ValueError:
      evaluation = None
    if isinstance(evaluation, dict) and "step" in evaluation:
      evaluations.append(evaluation)
    else:
      skipped.append(number)
  if skipped:
    logging.warning("%s: skipped line(s) %s, which are not whole evaluations", target, skipped)
  return evaluations


# The lock: one training per workdir


class WorkdirLock:
  """An exclusive ``flock`` on workdir/.training.lock, held while a training runs. The kernel
  releases it when the process ends, however it ends (SIGKILL included), so a killed run never
  leaves it stuck.

  It holds for every process of one host. Across hosts it holds only where the shared file
  system implements flock between its clients (Linux NFS clients map it to NFS byte-range
  locks); a ``gs://`` workdir has no lock.
  """

  def __init__(self, workdir):
    self.workdir = path(workdir)
    self.path = self.workdir / LOCK
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    if is_remote(self.workdir):
      logging.info(
        "%s is not on a local or network file system: no lock keeps a second training out of it", self.workdir
      )
      return self
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(
          f"another training is running in {self.workdir} ({holder}); two on one "
          f"workdir would delete each other's checkpoint saves: wait for it, stop it "
          f"(SIGTERM saves a checkpoint; rerun then resumes), or use another --workdir"
        ) from None
      except OSError as e:  # e.g. ENOLCK: a network file system without locking
        os.close(fd)
        logging.warning(
          "cannot lock %s (%s): nothing keeps a second training out of this workdir", self.path, e.strerror
        )
        return self
      if self._is_the_lock_file(fd):
        break
      os.close(fd)  # its holder deleted it on release after this open: lock the file there now
    self._fd = fd
    try:  # who holds it, for the message of a second training (best effort: the disk may be full)
      os.ftruncate(fd, 0)
      os.pwrite(
        fd,
        f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
        0,
      )
    except OSError:
      pass
    return self

  def _is_the_lock_file(self, fd) -> bool:
    try:
      return os.fstat(fd).st_ino == os.stat(self.path).st_ino
    except FileNotFoundError:
      return False

  def release(self) -> None:
    """Deletes the lock file while still holding it (an opener waiting on it then sees it
    gone and locks a new one), then unlocks."""
    if self._fd is not None:
      try:
        self.path.unlink(missing_ok=True)
      except OSError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def unusable(workdir, e: Exception) -> UserError:
  """The one-line error of a workdir that does not take a file."""
  if disk_full(e):
    return DiskFull(
      f"no space left on the device of workdir {os.fspath(workdir)!r} (any "
      f"checkpoint save a killed run left unfinished there is already deleted); free "
      f"space there (other runs, or lower keep_checkpoints) and rerun the same command"
    )
  reason = getattr(e, "strerror", None) or " ".join(str(e).split())[:200]
  return UserError(
    f"workdir {os.fspath(workdir)!r} is not writable ({reason}); choose another "
    f"--workdir or fix its permissions"
  )


def check_writable(workdir, process_index: int) -> None:
  """Creating and deleting a probe file in the workdir works (every process its own)."""
  probe = path(workdir, f".write_test.{process_index}")
  try:
    probe.write_text("ok")
  except Exception as e:  # pylint: disable=broad-except  (gfile raises its own types for URLs)
    raise unusable(workdir, e) from None
  finally:  # also the empty file a full disk leaves
    try:
      probe.unlink(missing_ok=True)
    except Exception:  # pylint: disable=broad-except
      pass


# What a run keeps in folders of these names: a file of one of them is refused, not written over.
RUN_FOLDERS = {
  CHECKPOINTS: "checkpoints",
  UNREADABLE: "set-aside checkpoints",
  BEST: "best checkpoint",
  SAMPLES: "sample grids",
  ATTENTION: "attention figures",
  SHEETS: "class sheets",
  NEAREST: "nearest-image figures",
  PROFILE: "profiler traces",
}


def check_folders(workdir) -> None:
  """Refuses a workdir where one of the run's folders is a file (a copy gone wrong, a name
  taken by something else): the tools would fail on it half-way, after writing."""
  for name, what in RUN_FOLDERS.items():
    target = path(workdir, name)
    if target.exists() and not target.is_dir():
      raise UserError(
        f"{target} is a file, where the run keeps its {what} (a folder); move the file away "
        f"and rerun, or use another --workdir"
      )


# The cache


def cache_root() -> epath.Path:
  """Where the package keeps what it downloads or derives once (the Fashion-MNIST files,
  Inception weights, reference statistics, the metric's classifier, compiled XLA programs):
  $XDG_CACHE_HOME/sagan_jax, or ~/.cache/sagan_jax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return epath.Path(base) / "sagan_jax"
