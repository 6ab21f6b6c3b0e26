"""A run in its workdir: its saved config (config.json: read, recorded, checked against a
config that would resume it), and a finished or running run opened for use — one checkpoint's
state and the programs to use it with, built once.

The tools that read runs (evaluate, visualize, report) need only ``--workdir``: the
config comes from the ``config.json`` training wrote there.
"""

import json
from typing import Any, NamedTuple

from jax.sharding import Mesh

from sagan_jax import checkpointing, programs, sharding
from sagan_jax import config as config_lib
from sagan_jax import workdir as workdir_lib
from sagan_jax.errors import UserError
from sagan_jax.models.kernels import Kernels


def load_config(workdir: str):
  """The config a run was trained with (its config.json), completed with the fields added since."""
  return config_lib.from_saved(workdir_lib.read_config_dict(workdir))


def check_same_model(config, workdir: str, resuming: bool) -> None:
  """On resume, refuses a config whose model differs from the workdir's config.json in a field
  that decides parameter shapes (UserError; nothing is written)."""
  if not resuming or not workdir_lib.path(workdir, workdir_lib.CONFIG).exists():
    return
  differing = config_lib.differing_model_fields(workdir_lib.read_config_dict(workdir), config)
  if differing:
    raise UserError(
      f"{workdir} holds a run of another model: {differing}; use a new --workdir or the workdir's config"
    )


def check_no_other_run(config, workdir: str) -> None:
  """Before a run starts from step 0 in ``workdir``: refuses a workdir that holds another run's
  files (config.json, samples, logs, …) without a checkpoint to resume — a rerun would
  overwrite them. The same config started again (a run stopped before its first checkpoint)
  may start over."""
  present = workdir_lib.run_files(workdir)
  if not present:
    return
  what = (
    f"{workdir} holds a run's files ({', '.join(present)}) but no checkpoint to resume; training here "
    f"would overwrite them"
  )
  if workdir_lib.CONFIG in present:
    saved = config_lib.from_saved(workdir_lib.read_config_dict(workdir))
    same = json.loads(saved.to_json()) == json.loads(config.to_json())
    if same:
      return
    what += " with another config's run"
  raise UserError(f"{what}: restore its checkpoints/ folder to resume it, or give this run a new --workdir")


def record_config(config, workdir: str, kernels: Kernels) -> None:
  """Writes workdir/config.json (atomically): the config, and its kernels as resolved."""
  workdir_lib.write_config_json(workdir, config_lib.to_json(config, kernels.choices()))


class Run(NamedTuple):
  workdir: str
  config: Any  # the run's config (or the caller's, checked against it)
  step: int  # of the restored checkpoint
  state: programs.TrainState  # replicated over mesh
  programs: programs.Programs
  mesh: Mesh


def open_run(workdir: str, step: int | str | None = None, mesh: Mesh | None = None, config=None) -> Run:
  """Checkpoint ``step`` (None: the newest that reads back, with a warning naming the
  unreadable newer ones; 'best': the one in workdir/best/) of the run in ``workdir``.

  ``config`` None: the run's own; otherwise a config whose model must be the run's (to
  change, say, the evaluation fields).
  """
  if config is None:
    config = load_config(workdir)
  else:
    check_same_model(config, workdir, resuming=True)  # refuses another model
  config_lib.validate_config(config)
  workdir_lib.check_folders(workdir)
  best = step == checkpointing.BEST_STEP
  folder = workdir_lib.BEST if best else workdir_lib.CHECKPOINTS
  steps = checkpointing.checkpoint_steps(workdir, folder)
  directory = workdir_lib.path(workdir, folder)
  if not steps and best:
    raise UserError(
      f"no best checkpoint in {directory}: a training keeps one when config.best_metric names a "
      f"number its periodic evaluations write (e.g. --config.best_metric=fid)"
    )
  if not steps:
    raise UserError(
      f"no checkpoint in {directory}; train first (python -m sagan_jax.main "
      f"--config=… --workdir={workdir}) or pass the run's --workdir"
    )
  if step is not None and not best and step not in steps:
    raise UserError(f"no checkpoint of step {step} in {directory}; it holds steps {steps}")
  mesh = mesh or sharding.create_mesh()
  built = programs.programs(config, mesh)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, folder=folder)
  try:
    step, state = ckpt.restore_newest_readable(built.init.eval_shape(), None if best else step)
  finally:
    ckpt.close()
  return Run(workdir, config, step, state, built, mesh)
