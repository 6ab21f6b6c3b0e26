"""orbax checkpoints of the train state in workdir/checkpoints: save every N steps, restore
the newest readable one, keep N, set unreadable ones aside (workdir/unreadable_checkpoints).

Every path goes through ``etils.epath`` (orbax's own path layer, sagan_jax.workdir): a
workdir may be a local folder or a ``gs://`` URL.
"""

import logging
import os
import time

import jax
import orbax.checkpoint as ocp

from sagan_jax import workdir as workdir_lib
from sagan_jax.errors import DiskFull, UserError, disk_full

UNFINISHED = ".orbax-checkpoint-tmp"  # in the name of a save orbax has not finalised
UNREADABLE = workdir_lib.UNREADABLE
LISTINGS = 5  # a reader lists the steps again when the one it read was rotated away


def checkpoint_dir(workdir):
  return workdir_lib.path(workdir, workdir_lib.CHECKPOINTS)


BEST_STEP = "best"  # what a tool's --step names workdir/best/'s checkpoint by


def checkpoint_steps(workdir, folder: str = workdir_lib.CHECKPOINTS) -> list:
  """The finished checkpoints' steps, oldest first (orbax's unfinished saves are not digits)."""
  directory = workdir_lib.path(workdir, folder)
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
  directory = workdir_lib.path(workdir, UNREADABLE)
  return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def refuse_if_all_set_aside(workdir) -> None:
  """A workdir whose every checkpoint was damaged and set aside still holds the old run's
  config.json and samples: a new run must not take it over silently."""
  aside = set_aside(workdir)
  if aside and not checkpoint_steps(workdir):
    where = workdir_lib.path(workdir)
    raise UserError(
      f"every checkpoint of {where} was unreadable and is set aside in {where / UNREADABLE} "
      f"({', '.join(aside[:5])}{' …' if len(aside) > 5 else ''}); starting over here would "
      f"overwrite the old run's config.json and samples: use a new --workdir, or delete "
      f"{where / UNREADABLE} to start over in this one"
    )


