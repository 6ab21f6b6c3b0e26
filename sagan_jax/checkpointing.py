"""orbax checkpoints of the train state: save every N steps, restore the latest, keep N."""
import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Wraps an orbax CheckpointManager over ``workdir/checkpoints``.

  Saves are asynchronous (training continues while files are written) and only
  become visible once complete (orbax finalises a step directory atomically).
  """

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, step: int, state_like):
    """Restores ``step`` into the structure, dtypes and shardings of ``state_like``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
