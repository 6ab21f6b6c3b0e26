"""Two configs, one timer: the train step of each, compiled once, timed in interleaved rounds.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/step_ab.py \
      --config=configs/fashion_mnist.py [--config.model.ch=4] \
      --compare=resampling_conv | --a=FIELD=VALUE … --b=FIELD=VALUE … [--rounds=5] [--steps=8]

Side A is the config with the --a overrides, side B with the --b overrides; --compare names a
formulation choice of config.model.kernels and times its choices against each other (A: the
first, B: the second). Each side's programs come from ``programs.programs`` like a training's
(another kernels choice is another program: nothing is patched). Printed: XLA's temporaries of
each step, then per round each side's seconds per step over --steps steps, the sides' order
alternating, and the median of the per-round ratios B / A (> 1: A is faster).
"""

import ast
import os
import statistics
import time

from absl import app, flags
from ml_collections import config_flags

COMPARISONS = {  # model.kernels field -> the two choices timed (A, B)
  "resampling_conv": ("low_resolution", "composed"),
  "conv_kernel_grad": ("taps_1x1", "xla"),
  "attention_backward": ("hand_written", "autodiff"),
  "attention_query_sums": ("per_channel", "dot"),
  "parameter_update": ("flat", "per_array"),
}
config_flags.DEFINE_config_file(
  "config", "configs/fashion_mnist.py", "the config both sides start from", lock_config=False
)
flags.DEFINE_enum("compare", None, list(COMPARISONS), "a model.kernels field: its two choices as A and B")
flags.DEFINE_multi_string("a", [], "FIELD=VALUE override of side A (repeatable)")
flags.DEFINE_multi_string("b", [], "FIELD=VALUE override of side B (repeatable)")
flags.DEFINE_integer("rounds", 5, "interleaved rounds")
flags.DEFINE_integer("steps", 8, "steps per side per round (after 2 untimed ones)")
FLAGS = flags.FLAGS


def with_overrides(config, overrides):
  """A copy of ``config`` with FIELD=VALUE overrides (values as Python literals, else strings)."""
  config = config.copy_and_resolve_references()
  for item in overrides:
    name, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def main(argv):
  del argv
  import jax
  import numpy as np

  from sagan_jax import programs, sharding

  a, b = FLAGS.a, FLAGS.b
  if FLAGS.compare:
    first, second = COMPARISONS[FLAGS.compare]
    a, b = [*a, f"model.kernels.{FLAGS.compare}={first}"], [*b, f"model.kernels.{FLAGS.compare}={second}"]
  if not (a or b):
    raise app.UsageError("give --compare or --a/--b overrides")
  mesh = sharding.create_mesh()
  sides = {}
  for name, overrides in (("A", a), ("B", b)):
    config = with_overrides(FLAGS.config, overrides)
    m = config.model
    rng = np.random.default_rng(0)
    shape = (config.d_steps_per_g_step, config.batch_size, m.resolution, m.resolution, m.image_channels)
    batch = sharding.global_batch(
      {
        "image": rng.uniform(-1, 1, shape).astype(np.float32),
        "label": rng.integers(0, m.num_classes, shape[:2]).astype(np.int32),
      },
      mesh,
    )
    built = programs.programs(config, mesh)
    state = built.init()
    compiled = built.train_step.lower(state, batch).compile()
    temporaries = compiled.memory_analysis().temp_size_in_bytes / 2**20
    print(
      f"{name}: {' '.join(overrides)}; kernels {built.kernels.choices()}; step temporaries "
      f"{temporaries:.1f} MiB",
      flush=True,
    )
    sides[name] = {"step": compiled, "state": state, "batch": batch, "key": built.train_step.key_data}

  def block(side):
    s = sides[side]
    state = s["state"]
    for _ in range(2):  # warm-up
      state, metrics = s["step"](state, s["batch"], s["key"])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = s["step"](state, s["batch"], s["key"])
    jax.block_until_ready((state, metrics))
    s["state"] = state
    return (time.perf_counter() - t0) / FLAGS.steps

  ratios = []
  for r in range(FLAGS.rounds):
    t = {side: block(side) for side in (("A", "B") if r % 2 == 0 else ("B", "A"))}
    ratios.append(t["B"] / t["A"])
    print(f"  round {r + 1}: A {t['A']:.4f}, B {t['B']:.4f} s/step, B / A {ratios[-1]:.3f}", flush=True)
  print(
    f"B / A, median of per-round ratios {statistics.median(ratios):.3f} (range "
    f"{min(ratios):.3f}–{max(ratios):.3f}; load average {os.getloadavg()[0]:.2f})"
  )


if __name__ == "__main__":
  app.run(main)
