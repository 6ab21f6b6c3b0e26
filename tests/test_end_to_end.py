"""A tiny run writes checkpoints, events and samples, resumes, and refuses bad configs."""

import glob
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_run_writes_outputs_and_resumes(smoke_config, tmp_path):
  from sagan_jax import train

  workdir = str(tmp_path / "run")
  state = train.train_and_evaluate(smoke_config, workdir)
  assert int(state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "4"
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  samples = glob.glob(os.path.join(workdir, "samples", "*.png"))
  assert [os.path.basename(p) for p in samples] == ["step_00000004.png"]
  from PIL import Image

  grid = np.asarray(Image.open(samples[0]))
  assert grid.shape == (10 * 33 + 1, 2 * 33 + 1)  # 10 class rows × 2 columns of 32×32 tiles
  assert grid.std() > 0

  # Figures of the run from its workdir alone: attention maps (G: samples, D: real images),
  # class sheets, and the report page.
  from sagan_jax import report, visualize

  paths = visualize.write_run_figures(workdir, sheets=True, sheet_size=2, queries=3, num_images=2)
  by_name = {os.path.basename(p): p for p in paths}
  assert set(by_name) == {
    f"step_00000004_{n}.png"
    for n in [f"class_{c}" for c in range(10)] + ["classes", "generator", "discriminator"]
  }
  for name, size in (
    ("step_00000004_generator.png", (4 * 129 + 1, 2 * 129 + 1)),
    ("step_00000004_discriminator.png", (4 * 129 + 1, 2 * 129 + 1)),
    ("step_00000004_class_7.png", (2 * 33 + 1, 2 * 33 + 1)),
    ("step_00000004_classes.png", (2 * 33 + 1, 10 * 33 + 1)),
  ):
    with Image.open(by_name[name]) as png:
      assert png.size == size, (name, png.size)
  import tensorflow as tf

  image_tags = {
    v.tag
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    for event in tf.compat.v1.train.summary_iterator(path)
    for v in event.summary.value
  }
  assert {"samples", "attention/generator"} <= image_tags
  page = open(report.write_report(workdir, figures=False)).read()
  data = json.loads(page.split('id="report-data">', 1)[1].split("</script>", 1)[0])  # page.js draws it
  assert len(data["figures"]) >= 5 and "d_loss" in page and "attention_resolutions" in data["config"]

  # Same workdir, longer budget: resumes at step 4 (does not start over) and goes on to 6,
  # with the programs the first run traced (programs.programs): G and D are not traced again.
  smoke_config.num_train_steps = 6
  traced = []
  listener = lambda event, duration, **kw: (
    traced.append(kw.get("fun_name")) if event.endswith("jaxpr_trace_duration") else None
  )
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    resumed = train.train_and_evaluate(smoke_config, workdir)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not {"train_step", "init_state", "generate", "standing_stats"} & set(traced), traced
  assert int(resumed.step) == 6
  assert not np.allclose(
    np.asarray(resumed.g_params["linear"]["kernel"]), np.asarray(state.g_params["linear"]["kernel"])
  )
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_00000004.png", "step_00000006.png"]


def run_main(args, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
    [sys.executable, "-m", "sagan_jax.main", f"--workdir={tmp_path}/w", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.model.attention_resolutions=(64,)", "attention side(s) [64] do not exist"),
    ("--config.dataset.name=imagenet1999", "unknown dataset 'imagenet1999'"),
    ("--config.num_train_steps=0", "num_train_steps must be a whole number of 1 or more"),
  ],
)
def test_bad_config_is_one_clear_error(override, message, tmp_path, fake_fmnist_dir):
  proc = run_main(
    ["--config=configs/fashion_mnist.py:smoke", f"--config.dataset.data_dir={fake_fmnist_dir}", override],
    tmp_path,
  )
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr
  assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
    line for line in proc.stderr.splitlines() if message in line
  ]


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"attention_impl": "flash"}, "model.attention_impl must be one of"),
    (
      {"attention_impl": "chunked", "attention_query_chunk": 0},
      "attention_query_chunk must be a whole number of 1 or more",
    ),
    (
      {"attention_impl": "dot_product_attention", "value_channel_ratio": 2},
      "needs equal key and value widths, but key_channel_ratio is 8 and value_channel_ratio 2",
    ),
  ],
)
def test_bad_attention_settings_are_refused_before_tracing(smoke_config, overrides, message):
  from sagan_jax import config as config_lib
  from sagan_jax.errors import UserError

  smoke_config.model.update(overrides)
  with pytest.raises(UserError, match=re.escape(message)):
    config_lib.validate_config(smoke_config)


def test_batch_not_divisible_by_devices(tmp_path, fake_fmnist_dir):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=3")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sagan_jax.main",
      f"--workdir={tmp_path}/w",
      "--config=configs/fashion_mnist.py:smoke",
      f"--config.dataset.data_dir={fake_fmnist_dir}",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert "multiple of the device count 3" in proc.stderr
