"""Train-step benchmark: compile time, images/s, FLOPs and parameter counts of a config.

  python experiments/benchmark.py --config=configs/fashion_mnist.py [--steps=20] [--devices=N]
      [--config.batch_size=…] [--json_out=experiments/results/x.json]

An "image" is one real example through one train iteration (d_steps_per_g_step D
updates + one G update). FLOPs come from XLA's cost analysis of the compiled step.
--devices N simulates N CPU devices (must be given before JAX starts).
"""
import json
import math
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/, sagan_jax/

flags.DEFINE_integer("steps", 20, "timed steps after the warm-up step")
flags.DEFINE_integer("devices", 0, "simulate this many CPU devices (0: use the real ones)")
flags.DEFINE_string("json_out", "", "also write the figures to this JSON file")
flags.DEFINE_bool("lower_only", False, "only trace and lower the step: its FLOPs and parameter "
                  "counts, no compile or run (plans a GPU run from a CPU)")
config_flags.DEFINE_config_file("config", "configs/fashion_mnist.py", "config to benchmark",
                                lock_config=False)
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
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={FLAGS.devices}")
  import jax
  import numpy as np
  from sagan_jax import sharding, train

  config = FLAGS.config
  train.validate_config(config)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train.build_optimizers(config)
  init = jax.jit(lambda: train.init_state(config, generator, discriminator, g_tx, d_tx),
                 out_shardings=sharding.replicated(mesh))
  m = config.model
  shape = (config.d_steps_per_g_step, config.batch_size, m.resolution, m.resolution, m.image_channels)
  step = train.make_train_step(config, generator, discriminator, g_tx, d_tx, mesh)
  if FLAGS.lower_only:
    return lower_only(config, mesh, init, step, shape)
  state = init()
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({
      "image": rng.uniform(-1, 1, shape).astype(np.float32),
      "label": rng.integers(0, m.num_classes, shape[:2]).astype(np.int32)}, mesh)

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  # Which attention kernel XLA got: cuDNN's fused flash attention is a custom call.
  hlo = compiled.as_text()
  attention_kernel = "cudnn_flash" if "__cudnn$fmha" in hlo else "xla"
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - t0) / FLAGS.steps

  memory = None
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    memory = stats["peak_bytes_in_use"] / 2**30
  result = {
      "device": f"{jax.devices()[0].device_kind} x{mesh.size}",
      "resolution": m.resolution, "ch": m.ch, "batch_size": config.batch_size,
      "d_steps_per_g_step": config.d_steps_per_g_step, "dtype": config.dtype,
      "attention_impl": m.attention_impl, "attention_kernel": attention_kernel,
      "conv_kernel_grad": ("xla" if jax.default_backend() != "cpu" or os.environ.get("SAGAN_JAX_NATIVE_CONV") == "1"
                           else "im2col"),
      "g_attention": list(train_sides(m, "g")), "d_attention": list(train_sides(m, "d")),
      "g_params": count(state.g_params), "d_params": count(state.d_params),
      "compile_s": round(compile_s, 2), "step_s": seconds,
      "images_per_s": config.batch_size / seconds,
      "gflop_per_step": flops / 1e9, "tflops_per_s": flops / seconds / 1e12,
      "peak_memory_gib": memory,
  }
  peak = bf16_peak_tflops(jax.devices()[0].device_kind)
  if peak:
    result["bf16_peak_fraction"] = result["tflops_per_s"] / peak
  report(result)


def lower_only(config, mesh, init, step, shape):
  """FLOPs of the step from its unoptimised HLO (no compile, no run, no device memory):
  plans a GPU run from a laptop, e.g. which images/s a fraction of a GPU's peak means."""
  import jax
  import numpy as np
  from sagan_jax import sharding
  t0 = time.perf_counter()
  state = jax.eval_shape(init)
  put = lambda s, dtype: jax.ShapeDtypeStruct(s, dtype, sharding=sharding.batch_sharding(mesh, batch_axis=1))
  batch = {"image": put(shape, np.float32), "label": put(shape[:2], np.int32)}
  lowered = step.lower(state, batch)
  cost = lowered.cost_analysis() or {}
  flops = float(cost.get("flops", float("nan")))
  m = config.model
  result = {
      "lowered_on": jax.devices()[0].device_kind, "resolution": m.resolution, "ch": m.ch,
      "batch_size": config.batch_size, "d_steps_per_g_step": config.d_steps_per_g_step,
      "dtype": config.dtype, "attention_impl": m.attention_impl,
      "g_attention": list(train_sides(m, "g")), "d_attention": list(train_sides(m, "d")),
      "g_params": count(state.g_params), "d_params": count(state.d_params),
      "lower_s": round(time.perf_counter() - t0, 2),
      "gflop_per_step": flops / 1e9, "gflop_per_image": flops / 1e9 / config.batch_size,
  }
  for name, peak in BF16_PEAK_TFLOPS:
    # images/s that 40% of this GPU's dense bf16 peak would give at this FLOP count
    result[f"images_per_s_at_40pct_{name.replace(' ', '_')}"] = 0.4 * peak * 1e12 / flops * config.batch_size
  report(result)


def train_sides(model_config, which):
  from sagan_jax import train
  return train._attention_sides(model_config, which)


def report(result):
  for k, v in result.items():
    print(f"{k:>20}: {v:,.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
  if FLAGS.json_out:
    os.makedirs(os.path.dirname(FLAGS.json_out) or ".", exist_ok=True)
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
