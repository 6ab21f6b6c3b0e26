"""orbax checkpoints of the train state: save every N steps, restore the newest readable
one, keep N, set unreadable ones aside; one training per workdir.

Every path goes through ``etils.epath`` (orbax's own path layer): a workdir may be a local
folder or a ``gs://`` URL, and nothing of a remote workdir is written to the local disk.
"""
import fcntl
import logging
import os
import socket
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sagan_jax.errors import DiskFull, UserError, disk_full

CHECKPOINTS = "checkpoints"        # the folder of a workdir that holds the step directories
UNREADABLE = "unreadable_checkpoints"  # where damaged checkpoints are set aside
LOCK_FILE = ".training.lock"       # flocked by the training that owns the workdir
UNFINISHED = ".orbax-checkpoint-tmp"  # in the name of a save orbax has not finalised


def is_remote(workdir) -> bool:
  return "://" in os.fspath(workdir)


def write_whole(path: epath.Path, text: str) -> None:
  """Writes ``text`` so that no reader, kill or full disk meets half of it: on a local disk
  beside the file, then renamed over it; an object store shows an object once complete."""
  if is_remote(path):
    path.write_text(text, encoding="utf-8")
    return
  tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
  try:
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def workdir_path(workdir) -> epath.Path:
  """The workdir through the path layer: absolute on a local disk, as given for a URL."""
  text = os.fspath(workdir)
  return epath.Path(text if is_remote(text) else os.path.abspath(text))


def checkpoint_dir(workdir) -> epath.Path:
  return workdir_path(workdir) / CHECKPOINTS


def checkpoint_steps(workdir) -> list:
  """The finished checkpoints' steps, oldest first (orbax's unfinished saves are not digits)."""
  directory = checkpoint_dir(workdir)
  found = [p.name for p in directory.iterdir()] if directory.is_dir() else []
  return sorted(int(d) for d in found if d.isdigit())


def unfinished_saves(workdir) -> list:
  """orbax's tmp folders: saves a killed (or failed) process did not finish."""
  directory = checkpoint_dir(workdir)
  if not directory.is_dir():
    return []
  return sorted(p for p in directory.iterdir() if UNFINISHED in p.name)


def delete_unfinished_saves(workdir) -> list:
  """Deletes them; only the training that holds the workdir's lock may (one may be the save
  a running training is writing)."""
  deleted = unfinished_saves(workdir)
  for path in deleted:
    logging.warning("deleting %s, a checkpoint save that never finished", path)
    path.rmtree() if path.is_dir() else path.unlink()
  return deleted


def set_aside(workdir) -> list:
  """The names in workdir/unreadable_checkpoints/ (step-time of each damaged checkpoint)."""
  directory = workdir_path(workdir) / UNREADABLE
  return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def refuse_if_all_set_aside(workdir) -> None:
  """A workdir whose every checkpoint was damaged and set aside still holds the old run's
  config.json and samples: a new run must not take it over silently."""
  aside = set_aside(workdir)
  if aside and not checkpoint_steps(workdir):
    where = workdir_path(workdir)
    raise UserError(
        f"every checkpoint of {where} was unreadable and is set aside in {where / UNREADABLE} "
        f"({', '.join(aside[:5])}{' …' if len(aside) > 5 else ''}); starting over here would "
        f"overwrite the old run's config.json and samples: use a new --workdir, or delete "
        f"{where / UNREADABLE} to start over in this one")


