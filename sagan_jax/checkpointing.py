"""orbax checkpoints of the train state: save every N steps, restore the newest readable
one, keep N, set unreadable ones aside."""
import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

from sagan_jax.errors import UserError

CHECKPOINTS = "checkpoints"  # the folder of a workdir that holds the step directories


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def checkpoint_steps(workdir: str) -> list:
  """The finished checkpoints' steps, oldest first (orbax's unfinished saves are not digits)."""
  directory = checkpoint_dir(workdir)
  found = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(d) for d in found if d.isdigit())


class Checkpointer:
  """Wraps an orbax CheckpointManager over ``workdir/checkpoints``.

  Saves are asynchronous (training continues while files are written) and only
  become visible once complete (orbax finalises a step directory atomically).
  """

  def __init__(self, workdir: str, keep: int, owner: bool = False):
    """``owner``: the training run itself, which deletes the unfinished saves a killed
    process left behind (orbax's tmp directories). Readers (evaluate, visualize) leave
    them alone: one may be a save the running training is writing right now."""
    self.workdir = os.path.abspath(workdir)
    self.directory = checkpoint_dir(workdir)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=owner))

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, step: int, state_like):
    """Restores ``step`` into the structure, dtypes and shardings of ``state_like``
    (arrays or a ``jax.eval_shape`` template of them)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest(self, state_like):
    """(step, state) of the newest readable checkpoint, or (0, None) when there is none.

    An unreadable one (truncated files, a disk that filled up) is moved to
    ``workdir/unreadable_checkpoints/`` — kept for inspection, out of orbax's way —
    and the previous one is tried.
    """
    steps = sorted(self._manager.all_steps())
    for step in reversed(steps):
      try:
        return step, self.restore(step, state_like)
      except Exception as e:  # orbax raises many types for damaged files
        aside = os.path.join(self.workdir, "unreadable_checkpoints", f"{step}-{int(time.time())}")
        logging.warning("checkpoint %d in %s is unreadable (%s: %s); moved to %s, trying the "
                        "previous one", step, self.directory, type(e).__name__, str(e)[:200], aside)
        if jax.process_index() == 0:
          os.makedirs(os.path.dirname(aside), exist_ok=True)
          shutil.move(os.path.join(self.directory, str(step)), aside)
        self._manager.reload()
    if steps:
      raise UserError(f"none of the checkpoints {steps} in {self.directory} is readable; "
                      f"move the workdir aside to start over")
    return 0, None

  def reached_preemption(self, step: int) -> bool:
    """True on every host once a preemption notice reached the JAX distributed runtime."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
