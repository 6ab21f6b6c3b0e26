"""The paper's model at its real width on a CPU (slow tier: SAGAN_JAX_SLOW_TESTS=1): configs/sagan128.py
trains 2 steps on a tiny ImageNet in the archives' own format, resumes bitwise, samples its grid
and writes its report. Minutes of compiling and ~8 GiB of memory on 2 cores."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
  not os.environ.get("SAGAN_JAX_SLOW_TESTS"), reason="minutes on 2 cores; set SAGAN_JAX_SLOW_TESTS=1"
)


def tool(module, *args):
  proc = subprocess.run(
    [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=3600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def train(workdir, data_dir, manual_dir, steps):
  return tool(
    "sagan_jax.main",
    "--config=configs/sagan128.py",
    f"--workdir={workdir}",
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.manual_dir={manual_dir}",
    "--config.batch_size=2",
    f"--config.num_train_steps={steps}",
    "--config.checkpoint_every_steps=1",
    "--config.sample_every_steps=2",
    "--config.log_every_steps=1",
    "--config.num_sample_columns=1",
    "--config.standing_stats_batches=1",
    "--config.evals.periodic.every_steps=0",
    "--config.cpu_devices=1",
  )


def checkpoint_leaves(workdir, step):
  import jax
  import orbax.checkpoint as ocp

  tree = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "default"))
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_sagan128_at_full_width_trains_resumes_bitwise_samples_and_reports(tmp_path):
  from test_input_pipeline import write_imagenet_archives

  manual_dir = write_imagenet_archives(str(tmp_path / "manual"))
  data_dir = str(tmp_path / "tfds")
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train(straight, data_dir, manual_dir, steps=2)
  train(resumed, data_dir, manual_dir, steps=1)
  log = train(resumed, data_dir, manual_dir, steps=2).stderr
  assert "resumed from" in log and "at step 1" in log, log[-2000:]

  config = json.loads((straight / "config.json").read_text())
  assert (config["model"]["ch"], config["model"]["resolution"], config["model"]["num_classes"]) == (
    64,
    128,
    1000,
  )
  a, b = checkpoint_leaves(straight, 2), checkpoint_leaves(resumed, 2)
  assert len(a) == len(b) > 300
  assert sum(x.size for x in a) > 80_000_000  # G, D, their Adam moments and the EMA: ~42M + 39M parameters
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)

  assert any(name.endswith(".png") for name in os.listdir(straight / "samples"))
  tool("sagan_jax.report", f"--workdir={straight}")
  page = (straight / "report.html").read_text()
  assert "imagenet2012" in page and "attention" in page
