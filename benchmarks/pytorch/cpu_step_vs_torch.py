"""The JAX train step against the PyTorch baseline (benchmarks/pytorch/torch_sagan.py), side by side.

  python benchmarks/pytorch/cpu_step_vs_torch.py [--ch 4 16] [--batch 32] [--rounds 5] [--steps 10]
      [--threads 2] [--torch_layouts channels_last contiguous] [--json_out=benchmarks/results/x.json]

Per width: configs/fashion_mnist.py at that ``ch`` and batch, one D update per G update
(d_steps_per_g_step = 1, real and fake in one D pass on both sides), both models built in
this process. JAX: ``programs.programs(config, mesh).train_step`` compiled ahead, the state
from ``.init()``, the batch {'image': (1, B, 32, 32, 1) float32, 'label': (1, B) int32} put
on the mesh with sharding.global_batch (as benchmarks/step.py does). PyTorch: the
baseline's ``Trainer.step`` (eager, no torch.compile), once per layout in --torch_layouts.
Both warm up, then ``--rounds`` rounds each time a block of ``--steps`` steps per side, the
sides' order alternating from round to round.

Printed per width: each side's median seconds per step over the blocks; the ratio
torch / JAX (> 1: JAX is faster) against the faster PyTorch layout, both as the ratio of
the medians and as the median of the per-round ratios (each round's blocks ran seconds
apart, so that one is the figure to quote); and each side's model FLOP rate (XLA's cost
analysis of the step as the model writes it, with the resampling convs composed as PyTorch runs
them, / the side's median step time; the JAX step itself computes fewer FLOPs, printed beside
them) as a fraction of the rate of
an N×N float32 matmul through XLA on the same threads (--matmul N, timed once per round).

Threads: PyTorch runs torch.set_num_threads(--threads). XLA:CPU has no thread-count
setting; its pool spans the cores the process may run on, so with --threads below the
machine's core count the script pins the process to that many cores (sched_setaffinity,
before either library starts) and both sides get the same cores. On a 2-core machine with
--threads 2 nothing is pinned: JAX's default (all cores) is 2 threads. XLA_FLAGS from the
environment are used as they are.

It is a benchmark on a shared machine: other load perturbs the absolute times, but each
round times both sides within seconds of each other, so the interleaved ratio is the
figure it reports; the load average before and after is printed and written to the JSON.
Other load does not hit both sides alike, though. PyTorch's CPU kernels run on OpenMP,
whose every parallel region waits for all its threads: with the cores shared (load ~4 on
2 cores), PyTorch at 2 threads measured 1.4–3.1 s/step at ch=4 against 0.15 at 1 thread,
while XLA's work-stealing pool degrades gracefully. OMP_WAIT_POLICY=PASSIVE in the
environment brought PyTorch's 2 threads back to 0.34 s/step under that load, but costs a
wake-up per parallel region on an idle machine; the script leaves the environment as it is
(and records the OMP_* variables). Quote its ratio from a quiet machine (load average
below 1 on 2 cores), or with OMP_WAIT_POLICY=PASSIVE and say so.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ch", type=int, nargs="+", action="extend", help="widths (repeatable; default 4 16)")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=10, help="steps per timed block")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the rounds")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--matmul", type=int, default=4096, help="side of the float32 reference matmul (0: skip)")
  p.add_argument(
    "--torch_layouts",
    nargs="+",
    default=["channels_last", "contiguous"],
    choices=["channels_last", "contiguous"],
    help="PyTorch memory formats to time",
  )
  p.add_argument("--torch_attention", default="sdpa", choices=["sdpa", "explicit"])
  p.add_argument(
    "--torch_also_threads",
    type=int,
    nargs="*",
    default=[],
    help="also time PyTorch (first layout) at these thread counts: a diagnostic of how "
    "much other load costs OpenMP; not used in the ratio",
  )
  p.add_argument("--json_out", default="")
  args = p.parse_args(argv)
  args.ch = args.ch or [4, 16]
  return args


def pin_threads(threads):
  """Pins the process to ``threads`` cores if it may run on more; returns the cores it has."""
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) > threads:
    os.sched_setaffinity(0, cpus[:threads])
  return sorted(os.sched_getaffinity(0))


def _source_state():
  """The commit and whether sagan_jax/ or configs/ differ from it: which JAX step was timed."""
  import subprocess

  root = os.path.dirname(os.path.dirname(HERE))
  try:
    git = lambda *a: subprocess.run(
      ["git", *a], cwd=root, capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return {
      "commit": git("rev-parse", "HEAD"),
      "uncommitted": git("status", "--porcelain", "--", "sagan_jax", "configs").splitlines(),
    }
  except (OSError, subprocess.SubprocessError):
    return {}


def _median(xs):
  return statistics.median(xs)


def _flops(lowered):
  cost = lowered.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def model_flops(config, mesh, state, batch):
  """XLA's FLOP count of the step as the model writes it (the resampling convs composed, as
  PyTorch runs them): the work both sides do, whatever formulation the JAX step computes in."""
  from sagan_jax import programs

  as_written = config.copy_and_resolve_references()
  as_written.model.kernels.resampling_conv = "composed"
  return _flops(programs.programs(as_written, mesh).train_step.lower(state, batch))


def main(argv=None):
  args = parse_args(argv)
  cores = pin_threads(args.threads)  # before jax and torch size their thread pools
  if os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS"):
    print(
      "warning: JAX_DISABLE_MOST_OPTIMIZATIONS is set (the test suite's setting): JAX runs unoptimised code"
    )
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  sys.path.insert(0, HERE)
  import torch_sagan

  from sagan_jax import programs, sharding

  torch.set_num_threads(args.threads)
  load_before = os.getloadavg()
  machine = {
    "cores_used": cores,
    "cpu_count": os.cpu_count(),
    "threads": args.threads,
    "processor": platform.processor() or platform.machine(),
    "jax": jax.__version__,
    "torch": torch.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "jax_devices": str(jax.devices()),
    "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "KMP_"))},
    "source": _source_state(),
    "loadavg_before": load_before,
  }
  print(
    f"cores {cores}, torch threads {torch.get_num_threads()} {machine['omp_env'] or ''}, "
    f"jax {jax.__version__} {jax.devices()}, torch {torch.__version__}; load average "
    f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
  )

  matmul = None  # () -> FLOP/s of one --matmul² float32 matmul through XLA
  if args.matmul:
    n = args.matmul
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(mm(a, b))

    def matmul_rate():
      t0 = time.perf_counter()
      jax.block_until_ready(mm(a, b))
      return 2 * n**3 / (time.perf_counter() - t0)

    matmul = matmul_rate

  results = []
  mesh = sharding.create_mesh()
  for ch in args.ch:
    config = torch_sagan.make_config(ch, args.batch)
    config.d_steps_per_g_step = 1
    m = config.model
    g_count, d_count = torch_sagan.check_parameter_counts(config)
    rng = np.random.default_rng(0)
    shape = (1, args.batch, m.resolution, m.resolution, m.image_channels)
    images = rng.uniform(-1, 1, shape).astype(np.float32)
    labels = rng.integers(0, m.num_classes, shape[:2]).astype(np.int32)

    built = programs.programs(config, mesh)
    state = built.init()
    batch = sharding.global_batch({"image": images, "label": labels}, mesh)
    t0 = time.perf_counter()
    lowered = built.train_step.lower(state, batch)
    executed_flops = _flops(lowered)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops = model_flops(config, mesh, state, batch)

    def jax_block(n_steps, compiled=compiled, batch=batch, key=built.train_step.key_data):
      nonlocal state
      t0 = time.perf_counter()
      for _ in range(n_steps):
        state, metrics = compiled(state, batch, key)
      jax.block_until_ready((state, metrics))
      return (time.perf_counter() - t0) / n_steps

    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    variants = {f"torch_{name}": (name, args.threads) for name in args.torch_layouts}
    variants.update(
      {
        f"torch_{args.torch_layouts[0]}_{t}threads": (args.torch_layouts[0], t)
        for t in args.torch_also_threads
        if t != args.threads
      }
    )
    trainers = {
      side: torch_sagan.Trainer(config, formats[layout], attention=args.torch_attention)
      for side, (layout, _) in variants.items()
    }
    torch_batches = {side: tr.batch(images, labels) for side, tr in trainers.items()}

    def torch_block(side, n_steps, trainers=trainers, torch_batches=torch_batches, variants=variants):
      trainer, (x, y) = trainers[side], torch_batches[side]
      torch.set_num_threads(variants[side][1])
      t0 = time.perf_counter()
      for _ in range(n_steps):
        trainer.step(x, y)  # eager CPU: every op has finished when it returns
      seconds = (time.perf_counter() - t0) / n_steps
      torch.set_num_threads(args.threads)
      return seconds

    jax_block(args.warmup)
    for side in trainers:
      torch_block(side, args.warmup)
    times = {"jax": [], **{side: [] for side in trainers}}
    matmul_rates = []
    for r in range(args.rounds):
      sides = ["jax"] + list(trainers)
      if r % 2:
        sides = sides[::-1]
      for side in sides:
        t = jax_block(args.steps) if side == "jax" else torch_block(side, args.steps)
        times[side].append(t)
      if matmul:
        matmul_rates.append(matmul())
      print(
        f"  ch={ch} round {r + 1}/{args.rounds}: "
        + ", ".join(f"{k} {v[-1]:.4f}" for k, v in times.items())
        + (f", matmul {matmul_rates[-1] / 1e9:.0f} GFLOP/s" if matmul else ""),
        flush=True,
      )

    medians = {k: _median(v) for k, v in times.items()}
    torch_sides = [f"torch_{name}" for name in args.torch_layouts]  # at --threads
    best = min(torch_sides, key=lambda k: medians[k])
    per_round = [times[best][r] / times["jax"][r] for r in range(args.rounds)]
    result = {
      "ch": ch,
      "batch": args.batch,
      "g_params": g_count,
      "d_params": d_count,
      "steps_per_block": args.steps,
      "rounds": args.rounds,
      "jax_compile_s": compile_s,
      "gflop_per_step": flops / 1e9,
      "jax_executed_gflop_per_step": executed_flops / 1e9,
      "s_per_step_median": medians,
      "s_per_step_blocks": times,
      "torch_baseline": best,
      "ratio_torch_over_jax": medians[best] / medians["jax"],
      "ratio_torch_over_jax_per_round_median": _median(per_round),
      "ratio_torch_over_jax_per_round": per_round,
      "jax_gflop_per_s": flops / medians["jax"] / 1e9,
      "torch_gflop_per_s": flops / medians[best] / 1e9,
    }
    if matmul:
      rate = _median(matmul_rates)
      result.update(
        {
          "matmul_n": args.matmul,
          "matmul_gflop_per_s_median": rate / 1e9,
          "matmul_gflop_per_s_rounds": [x / 1e9 for x in matmul_rates],
          "jax_matmul_fraction": flops / medians["jax"] / rate,
          "torch_matmul_fraction": flops / medians[best] / rate,
        }
      )
    results.append(result)
    report(result)

  machine["loadavg_after"] = os.getloadavg()
  print(
    f"load average after: {' '.join(f'{x:.2f}' for x in machine['loadavg_after'])} "
    f"(on {os.cpu_count()} cores: above that, other processes shared the cores)"
  )
  if args.json_out:
    os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
    with open(args.json_out, "w") as f:
      json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=1)
  return results


def report(r):
  med = r["s_per_step_median"]
  print(
    f"ch={r['ch']} (G {r['g_params']:,} / D {r['d_params']:,} parameters), batch {r['batch']}, "
    f"{r['rounds']} rounds x {r['steps_per_block']} steps; JAX compile {r['jax_compile_s']:.1f} s, "
    f"{r['gflop_per_step']:.2f} GFLOP/step as the model writes it "
    f"({r['jax_executed_gflop_per_step']:.2f} in JAX's formulation)"
  )
  for side, t in med.items():
    print(
      f"  {side:>22}: {t:.4f} s/step median  ({', '.join(f'{x:.4f}' for x in r['s_per_step_blocks'][side])})"
    )
  print(
    f"  torch ({r['torch_baseline']}) / JAX: {r['ratio_torch_over_jax']:.3f} (medians), "
    f"{r['ratio_torch_over_jax_per_round_median']:.3f} (median of per-round ratios)  [>1: JAX faster]"
  )
  if "matmul_gflop_per_s_median" in r:
    print(
      f"  {r['matmul_n']}² f32 matmul through XLA: {r['matmul_gflop_per_s_median']:.0f} GFLOP/s; "
      f"JAX step {r['jax_gflop_per_s']:.1f} GFLOP/s = {r['jax_matmul_fraction']:.1%} of it "
      f"(PyTorch {r['torch_gflop_per_s']:.1f} GFLOP/s = {r['torch_matmul_fraction']:.1%})"
    )


if __name__ == "__main__":
  main()
