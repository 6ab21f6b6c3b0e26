"""Open a finished or running training run: its config, one checkpoint's state, and the
programs to use it with, built once.

The tools that read runs (evaluate, visualize, report) need only ``--workdir``: the
config comes from the ``config.json`` training wrote there.
"""
from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh

from sagan_jax import checkpointing, programs, sharding
from sagan_jax import config as config_lib
from sagan_jax.errors import UserError


class Run(NamedTuple):
  workdir: str
  config: Any                 # the run's config (or the caller's, checked against it)
  step: int                   # of the restored checkpoint
  state: programs.TrainState  # replicated over mesh
  programs: programs.Programs
  mesh: Mesh


def open_run(workdir: str, step: int | None = None, mesh: Mesh | None = None,
             config=None) -> Run:
  """Checkpoint ``step`` (None: the newest that reads back, with a warning naming the
  unreadable newer ones) of the run in ``workdir``.

  ``config`` None: the run's own; otherwise a config whose model must be the run's (to
  change, say, the evaluation fields).
  """
  if config is None:
    config = config_lib.load_run_config(workdir)
  elif (checkpointing.workdir_path(workdir) / config_lib.RUN_CONFIG).exists():
    config_lib.check_config_compatible(config, workdir, resuming=True)  # refuses another model
  config_lib.validate_config(config)
  steps = checkpointing.checkpoint_steps(workdir)
  directory = checkpointing.checkpoint_dir(workdir)
  if not steps:
    raise UserError(f"no checkpoint in {directory}; train first (python -m sagan_jax.main "
                    f"--config=… --workdir={workdir}) or pass the run's --workdir")
  if step is not None and step not in steps:
    raise UserError(f"no checkpoint of step {step} in {directory}; it holds steps {steps}")
  mesh = mesh or sharding.create_mesh()
  built = programs.programs(config, mesh)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  try:
    step, state = ckpt.restore_newest_readable(jax.eval_shape(built.init), step)
  finally:
    ckpt.close()
  return Run(workdir, config, step, state, built, mesh)
