"""Kill/resume soak (slow tier): random SIGTERM/SIGKILL during a training, resumed each time, ends
bitwise where an uninterrupted run ends; a SIGTERM loses no step, a SIGKILL at most one
checkpoint interval. SAGAN_JAX_SLOW_TESTS=1 runs it (SAGAN_JAX_SOAK_KILLS kills, default 8;
~1 min a kill on 2 cores)."""

import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"\] \[(\d+)\] d_fake=")
RESUMED = re.compile(r"resumed from .* at step (\d+)")
STEPS, CHECKPOINT_EVERY = 40, 5

pytestmark = pytest.mark.skipif(
  not os.environ.get("SAGAN_JAX_SLOW_TESTS"), reason="minutes on 2 cores; set SAGAN_JAX_SLOW_TESTS=1"
)


def run_once(workdir, data_dir, kill_after_steps=None, sig=None):
  """Trains until done or until ``kill_after_steps`` new steps were logged, then sends ``sig``;
  returns (exit code, step resumed from, last step logged)."""
  cmd = [
    sys.executable,
    "-m",
    "sagan_jax.main",
    "--config=configs/fashion_mnist.py:smoke",
    f"--workdir={workdir}",
    f"--config.num_train_steps={STEPS}",
    f"--config.checkpoint_every_steps={CHECKPOINT_EVERY}",
    "--config.log_every_steps=1",
    f"--config.sample_every_steps={STEPS}",
    f"--config.dataset.data_dir={data_dir}",
  ]
  proc = subprocess.Popen(
    cmd,
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env=dict(os.environ, PYTHONPATH=ROOT),
  )
  resumed, last, seen = 0, None, 0
  for line in proc.stdout:
    if match := RESUMED.search(line):
      resumed = int(match.group(1))
    if match := STEP_LINE.search(line):
      last, seen = int(match.group(1)), seen + 1
      if kill_after_steps is not None and seen == kill_after_steps:
        proc.send_signal(sig)
  return proc.wait(), resumed, last


def final_params(workdir):
  import jax

  from configs import fashion_mnist
  from sagan_jax import checkpointing, programs, sharding

  template = programs.programs(fashion_mnist.get_config("smoke"), sharding.create_mesh()).init.eval_shape()
  step, state = checkpointing.Checkpointer(workdir, 3).restore_latest(template)
  return step, [np.asarray(x) for x in jax.tree.leaves((state.g_params, state.d_params, state.ema_params))]


def test_killed_and_resumed_runs_end_bitwise_where_an_uninterrupted_run_ends(tmp_path, fake_fmnist_dir):
  kills = int(os.environ.get("SAGAN_JAX_SOAK_KILLS", "8"))
  rng = random.Random(0)
  reference, soaked = str(tmp_path / "reference"), str(tmp_path / "soaked")
  assert run_once(reference, fake_fmnist_dir)[0] == 0
  rows, final_resumed = [], None
  while len(rows) < kills:
    sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
    code, resumed, last = run_once(soaked, fake_fmnist_dir, rng.randint(1, 2 * CHECKPOINT_EVERY), sig)
    if code == 0:  # finished before the signal landed
      final_resumed = resumed
      break
    assert code in (128 + signal.SIGTERM, -signal.SIGKILL), (sig, code)
    rows.append((sig, resumed, last))
  if final_resumed is None:
    code, final_resumed, _ = run_once(soaked, fake_fmnist_dir)
    assert code == 0
  next_resumed = [r[1] for r in rows[1:]] + [final_resumed]
  for (sig, _, last), after in zip(rows, next_resumed, strict=True):
    lost = max(0, (last or 0) - after)
    # SIGTERM: the step in flight completes and is saved; SIGKILL: back to the last checkpoint.
    assert lost <= (0 if sig == signal.SIGTERM else CHECKPOINT_EVERY), (sig, last, after)
  reference_step, expected = final_params(reference)
  soaked_step, got = final_params(soaked)
  assert soaked_step == reference_step == STEPS
  for a, b in zip(expected, got, strict=True):
    np.testing.assert_array_equal(a, b)
