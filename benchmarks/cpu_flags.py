"""The JAX train step on CPU under XLA flag settings, each in its own process, interleaved.

  python benchmarks/cpu_flags.py [--ch 8] [--batch 32] [--rounds 4] [--steps 10]
      [--setting NAME=FLAGS ...] [--json_out=benchmarks/results/x.json]

XLA flags are read once, when JAX starts, so every setting is a separate process. Each
round starts one process per setting (the order alternating from round to round); each
process builds configs/fashion_mnist.py at ``--ch`` and ``--batch`` (one D update per G
update), compiles the step, warms up, times one block of ``--steps`` steps and prints its
seconds per step. Printed: per setting the median over rounds, and per setting the median
of its per-round ratio to the first setting (> 1: faster than it) — the figure to quote,
since each round's processes ran within a minute of each other.

The default settings: XLA's defaults; the host platform split into 2 devices
(``--xla_force_host_platform_device_count=2``: the batch is split over them as on any
mesh, so each device's share of every convolution runs on its own thread; BN statistics
stay those of the whole batch); XNNPACK kernels (``--xla_cpu_use_xnnpack``); both.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_SETTINGS = [
  "default=",
  "devices2=--xla_force_host_platform_device_count=2",
  "xnnpack=--xla_cpu_use_xnnpack=true",
  "devices2_xnnpack=--xla_force_host_platform_device_count=2 --xla_cpu_use_xnnpack=true",
]

WORKER = r"""
import sys, time, jax, numpy as np
from sagan_jax import programs, sharding
sys.path.insert(0, {here!r} + "/pytorch")
import torch_sagan
ch, batch, steps = {ch}, {batch}, {steps}
config = torch_sagan.make_config(ch, batch)
config.d_steps_per_g_step = 1
m = config.model
mesh = sharding.create_mesh()
rng = np.random.default_rng(0)
shape = (1, batch, m.resolution, m.resolution, m.image_channels)
data = {{"image": rng.uniform(-1, 1, shape).astype(np.float32),
         "label": rng.integers(0, m.num_classes, shape[:2]).astype(np.int32)}}
built = programs.programs(config, mesh)
state = built.init()
batch_arrays = sharding.global_batch(data, mesh)
step = built.train_step.lower(state, batch_arrays).compile()
for _ in range(3):
  state, metrics = step(state, batch_arrays, built.train_step.key_data)
jax.block_until_ready((state, metrics))
t0 = time.perf_counter()
for _ in range(steps):
  state, metrics = step(state, batch_arrays, built.train_step.key_data)
jax.block_until_ready((state, metrics))
print("SECONDS_PER_STEP", (time.perf_counter() - t0) / steps, len(jax.devices()))
"""


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ch", type=int, default=8)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--rounds", type=int, default=4)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--setting", action="append", default=[], help="NAME=XLA_FLAGS (repeatable)")
  p.add_argument("--json_out", default="")
  return p.parse_args(argv)


def run_setting(flags, args):
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, XLA_FLAGS=flags)
  env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
  code = WORKER.format(here=here, ch=args.ch, batch=args.batch, steps=args.steps)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
  for line in out.stdout.splitlines():
    if line.startswith("SECONDS_PER_STEP"):
      return float(line.split()[1])
  raise RuntimeError(f"setting {flags!r} failed:\n{out.stderr[-2000:]}")


def main(argv=None):
  args = parse_args(argv)
  settings = dict(s.split("=", 1) for s in (args.setting or DEFAULT_SETTINGS))
  names = list(settings)
  times = {n: [] for n in names}
  load_before = os.getloadavg()
  print(f"ch={args.ch} batch={args.batch}; load average {load_before[0]:.2f}", flush=True)
  for r in range(args.rounds):
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
      times[n].append(run_setting(settings[n], args))
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.4f}" for n in names), flush=True)
  base = names[0]
  summary = {}
  for n in names:
    ratios = [times[base][r] / times[n][r] for r in range(args.rounds)]
    summary[n] = {
      "flags": settings[n],
      "s_per_step_median": statistics.median(times[n]),
      "s_per_step_rounds": times[n],
      "speedup_vs_first_per_round_median": statistics.median(ratios),
    }
    print(
      f"  {n:>18}: {summary[n]['s_per_step_median']:.4f} s/step median; "
      f"{summary[n]['speedup_vs_first_per_round_median']:.3f}x {base}  [{settings[n]}]"
    )
  load_after = os.getloadavg()
  print(f"load average after: {load_after[0]:.2f} (2-core machine: above ~2 other work shared the cores)")
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(
        {
          "args": vars(args),
          "loadavg_before": load_before,
          "loadavg_after": load_after,
          "time": time.strftime("%Y-%m-%d %H:%M"),
          "results": summary,
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
