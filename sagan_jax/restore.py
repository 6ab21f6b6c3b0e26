"""Reopen a finished or running training run: its config and a checkpoint's state.

Used by the tools that read runs (evaluate, visualize, report) so that they need
only ``--workdir``: the config comes from the ``config.json`` training wrote there.
"""
import json
import os

import jax
import ml_collections

from sagan_jax import checkpointing, sharding, train
from sagan_jax.errors import UserError

# Model fields added after runs were written, with the value that reproduces those runs.
ADDED_MODEL_FIELDS = {"attention_block": "self_attention", "attention_query_chunk": 256}


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{path} does not exist; pass the --workdir of a training run "
                    f"(python -m sagan_jax.main writes it when a run starts)")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  for key, value in ADDED_MODEL_FIELDS.items():  # runs written before the field existed
    if key not in config.model:
      config.model[key] = value
  return config


def checkpoint_steps(workdir: str) -> list:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  found = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(d) for d in found if d.isdigit())


def restore_run(config, workdir: str, step: int | None = None, mesh=None):
  """(step, TrainState) of checkpoint ``step`` (None: the latest) of ``workdir``."""
  steps = checkpoint_steps(workdir)
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not steps:
    raise UserError(f"no checkpoint in {directory}; train first (python -m sagan_jax.main "
                    f"--config=… --workdir={workdir}) or pass the run's --workdir")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise UserError(f"no checkpoint of step {step} in {directory}; it holds steps {steps}")
  train.validate_config(config)
  template = jax.eval_shape(train.programs(config, mesh or sharding.create_mesh()).init)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  try:
    return step, ckpt.restore(step, template)
  finally:
    ckpt.close()
