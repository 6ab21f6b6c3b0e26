"""Preemption, damaged checkpoints, divergence and bad workdirs lose nothing."""

import logging
import os
import signal

import jax
import ml_collections
import numpy as np
import pytest

from sagan_jax import config as config_lib
from sagan_jax import programs, run, sharding, train
from sagan_jax.data import pipeline
from sagan_jax.errors import Preempted, UserError


def patch_batches(monkeypatch, edit):
  """Wraps the input iterator: edit(batch_number, batch) may alter or act on each batch."""
  original = pipeline.create_train_iterator

  def wrapped(config, **kwargs):
    start = kwargs["start_index"] // config.batch_size
    for i, batch in enumerate(original(config, **kwargs)):
      yield edit(start + i, batch)

  monkeypatch.setattr(pipeline, "create_train_iterator", wrapped)


def leaves(state):
  return [
    np.asarray(x)
    for x in jax.tree.leaves(
      (state.g_params, state.d_params, state.ema_params, state.g_batch_stats, state.d_spectral)
    )
  ]


def test_sigterm_checkpoints_and_resume_is_bitwise_equal(smoke_config, tmp_path, monkeypatch):
  """Noise and data order derive from (seed, step): 3 steps, stop, 3 more equal 6 straight.
  At 2 D steps per G step, so the resumed data index counts every D step's batch (and a run with
  several D updates per step trains end to end in the default suite)."""
  smoke_config.num_train_steps = 6
  smoke_config.d_steps_per_g_step = 2
  smoke_config.checkpoint_every_steps = 100  # only the preemption checkpoint and the last
  straight = train.train_and_evaluate(smoke_config, str(tmp_path / "straight"))

  # SIGTERM arrives while step 3 runs (batches are fetched ahead, so the step counts, not the data)
  def third_step_signalled(step, state, metrics):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  with pytest.raises(Preempted, match="stopped by SIGTERM after step 3.*rerun the same command"):
    train.train_and_evaluate(smoke_config, str(tmp_path / "killed"), hooks=[third_step_signalled])
  assert os.listdir(tmp_path / "killed" / "checkpoints") == ["3"]
  resumed = train.train_and_evaluate(smoke_config, str(tmp_path / "killed"))
  assert int(resumed.step) == 6
  for a, b in zip(leaves(straight), leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def test_truncated_latest_checkpoint_falls_back_to_previous(smoke_config, tmp_path, caplog):
  workdir = tmp_path / "run"
  train.train_and_evaluate(smoke_config, str(workdir))  # checkpoints at 2 and 4
  damaged = workdir / "checkpoints" / "4"
  for root, _, files in os.walk(damaged):
    for name in files:
      if name not in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(0)
  smoke_config.num_train_steps = 5
  with caplog.at_level(logging.WARNING):
    state = train.train_and_evaluate(smoke_config, str(workdir))
  assert "checkpoint 4" in caplog.text and "unreadable" in caplog.text
  assert int(state.step) == 5
  assert os.listdir(workdir / "unreadable_checkpoints")  # kept aside, not deleted
  assert all(np.all(np.isfinite(x)) for x in leaves(state))


def test_nan_batch_is_skipped(smoke_config, tmp_path, monkeypatch, caplog):
  def nan_at_second(i, batch):
    if i == 1:
      batch = dict(batch, image=np.full_like(batch["image"], np.nan))
    return batch

  patch_batches(monkeypatch, nan_at_second)
  with caplog.at_level(logging.WARNING):
    state = train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert "step 2: a non-finite" in caplog.text and "update skipped (1 in a row)" in caplog.text
  assert int(state.step) == 4 and int(state.nonfinite_streak) == 0
  assert all(np.all(np.isfinite(x)) for x in leaves(state))


def test_resume_restores_without_computing_an_initial_state(smoke_config, tmp_path, compiled):
  """A resume restores into an abstract template: init_state is neither compiled nor run.
  It also deletes the unfinished save a killed process left; a reader of the run does not."""
  programs.clear_cache()  # as in a new process: the first run builds (or loads) its programs
  smoke_config.num_train_steps = 2
  train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert "init_state" in compiled()
  unfinished = tmp_path / "run" / "checkpoints" / "5.orbax-checkpoint-tmp-1764000000"
  unfinished.mkdir()
  (unfinished / "partial").write_text("a save killed halfway")
  assert run.open_run(str(tmp_path / "run"), config=smoke_config).step == 2
  assert unfinished.exists()  # evaluate/visualize may run beside a training that is saving
  # As in a new process: no program of the config is built yet.
  programs.clear_cache()
  resuming = compiled()
  smoke_config.num_train_steps = 3
  state = train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert int(state.step) == 3
  new = compiled()[len(resuming) :]
  assert "train_step" in new and "init_state" not in new
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "3"]


