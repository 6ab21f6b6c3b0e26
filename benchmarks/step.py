"""Train-step benchmark: compile time, images/s, FLOPs and parameter counts of a config.

  python benchmarks/step.py --config=configs/fashion_mnist.py [--steps=20] [--devices=N]
      [--config.batch_size=…] [--json_out=benchmarks/results/x.json]

An "image" is one real example through one train iteration (d_steps_per_g_step D
updates + one G update). FLOPs are model FLOPs: XLA's cost analysis of the step lowered
with the explicit attention form (see model_flops); TFLOP/s = those / step time.
--devices N simulates N CPU devices (must be given before JAX starts).
"""

import json
import math
import os
import time

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_integer("steps", 20, "timed steps after the warm-up step")
flags.DEFINE_integer("devices", 0, "simulate this many CPU devices (0: use the real ones)")
flags.DEFINE_string("json_out", "", "also write the figures to this JSON file")
flags.DEFINE_bool(
  "lower_only",
  False,
  "only trace and lower the step: its FLOPs and parameter "
  "counts, no compile or run (plans a GPU run from a CPU)",
)
config_flags.DEFINE_config_file(
  "config", "configs/fashion_mnist.py", "config to benchmark", lock_config=False
)
FLAGS = flags.FLAGS


# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity), by device_kind substring.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


def bf16_peak_tflops(device_kind: str):
  return next((peak for name, peak in BF16_PEAK_TFLOPS if name in device_kind), None)


def count(tree):
  import jax

  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def main(_):
  if FLAGS.devices:
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={FLAGS.devices}"
    )
  import jax
  import numpy as np

  from sagan_jax import config as config_lib
  from sagan_jax import programs, sharding

  config = FLAGS.config
  mesh = sharding.create_mesh()
  config_lib.validate_config(config, mesh.size)
  m = config.model
  shape = (config.d_steps_per_g_step, config.batch_size, m.resolution, m.resolution, m.image_channels)
  t0 = time.perf_counter()
  flops, abstract_state = model_flops(config, mesh, shape)
  common = {
    "resolution": m.resolution,
    "ch": m.ch,
    "batch_size": config.batch_size,
    "d_steps_per_g_step": config.d_steps_per_g_step,
    "dtype": config.dtype,
    "attention_impl": m.attention_impl,
    "kernels": programs.resolve_kernels(config, mesh).choices(),
    "g_attention": list(config_lib.attention_sides(m, "g")),
    "d_attention": list(config_lib.attention_sides(m, "d")),
    "g_params": count(abstract_state.g_params),
    "d_params": count(abstract_state.d_params),
    "gflop_per_step": flops / 1e9,
    "gflop_per_image": flops / 1e9 / config.batch_size,
  }
  if FLAGS.lower_only:
    result = {
      "lowered_on": jax.devices()[0].device_kind,
      **common,
      "lower_s": round(time.perf_counter() - t0, 2),
    }
    for name, peak in BF16_PEAK_TFLOPS:
      # images/s that 40% of this GPU's dense bf16 peak would give at this FLOP count
      result[f"images_per_s_at_40pct_{name.replace(' ', '_')}"] = (
        0.4 * peak * 1e12 / flops * config.batch_size
      )
    return report(result)

  built = programs.programs(config, mesh)
  state = built.init()
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    {
      "image": rng.uniform(-1, 1, shape).astype(np.float32),
      "label": rng.integers(0, m.num_classes, shape[:2]).astype(np.int32),
    },
    mesh,
  )
  t0 = time.perf_counter()
  compiled = built.train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  # Which attention kernel XLA got: cuDNN's fused flash attention is a custom call.
  attention_kernel = "cudnn_flash" if "__cudnn$fmha" in compiled.as_text() else "xla"

  state, metrics = compiled(state, batch, built.train_step.key_data)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = compiled(state, batch, built.train_step.key_data)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - t0) / FLAGS.steps

  memory = None
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    memory = stats["peak_bytes_in_use"] / 2**30
  result = {
    "device": f"{jax.devices()[0].device_kind} x{mesh.size}",
    **common,
    "attention_kernel": attention_kernel,
    "compile_s": round(compile_s, 2),
    "step_s": seconds,
    "images_per_s": config.batch_size / seconds,
    "tflops_per_s": flops / seconds / 1e12,
    "peak_memory_gib": memory,
  }
  peak = bf16_peak_tflops(jax.devices()[0].device_kind)
  if peak:
    result["bf16_peak_fraction"] = result["tflops_per_s"] / peak
  report(result)


def model_flops(config, mesh, shape):
  """(FLOPs of one train iteration, the abstract TrainState): XLA's cost analysis of the
  step lowered with the explicit attention form and the resampling convs composed as the
  model writes them, without compiling or running it.

  The composition because the low-resolution forms (CPU) compute the same model with fewer
  FLOPs: the model's FLOPs are the same on every backend. The explicit form because XLA cannot
  count inside cuDNN's attention (a custom call) and counts a loop body once ('chunked' maps
  over chunks): every impl is credited with the same model FLOPs, and recomputation in the
  backward pass is not counted (the usual MFU convention).
  """
  import jax
  import numpy as np

  from sagan_jax import programs, sharding

  as_written = config.copy_and_resolve_references()
  as_written.model.attention_impl = "xla"
  as_written.model.kernels.resampling_conv = "composed"
  built = programs.programs(as_written, mesh)
  state = built.init.eval_shape()
  put = lambda s, dtype: jax.ShapeDtypeStruct(s, dtype, sharding=sharding.batch_sharding(mesh, batch_axis=1))
  batch = {"image": put(shape, np.float32), "label": put(shape[:2], np.int32)}
  cost = built.train_step.lower(state, batch).cost_analysis() or {}
  return float(cost.get("flops", float("nan"))), state


def report(result):
  for k, v in result.items():
    print(f"{k:>20}: {v:,.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
  if FLAGS.json_out:
    os.makedirs(os.path.dirname(FLAGS.json_out) or ".", exist_ok=True)
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
