"""Divergence never reaches a checkpoint, and the loop keeps the device pipeline full:
it reads device values only at the steps of its periodic actions."""

import logging
import os
import threading

import jax
import numpy as np
import pytest

from sagan_jax import checkpointing, programs, sharding, train
from sagan_jax.data import pipeline
from sagan_jax.errors import TrainingDiverged


def checkpoints_on_disk(config, workdir):
  """{step: every leaf of that checkpoint's state finite}."""
  template = programs.programs(config, sharding.create_mesh()).init.eval_shape()
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  try:
    return {
      step: all(
        np.all(np.isfinite(x))
        for x in jax.tree.leaves(ckpt.restore(step, template))
        if np.issubdtype(np.asarray(x).dtype, np.floating)
      )
      for step in checkpointing.checkpoint_steps(workdir)
    }
  finally:
    ckpt.close()


def test_a_diverging_resume_writes_no_poisoned_checkpoint(smoke_config, tmp_path):
  """A learning rate of 1e30 makes finite but absurd updates whose next steps overflow; no
  non-finite update is applied, nothing is saved during the streak, the healthy checkpoint
  stays, and the run stops at once naming the step, the losses and what to change."""
  workdir = str(tmp_path / "run")
  smoke_config.num_train_steps = 2
  train.train_and_evaluate(smoke_config, workdir)
  smoke_config.num_train_steps = 12
  smoke_config.keep_checkpoints = 1  # a poisoned save would rotate the healthy one out
  smoke_config.max_nonfinite_steps = 2
  smoke_config.optimizer.d_lr = smoke_config.optimizer.g_lr = 1e30
  with pytest.raises(
    TrainingDiverged,
    match=r"2 consecutive non-finite updates up to step \d+ "
    r"\(d_loss=.*g_loss=.*\).*last checkpoint \(step 2\) "
    r"is healthy.*lower optimizer.d_lr",
  ):
    train.train_and_evaluate(smoke_config, workdir)
  assert checkpoints_on_disk(smoke_config, workdir) == {2: True}


def test_nan_data_stops_without_saving_during_the_streak(smoke_config, tmp_path, monkeypatch, caplog):
  original = pipeline.create_train_iterator

  def nan_from_third(config, **kwargs):
    start = kwargs["start_index"] // config.batch_size
    for i, batch in enumerate(original(config, **kwargs)):
      yield dict(batch, image=np.full_like(batch["image"], np.nan)) if start + i >= 2 else batch

  monkeypatch.setattr(pipeline, "create_train_iterator", nan_from_third)
  smoke_config.num_train_steps = 8
  smoke_config.max_nonfinite_steps = 4
  with caplog.at_level(logging.WARNING):
    with pytest.raises(TrainingDiverged, match="4 consecutive non-finite updates up to step 6"):
      train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert "step 4: no checkpoint during a non-finite streak" in caplog.text
  assert checkpoints_on_disk(smoke_config, str(tmp_path / "run")) == {2: True}


def steps_that_read_the_device(config, workdir, monkeypatch, hooks=()):
  """Trains; returns the steps after which the main thread read a device array (jax.Array's
  host value). On a CPU jax.transfer_guard_device_to_host cannot tell (host and device
  memory are one), so the reads are counted where every one of them passes."""
  from jax._src import array

  steps_run, reads = [0], set()
  host_value = array.ArrayImpl._value

  def counted(self):
    if threading.current_thread() is threading.main_thread():
      reads.add(steps_run[0])
    return host_value.fget(self)

  def count_step(step, state, metrics):
    steps_run[0] = step

  monkeypatch.setattr(array.ArrayImpl, "_value", property(counted))
  with jax.transfer_guard_device_to_host("disallow"):  # what an accelerator would refuse
    train.train_and_evaluate(config, workdir, hooks=[count_step, *hooks])
  monkeypatch.undo()
  return reads


def test_the_loop_reads_the_device_only_at_periodic_actions(smoke_config, tmp_path, monkeypatch):
  smoke_config.num_train_steps = 10
  for field in ("log_every_steps", "sample_every_steps", "checkpoint_every_steps", "max_nonfinite_steps"):
    smoke_config[field] = 5
  assert steps_that_read_the_device(smoke_config, str(tmp_path / "run"), monkeypatch) == {5, 10}
  assert sorted(os.listdir(tmp_path / "run" / "samples")) == ["step_00000005.png", "step_00000010.png"]


def test_a_read_after_every_step_would_be_seen(smoke_config, tmp_path, monkeypatch):
  """The test above can fail: a loop that reads a metric after every step is caught."""

  def reads_every_step(step, state, metrics):
    float(metrics["d_loss"])

  smoke_config.num_train_steps = 3
  smoke_config.log_every_steps = smoke_config.checkpoint_every_steps = 3
  assert steps_that_read_the_device(
    smoke_config, str(tmp_path / "run"), monkeypatch, hooks=[reads_every_step]
  ) == {1, 2, 3}