def tree_shapes(tree) -> dict:
  """{'g_params/block1/conv1/kernel': shape} of a state, a template or orbax's metadata."""

  def name(key):
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)

  return {
    "/".join(name(k) for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def describe_mismatch(saved: dict, wanted: dict, limit: int = 3) -> str | None:
  """One phrase naming the arrays whose shapes (or presence) differ, None if none does."""
  differing = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
  missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
  if not (differing or missing or extra):
    return None
  parts = []
  if differing:
    shown = ", ".join(f"{k} {saved[k]} saved, {wanted[k]} now" for k in differing[:limit])
    parts.append(
      f"{len(differing)} array(s) of other shapes ({shown}{', …' if len(differing) > limit else ''})"
    )
  if missing:
    parts.append(
      f"{len(missing)} the checkpoint lacks ({', '.join(missing[:limit])}"
      f"{', …' if len(missing) > limit else ''})"
    )
  if extra:
    parts.append(
      f"{len(extra)} this model lacks ({', '.join(extra[:limit])}{', …' if len(extra) > limit else ''})"
    )
  return "; ".join(parts)


def failure_cause(e: BaseException, limit: int = 240) -> str:
  """What went wrong in a failed restore, in one short phrase: the innermost exception of the
  chain (orbax wraps TensorStore's error, naming the file and byte range, in one whose text is
  mostly the store's spec)."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


class Checkpointer:
  """Wraps an orbax CheckpointManager over ``workdir/checkpoints``.

  Saves are asynchronous (training continues while files are written) and only
  become visible once complete (orbax finalises a step directory atomically).
  """

  def __init__(
    self,
    workdir: str,
    keep: int,
    owner: bool = False,
    folder: str = workdir_lib.CHECKPOINTS,
    best_metric: str = "",
    best_mode: str = "min",
  ):
    """``owner``: the training run itself, which deletes the unfinished saves a killed
    process left behind (orbax's tmp directories). Readers (evaluate, visualize) leave
    them alone: one may be a save the running training is writing right now.

    ``folder``: workdir/checkpoints, or workdir/best for the best checkpoint, whose saves carry
    the value of ``best_metric`` (orbax keeps it with the step, so it survives a resume) and
    whose manager keeps the one of the lowest (``best_mode`` 'min') or highest value."""
    self.workdir = workdir_lib.path(workdir)
    self.directory = workdir_lib.path(workdir, folder)
    self.best_metric = best_metric
    if os.fspath(self.workdir).startswith("gs://"):
      try:  # orbax lists a bucket's step folders with it
        from google.cloud import storage  # noqa: F401
      except ImportError:
        raise UserError(
          f"a gs:// workdir ({self.workdir}) needs the google-cloud-storage package, "
          f"which orbax lists a bucket's checkpoints with: pip install "
          f"google-cloud-storage"
        ) from None
    self._saving = None  # the step of the save in flight
    self._failed = None  # the error of a save that failed
    self._manager = ocp.CheckpointManager(
      self.directory,
      item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=owner,
        cleanup_tmp_directories=owner,
        **(
          dict(
            best_fn=lambda metrics: metrics[best_metric],
            best_mode=best_mode,
            keep_checkpoints_without_metrics=False,
          )
          if best_metric
          else {}
        ),
      ),
    )

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self) -> list:
    return sorted(self._manager.all_steps())

  # Saving

  def best(self) -> tuple | None:
    """(step, value) of the best checkpoint kept (``best_metric``), or None."""
    step = self._manager.best_step()
    if step is None:
      return None
    return step, float(self._manager.metrics(step)[self.best_metric])

  def save(self, step: int, state, metrics: dict | None = None) -> None:
    self._saving = step
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)
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
      "command to resume"
    ) from None

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
        f"or use a new --workdir"
      )
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
          raise UserError(
            f"checkpoint {step} in {self.directory} cannot be read ({e}); fix the permissions and rerun"
          ) from None
        aside = self.workdir / UNREADABLE / f"{step}-{int(time.time())}"
        logging.warning(
          "checkpoint %d in %s is unreadable (%s); moved to %s, trying the previous one",
          step,
          self.directory,
          failure_cause(e),
          aside,
        )
        if jax.process_index() == 0:
          aside.parent.mkdir(parents=True, exist_ok=True)
          (self.directory / str(step)).rename(aside)
        self._manager.reload()
    if steps:
      raise UserError(
        f"none of the checkpoints {steps} in {self.directory} is readable; they "
        f"are set aside in {self.workdir / UNREADABLE}; use a new --workdir, or "
        f"delete that folder to start over in this one"
      )
    return 0, None

  def _rotated_away(self, step: int, listed: list) -> bool:
    """Whether a step that failed to read is being rotated away by a training beside the reader
    rather than damaged: its folder is gone, or a newer step was saved since ``listed`` (orbax
    deletes a step only after saving a newer one, and file by file, so a half-deleted step
    still exists and its metadata reads back partly)."""
    if not (self.directory / str(step)).exists():
      return True
    self._manager.reload()
    now = self.all_steps()
    return step not in now or max(now, default=step) > max(listed, default=step)

  def restore_newest_readable(self, state_like, step: int | None = None):
    """For readers (evaluate, visualize, report, sample): (step, state) of ``step``, or of the
    newest checkpoint that reads back, saying so when the newest does not. Moves nothing.

    A training beside the reader keeps saving and rotating its checkpoints: a step that
    vanishes between the listing and its restore is not damaged but rotated away, so the
    steps are listed again (at most LISTINGS times) and the newest is tried anew."""
    failures = {}  # damaged: step -> what reading it raised
    for _ in range(LISTINGS):
      self._manager.reload()
      steps = self.all_steps()
      if step is not None and step not in steps:
        raise UserError(f"no checkpoint of step {step} in {self.directory}; it holds steps {steps}")
      candidates = [step] if step is not None else [s for s in reversed(steps) if s not in failures]
      rotated = False
      for candidate in candidates:
        try:
          state = self.restore(candidate, state_like)
        except Exception as e:  # pylint: disable=broad-except
          if self._rotated_away(candidate, steps):
            rotated = True
            break
          self.check_matches(candidate, state_like)
          failures[candidate] = failure_cause(e)
          continue
        if failures:
          logging.warning(
            "checkpoint(s) %s in %s are unreadable (%s); using step %d, the newest "
            "readable one (pass --step to choose another)",
            list(failures),
            self.directory,
            next(iter(failures.values())),
            candidate,
          )
        return candidate, state
      if not rotated:
        break
    if not failures:
      raise UserError(
        f"the checkpoints in {self.directory} were rotated away {LISTINGS} times while being read "
        f"(a training saving faster than they load); rerun, or raise its checkpoint_every_steps"
      )
    readable_hint = [s for s in self.all_steps() if s not in failures]
    raise UserError(
      f"checkpoint(s) {list(failures)} in {self.directory} are unreadable "
      f"({next(iter(failures.values()))})"
      + (
        f"; pass --step with one of {readable_hint}"
        if readable_hint
        else "; none is readable: retrain, or restore the checkpoints from a copy"
      )
    )

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