def tree_shapes(tree) -> dict:
  """{'g_params/block1/conv1/kernel': shape} of a state, a template or orbax's metadata."""
  def name(key):
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {"/".join(name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def describe_mismatch(saved: dict, wanted: dict, limit: int = 3) -> str | None:
  """One phrase naming the arrays whose shapes (or presence) differ, None if none does."""
  differing = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
  missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
  if not (differing or missing or extra):
    return None
  parts = []
  if differing:
    shown = ", ".join(f"{k} {saved[k]} saved, {wanted[k]} now" for k in differing[:limit])
    parts.append(f"{len(differing)} array(s) of other shapes ({shown}{', …' if len(differing) > limit else ''})")
  if missing:
    parts.append(f"{len(missing)} the checkpoint lacks ({', '.join(missing[:limit])}"
                 f"{', …' if len(missing) > limit else ''})")
  if extra:
    parts.append(f"{len(extra)} this model lacks ({', '.join(extra[:limit])}"
                 f"{', …' if len(extra) > limit else ''})")
  return "; ".join(parts)


class WorkdirLock:
  """One training per workdir: an exclusive ``flock`` on workdir/.training.lock, held while
  the training runs. The kernel releases it when the process ends, however it ends (SIGKILL
  included), so a killed run never leaves it stuck.

  It holds for every process of one host. Across hosts it holds only where the shared file
  system implements flock between its clients (Linux NFS clients map it to NFS byte-range
  locks); a ``gs://`` workdir has no lock.
  """

  def __init__(self, workdir):
    self.workdir = workdir_path(workdir)
    self.path = self.workdir / LOCK_FILE
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    if is_remote(self.workdir):
      logging.info("%s is not on a local or network file system: no lock keeps a second "
                   "training out of it", self.workdir)
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise UserError(f"another training is running in {self.workdir} ({holder}); two on one "
                      f"workdir would delete each other's checkpoint saves: wait for it, stop it "
                      f"(SIGTERM saves a checkpoint; rerun then resumes), or use another --workdir"
                      ) from None
    except OSError as e:  # e.g. ENOLCK: a network file system without locking
      os.close(fd)
      logging.warning("cannot lock %s (%s): nothing keeps a second training out of this workdir",
                      self.path, e.strerror)
      return self
    self._fd = fd
    try:  # who holds it, for the message of a second training (best effort: the disk may be full)
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    except OSError:
      pass
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


class Checkpointer:
  """Wraps an orbax CheckpointManager over ``workdir/checkpoints``.

  Saves are asynchronous (training continues while files are written) and only
  become visible once complete (orbax finalises a step directory atomically).
  """

  def __init__(self, workdir: str, keep: int, owner: bool = False):
    """``owner``: the training run itself, which deletes the unfinished saves a killed
    process left behind (orbax's tmp directories). Readers (evaluate, visualize) leave
    them alone: one may be a save the running training is writing right now."""
    self.workdir = workdir_path(workdir)
    self.directory = checkpoint_dir(workdir)
    if os.fspath(self.workdir).startswith("gs://"):
      try:  # orbax lists a bucket's step folders with it
        from google.cloud import storage  # pylint: disable=g-import-not-at-top,unused-import
      except ImportError:
        raise UserError(f"a gs:// workdir ({self.workdir}) needs the google-cloud-storage package, "
                        f"which orbax lists a bucket's checkpoints with: pip install "
                        f"google-cloud-storage") from None
    self._saving = None  # the step of the save in flight
    self._failed = None  # the error of a save that failed
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=owner,
                                             cleanup_tmp_directories=owner))

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self) -> list:
    return sorted(self._manager.all_steps())

  # Saving

  def save(self, step: int, state) -> None:
    self._saving = step
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state))
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(step, e)

  def wait(self) -> None:
    if self._failed is not None:
      return  # reported once; the manager has nothing left to finish
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(self._saving, e)

  def _save_failed(self, step, e: Exception):
    """A full disk: the half-written save is deleted, the finished checkpoints stay, and the
    message says so. Anything else propagates as it is."""
    self._failed = e
    full = disk_full(e)
    if full is None:
      raise e
    deleted = []
    if jax.process_index() == 0:
      try:
        deleted = delete_unfinished_saves(self.workdir)
      except Exception:  # pylint: disable=broad-except
        logging.exception("could not delete the unfinished save")
    kept = checkpoint_steps(self.workdir)
    raise DiskFull(
        f"no space left on the device of {self.directory} while saving the checkpoint of step "
        f"{step} ({' '.join(str(full).split())[:160]}); "
        + ("its half-written save is deleted; " if deleted else "")
        + (f"the checkpoints of steps {kept} stay" if kept else "no checkpoint was finished before")
        + "; free space there (other runs, or lower keep_checkpoints) and rerun the same "
          "command to resume") from None

  # Restoring

  def restore(self, step: int, state_like):
    """Restores ``step`` into the structure, dtypes and shardings of ``state_like``
    (arrays or a ``jax.eval_shape`` template of them)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def saved_shapes(self, step: int):
    """{array path: shape} from the checkpoint's metadata (no array data is read); None when
    the metadata itself is unreadable (a damaged checkpoint)."""
    try:
      return tree_shapes(self._manager.item_metadata(step))
    except Exception:  # pylint: disable=broad-except  (orbax raises many types for damaged files)
      return None

  def check_matches(self, step: int, state_like) -> bool:
    """Refuses (UserError, touching nothing) a checkpoint of another model; True if its
    metadata reads back and matches, False if the metadata is unreadable."""
    saved = self.saved_shapes(step)
    if saved is None:
      return False
    mismatch = describe_mismatch(saved, tree_shapes(state_like))
    if mismatch:
      raise UserError(
          f"checkpoint {step} in {self.directory} holds another model than the config describes: "
          f"{mismatch}; pass the config the run was trained with (its config.json, if it has one) "
          f"or use a new --workdir")
    return True

  def check_resumable(self, template_fn) -> int | None:
    """Before a training writes anything: the step it will resume from (None: a new run).
    Refuses a workdir whose checkpoints were all set aside, and a newest checkpoint of another
    model than ``template_fn()`` (the state's template, built only on resume). A damaged
    newest checkpoint is left to restore_latest."""
    refuse_if_all_set_aside(self.workdir)
    steps = self.all_steps()
    if steps:
      self.check_matches(steps[-1], template_fn())
    return steps[-1] if steps else None

  def restore_latest(self, state_like):
    """(step, state) of the newest readable checkpoint, or (0, None) when there is none.

    An unreadable one (truncated files, a disk that filled up) is moved to
    ``workdir/unreadable_checkpoints/`` — kept for inspection, out of orbax's way —
    and the previous one is tried. A checkpoint of another model is refused (UserError)
    and nothing is moved. A workdir whose checkpoints were all set aside is refused.
    """
    steps = self.all_steps()
    if not steps:
      refuse_if_all_set_aside(self.workdir)
    for step in reversed(steps):
      try:
        return step, self.restore(step, state_like)
      except Exception as e:  # orbax raises many types for damaged files
        self.check_matches(step, state_like)  # another model: refused, nothing moved
        if isinstance(e, PermissionError):
          raise UserError(f"checkpoint {step} in {self.directory} cannot be read ({e}); fix the "
                          f"permissions and rerun") from None
        aside = self.workdir / UNREADABLE / f"{step}-{int(time.time())}"
        logging.warning("checkpoint %d in %s is unreadable (%s: %s); moved to %s, trying the "
                        "previous one", step, self.directory, type(e).__name__, str(e)[:200], aside)
        if jax.process_index() == 0:
          aside.parent.mkdir(parents=True, exist_ok=True)
          (self.directory / str(step)).rename(aside)
        self._manager.reload()
    if steps:
      raise UserError(f"none of the checkpoints {steps} in {self.directory} is readable; they "
                      f"are set aside in {self.workdir / UNREADABLE}; use a new --workdir, or "
                      f"delete that folder to start over in this one")
    return 0, None

  def restore_newest_readable(self, state_like, step: int | None = None):
    """For readers (evaluate, visualize, report): (step, state) of ``step``, or of the newest
    checkpoint that reads back, saying so when the newest does not. Moves nothing."""
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise UserError(f"no checkpoint of step {step} in {self.directory}; it holds steps {steps}")
      candidates = [step]
    else:
      candidates = list(reversed(steps))
    failures = []
    for candidate in candidates:
      try:
        state = self.restore(candidate, state_like)
      except Exception as e:  # pylint: disable=broad-except
        self.check_matches(candidate, state_like)
        failures.append((candidate, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"))
        continue
      if failures:
        logging.warning("checkpoint(s) %s in %s are unreadable (%s); using step %d, the newest "
                        "readable one (pass --step to choose another)",
                        [s for s, _ in failures], self.directory, failures[0][1], candidate)
      return candidate, state
    readable_hint = [s for s in steps if s not in {f for f, _ in failures}]
    raise UserError(
        f"checkpoint(s) {[s for s, _ in failures]} in {self.directory} are unreadable "
        f"({failures[0][1]})"
        + (f"; pass --step with one of {readable_hint}" if readable_hint else
           "; none is readable: retrain, or restore the checkpoints from a copy"))

  def reached_preemption(self, step: int) -> bool:
    """True on every host once a preemption notice reached the JAX distributed runtime."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    try:
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      if self._failed is None:
        raise
      logging.warning("closing the checkpoint manager after a failed save", exc_info=True)


# A training run's hold on its workdir

def _unusable_workdir(workdir: str, e: Exception) -> UserError:
  if disk_full(e):
    return DiskFull(f"no space left on the device of workdir {workdir!r} (any checkpoint save a "
                    f"killed run left unfinished there is already deleted); free space there "
                    f"(other runs, or lower keep_checkpoints) and rerun the same command")
  reason = getattr(e, "strerror", None) or " ".join(str(e).split())[:200]
  return UserError(f"workdir {workdir!r} is not writable ({reason}); choose another --workdir "
                   f"or fix its permissions")


def open_workdir(workdir: str) -> "WorkdirLock":
  """Creates the workdir, takes its lock (one training per workdir), deletes the checkpoint
  saves a killed run left unfinished (ours now: we hold the lock) and only then probes that
  it takes a file: a resume on a full disk first frees what its own half-written save held.
  Everything through the path layer: a gs:// workdir leaves nothing on the local disk.
  Returns the held lock."""
  path = workdir_path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except  (gfile raises its own types for URLs)
    raise _unusable_workdir(workdir, e) from None
  lock = _lock_workdir(workdir)
  try:
    if jax.process_index() == 0:
      delete_unfinished_saves(workdir)
    probe = path / f".write_test.{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    lock.release()
    raise _unusable_workdir(workdir, e) from None
  return lock


def _lock_workdir(workdir: str) -> "WorkdirLock":
  """Process 0 takes the lock; every process learns whether it got it (and refuses if not)."""
  lock = WorkdirLock(workdir)
  refused = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except (UserError, OSError) as e:
      refused = e if isinstance(e, UserError) else _unusable_workdir(workdir, e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None))) and not refused:
      refused = UserError(f"another training is running in {workdir} (process 0 found its lock); "
                          f"wait for it, stop it, or use another --workdir")
  if refused:
    raise refused
  return lock