def test_incompatible_config_is_refused(smoke_config, tmp_path):
  smoke_config.num_train_steps = 2
  train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  smoke_config.num_train_steps = 4
  smoke_config.model.ch = 8
  with pytest.raises(UserError, match=r"model.ch \(4 in the workdir, 8 now\)"):
    train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["2"]  # nothing overwritten


def test_resuming_a_run_from_before_a_field_with_another_value_is_refused(smoke_config, tmp_path):
  """An old run's config.json lacks model.d_ch; it trained D at model.ch, so d_ch=8 is refused."""
  import json

  smoke_config.num_train_steps = 2
  train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  path = tmp_path / "run" / "config.json"
  old = json.loads(path.read_text())
  del old["model"]["d_ch"]
  path.write_text(json.dumps(old))
  smoke_config.num_train_steps = 4
  smoke_config.model.d_ch = 8
  with pytest.raises(UserError, match=r"model.d_ch \(None in the workdir, 8 now\)"):
    train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["2"]


def test_unwritable_workdir_is_refused_before_training(smoke_config, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(UserError, match="is not writable"):
    train.train_and_evaluate(smoke_config, str(blocker / "run"))


def test_runs_written_before_newer_model_fields_still_open(smoke_config, tmp_path):
  """A config.json from before a model field existed loads with the value that reproduces it."""
  import json

  old = json.loads(smoke_config.to_json())
  for field in config_lib.ADDED_MODEL_FIELDS:
    del old["model"][field]
  (tmp_path / "config.json").write_text(json.dumps(old))
  loaded = run.load_config(str(tmp_path))
  config_lib.validate_config(loaded)
  assert config_lib.program_fingerprint(loaded) == config_lib.program_fingerprint(smoke_config)


def test_runs_written_before_the_parameter_update_choice_keep_their_per_array_update(smoke_config, tmp_path):
  """model.kernels.parameter_update came later: a saved config without it resumes with the
  per-array update it was trained with, where 'auto' now means the flat one on a CPU."""
  import json

  old = json.loads(smoke_config.to_json())
  del old["model"]["kernels"]["parameter_update"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  loaded = run.load_config(str(tmp_path))
  config_lib.validate_config(loaded)
  mesh = sharding.create_mesh(jax.devices()[:1])
  assert programs.resolve_kernels(loaded, mesh).parameter_update == "per_array"
  assert programs.resolve_kernels(smoke_config, mesh).parameter_update == "flat"


def test_d_ch_widens_the_discriminator_alone(smoke_config):
  """model.d_ch sets D's width unit (BigGAN's D_ch); unset, D is as wide as G."""
  base = programs.abstract_state(smoke_config)
  wide_config = ml_collections.ConfigDict(smoke_config.to_dict())
  wide_config.model.d_ch = 2 * smoke_config.model.ch
  config_lib.validate_config(wide_config)
  wide = programs.abstract_state(wide_config)
  same_ch_config = ml_collections.ConfigDict(smoke_config.to_dict())
  same_ch_config.model.ch = 2 * smoke_config.model.ch
  assert programs.parameter_count(wide.g_params) == programs.parameter_count(base.g_params)
  assert jax.tree.map(lambda x: x.shape, wide.d_params) == jax.tree.map(
    lambda x: x.shape, programs.abstract_state(same_ch_config).d_params
  )
  assert programs.parameter_count(wide.d_params) > programs.parameter_count(base.d_params)


@pytest.mark.parametrize("bad", [0, -4, 2.5, "16", True])
def test_bad_d_ch_is_refused(smoke_config, bad):
  saved = smoke_config.to_dict()  # as a run's config.json reads back: no placeholder types
  saved["model"]["d_ch"] = bad
  with pytest.raises(UserError, match=r"model.d_ch must be a whole number of 1 or more \(or unset\)"):
    config_lib.validate_config(ml_collections.ConfigDict(saved))
