"""experiments/ema_schedule.py: several EMAs of one run, each scored; equal schedules score equally."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(
  not os.environ.get("SAGAN_JAX_SLOW_TESTS"),
  reason="a study's script (~1 min of training and scoring): set SAGAN_JAX_SLOW_TESTS=1",
)
def test_schedules_of_one_run_are_scored_side_by_side(tmp_path, fake_fmnist_dir):
  out = tmp_path / "ema.json"
  cmd = [
    sys.executable,
    os.path.join(ROOT, "experiments", "ema_schedule.py"),
    "--base_config=configs/fashion_mnist.py:smoke",
    f"--set=dataset.data_dir={fake_fmnist_dir}",
    f"--set=eval.cache_dir={tmp_path / 'cache'}",
    "--set=eval.metrics=('fid_fmnist', 'class_accuracy')",
    "--set=eval.batch_size=10",
    "--set=eval.fmnist_classifier_epochs=1",
    "--set=eval.fmnist_classifier_num_train=200",
    "--ema",
    "raw",
    "const:0.0@0",
    "power:2",
    "const:0.9@0",
    "--eval_steps",
    "2",
    "4",
    "--eval_samples=20",
    f"--json_out={out}",
  ]
  proc = subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT)
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(out.read_text())
  assert sorted(results["by_step"]) == ["2", "4"]
  scores = results["by_step"]["4"]
  assert set(scores) == {"raw", "const:0.0@0", "power:2", "const:0.9@0"}
  # decay 0 is G itself; an EMA that kept old weights scores other samples
  assert scores["raw"]["fid_fmnist"] == scores["const:0.0@0"]["fid_fmnist"]
  assert scores["const:0.9@0"]["fid_fmnist"] != scores["raw"]["fid_fmnist"]
