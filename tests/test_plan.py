"""The planner: targets, the fit verdict, the batch search, and (in .venv-plan, `make test-plan`)
the real train step compiled for a TPU topology and an H100 without either."""

import os
import subprocess
import sys

import pytest

from configs import sagan128
from sagan_jax import plan, targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_TESTS = bool(os.environ.get("SAGAN_JAX_PLAN_TESTS"))


def _has(module):
  import importlib.util

  return importlib.util.find_spec(module) is not None


# In .venv-plan (SAGAN_JAX_PLAN_TESTS=1) a missing compiler fails the tests; elsewhere they skip.
needs_compilers = pytest.mark.skipif(
  not PLAN_TESTS and not (_has("libtpu") and _has("jax_plugins.xla_cuda13")),
  reason="the TPU and CUDA compilers are in .venv-plan: make test-plan",
)


def run_plan(*args, env=None):
  return subprocess.run(
    [sys.executable, "-m", "sagan_jax.plan", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
    env=dict(os.environ, **(env or {})),
  )


def test_every_target_names_its_chips_and_peaks():
  for name, t in targets.TARGETS.items():
    assert t.name == name and t.platform in ("tpu", "cuda"), t
    assert t.chips in (1, 4, 8) and t.memory_bytes > 8 * 2**30, t
    assert t.peak_bf16_tflops >= t.peak_f32_tflops > 0 and t.memory_tbps > 0, t
    if t.platform == "cuda":
      spec = targets.gpu_target_config(t)
      assert f"device_memory_size: {t.memory_bytes}" in spec and 'platform_name: "CUDA"' in spec
      assert t.topology == f"1x1x{t.chips}"
  # A v5e chip holds 16 GiB and reads it at 819 GB/s (the figure: 15.75 GiB usable).
  v5e = targets.TARGETS["v5e-8"]
  assert (v5e.chips, v5e.memory_bytes, v5e.memory_tbps) == (8, 16 * 2**30, 0.819)
  # JAX preallocates 75% of a GPU by default: what a program may use.
  h100 = targets.TARGETS["h100"]
  assert h100.usable_bytes(0.75) == int(0.75 * h100.memory_bytes) < v5e.usable_bytes(0.75) * 5


def test_largest_batch_search_bisects_to_within_an_eighth():
  calls = []

  def fits(limit):
    def check(b):
      calls.append(b)
      return b <= limit

    return check

  for limit, start in ((1000, 256), (300, 256), (40, 256), (8, 8), (5000, 64)):
    calls.clear()
    found = plan.largest(fits(limit), start, multiple=8, ceiling=10**6)
    assert found is not None and found % 8 == 0 and found <= limit < found + max(8, found // 8) + 8, (
      limit,
      found,
    )
    assert len(calls) <= 12, calls  # each call is a compile
  assert plan.largest(fits(4), 256, multiple=8, ceiling=10**6) is None
  assert plan.largest(fits(10**9), 256, multiple=8, ceiling=2048) == 2048


def test_variants_name_the_knobs_for_the_target():
  config = sagan128.get_config()
  on_tpu = dict(plan.variants(config, targets.TARGETS["v5e-8"]))
  assert on_tpu["bfloat16"] == {"dtype": "bfloat16"}
  assert on_tpu["chunked attention"] == {"model.attention_impl": "chunked"}
  assert on_tpu["batch 128"] == {"batch_size": 128}
  assert not any("flash" in k for k in on_tpu)
  on_gpu = dict(plan.variants(config, targets.TARGETS["h100"]))
  assert on_gpu["bfloat16 + cuDNN flash attention"]["model.attention_impl"] == "dot_product_attention"
  changed = plan.with_overrides(config, on_gpu["bfloat16 + cuDNN flash attention"])
  assert (changed.dtype, changed.model.attention_impl, config.dtype) == (
    "bfloat16",
    "dot_product_attention",
    "float32",
  )


@pytest.mark.skipif(not PLAN_TESTS, reason="a minute of compiling: runs in make test-plan (CI)")
def test_plan_compiles_for_this_cpu_and_a_5_to_1_step_needs_the_memory_of_a_1_to_1_step():
  """The smoke config planned for this host's CPU: every figure there; D:G 5:1 needs the
  memory of 1:1 (its earlier D updates are one program called four times) and ~5/2 the FLOPs."""
  import jax

  from configs import fashion_mnist

  config = fashion_mnist.get_config("smoke")
  devices = jax.devices("cpu")
  target = targets.cpu_target(len(devices))
  one = plan.plan(config, target, devices)
  assert one["fits"] and one["memory"]["total"] > one["memory"]["temporaries"] > 0, one
  assert one["memory"]["aliased"] > 0  # the state is donated
  assert one["flops_per_chip"] > 0 and one["bytes_per_chip"] > 0 and one["sampler_bytes"] > 0
  assert "images_per_s" not in one  # no peak figures for a CPU
  five = plan.plan(plan.with_overrides(config, {"d_steps_per_g_step": 5}), target, devices)
  assert five["memory"]["total"] <= 1.1 * one["memory"]["total"], (five["memory"], one["memory"])
  # an iteration is 5 D updates (D forward+backward on real and fake, G forward) and one G update
  assert 1.5 * one["flops_per_chip"] < five["flops_per_chip"] < 5 * one["flops_per_chip"]


def test_an_unknown_target_or_a_missing_compiler_is_one_line():
  bad = run_plan("--config=configs/fashion_mnist.py:smoke", "--target=v9-8")
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --target='v9-8'")
  if _has("libtpu"):
    return
  missing = run_plan("--config=configs/fashion_mnist.py:smoke", "--target=v5e-8")
  last = missing.stderr.strip().splitlines()[-1]
  assert missing.returncode == 2 and "make plan-venv" in last and "Traceback" not in missing.stderr, last


def _reduced_sagan128(chips):
  """sagan128's smoke variant (every layer of the real model at width unit 2, attention at
  feat32) at a batch the chips split."""
  config = sagan128.get_config("smoke")
  config.batch_size = 2 * chips
  config.eval.batch_size = 2 * chips
  return config


@needs_compilers
def test_reduced_sagan128_compiles_for_a_tpu_slice_and_is_the_program_a_tpu_would_run():
  import jax

  target = targets.TARGETS["v5e-8"]
  devices = targets.devices(target)
  assert len(devices) == 8 and "v5" in devices[0].device_kind.lower(), devices[0].device_kind
  config = _reduced_sagan128(8)
  row = plan.plan(config, target, devices)
  assert row["fits"] and row["memory"]["total"] > 0 and row["flops_per_chip"] > 0, row
  assert row["kernels"] == {
    "conv_kernel_grad": "xla",
    "resampling_conv": "composed",
    "attention_backward": "hand_written",
    "attention_query_sums": "dot",
    "parameter_update": "per_array",
  }
  assert 0 < row["memory_bound_s"] and 0 < row["compute_bound_s"] and row["images_per_s"] > 0

  # The program traced on this CPU host for the TPU is the one the config names for a TPU:
  # 'auto' resolved from the topology's devices equals platform='tpu' spelled out, and the CPU's
  # formulations would give another program.
  from sagan_jax import programs, sharding

  mesh = sharding.create_mesh(devices)

  def hlo(kernels_platform):
    c = config.copy_and_resolve_references()
    c.model.kernels.platform = kernels_platform
    built = programs.compiled_programs(c, mesh)
    state, batch, key = plan._abstract_inputs(c, built, mesh)
    return built.train_step.lower(state, batch, key).parts[-1][0].as_text()

  auto = hlo("auto")
  assert auto == hlo("tpu")
  assert auto != hlo("cpu")
  assert jax.default_backend() == "cpu"  # nothing here ran on (or looked for) a TPU


@needs_compilers
def test_reduced_sagan128_compiles_for_an_h100_and_the_verdict_compares_with_the_card():
  target = targets.TARGETS["h100"]
  devices = targets.devices(target)
  assert "H100" in devices[0].device_kind, devices[0].device_kind
  config = _reduced_sagan128(1)
  row = plan.plan(config, target, devices)
  assert row["fits"] and row["memory"]["total"] > 0 and row["flops_per_chip"] > 0, row
  # The GPU compiler builds a program larger than the card without complaint: the planner
  # compares its total with what a JAX process gets of the card.
  assert plan.fits(row["memory"], target, 0.75)
  assert not plan.fits(row["memory"], target, row["memory"]["total"] / 2 / target.memory_bytes)
  assert "does NOT fit" in plan.format_row(dict(row, fits=False, usable_bytes=row["memory"]["total"] // 2))
