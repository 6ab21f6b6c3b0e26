"""The CPU host split into JAX devices for training (runtime.split_cpu_host, config.cpu_devices)."""

import os
import subprocess
import sys

import pytest

from sagan_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
  "cores, batches, expected",
  [
    (2, [32, 512], 2),
    (1, [32, 512], 1),
    (16, [32, 512], runtime.MAX_AUTO_CPU_DEVICES),
    (4, [6, 512], 2),  # 3 and 4 do not divide 6
    (3, [32, 512], 2),  # 3 does not divide 32
    (2, [31, 512], 1),
  ],
)
def test_the_count_divides_every_batch_and_fits_the_cores(cores, batches, expected):
  environ = {}
  assert runtime.split_cpu_host(batches, 0, environ, cores=cores) == expected
  flag = f"{runtime.CPU_DEVICE_FLAG}={expected}"
  assert environ.get("XLA_FLAGS") == (flag if expected > 1 else None)


def test_a_count_already_set_and_multi_process_launches_are_left_alone():
  environ = {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true --xla_force_host_platform_device_count=3"}
  assert runtime.split_cpu_host([32], 0, environ, cores=2) == 0
  assert environ["XLA_FLAGS"].endswith("count=3")
  environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}
  assert runtime.split_cpu_host([32], 0, environ, cores=2) == 0 and "XLA_FLAGS" not in environ
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}  # other flags are kept
  assert runtime.split_cpu_host([32], 0, environ, cores=2) == 2
  assert environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {runtime.CPU_DEVICE_FLAG}=2"


def test_a_count_the_config_names_is_taken_as_it_is():
  environ = {}
  assert runtime.split_cpu_host([32], 3, environ, cores=2) == 3
  assert environ["XLA_FLAGS"] == f"{runtime.CPU_DEVICE_FLAG}=3"


def test_training_from_the_command_line_runs_on_the_split_host(tmp_path, fake_fmnist_dir):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = ROOT
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
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = runtime.split_cpu_host([8, 512], 0, {}, cores=len(os.sched_getaffinity(0))) or 1
  assert f"JAX on cpu: {expected} device(s)" in proc.stderr
