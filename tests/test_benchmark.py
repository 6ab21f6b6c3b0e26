"""benchmarks/step.py --lower_only: the FLOP count a GPU run is planned with."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lowered(tmp_path, batch_size, impl="xla"):
  out = tmp_path / f"b{batch_size}_{impl}.json"
  proc = subprocess.run(
    [
      sys.executable,
      "benchmarks/step.py",
      "--lower_only",
      "--config=configs/fashion_mnist.py:smoke",
      f"--config.batch_size={batch_size}",
      f"--config.model.attention_impl={impl}",
      "--config.model.attention_query_chunk=32",
      f"--json_out={out}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text())


def test_lowered_flops_are_per_image_and_count_the_whole_model(tmp_path):
  import jax

  from configs import fashion_mnist
  from sagan_jax import programs, sharding

  small, large = lowered(tmp_path, 8), lowered(tmp_path, 16)
  # Convolutions dominate and scale with the batch; spectral norm and Adam do not.
  assert large["gflop_per_step"] == pytest.approx(2 * small["gflop_per_step"], rel=0.05)
  assert large["gflop_per_image"] == pytest.approx(small["gflop_per_image"], rel=0.05)
  state = programs.programs(fashion_mnist.get_config("smoke"), sharding.create_mesh()).init.eval_shape()
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  assert (small["g_params"], small["d_params"]) == (count(state.g_params), count(state.d_params))
  # Model FLOPs: XLA would count the chunked loop's body once; every impl gets the explicit count.
  assert lowered(tmp_path, 8, "chunked")["gflop_per_step"] == small["gflop_per_step"]
  # 40% of an H100's 989 TFLOP/s bf16, in images/s at this FLOP count.
  assert small["images_per_s_at_40pct_H100"] == pytest.approx(0.4 * 989e3 / small["gflop_per_image"])
