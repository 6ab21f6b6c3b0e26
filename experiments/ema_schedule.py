"""EMA schedules compared on one training run: several EMAs of G tracked side by side.

  python experiments/ema_schedule.py [--base_config=configs/fashion_mnist.py] [--set F=V …]
      [--ema const:0.999@800 power:6.94 raw …] [--eval_steps 2000 3000] [--eval_samples 5000]
      [--json_out=experiments/results/x.json]

The EMA of G's weights never feeds back into training, so every schedule here averages the
same trajectory: the comparison has no seed-to-seed noise, only the evaluation's (measure
it with evaluation_noise.py). Schedules:
  const:D@S   ema_schedule 'constant': decay D from step S on, a copy of G before
  power:G     ema_schedule 'power': the power-function EMA (Karras et al. 2024, EDM2), decay
              (1 - 1/t)^(G+1) at step t: an average over the last ~σ_rel of training
              (G=6.94: σ_rel 0.10; G=16.97: 0.05)
  raw         G itself
The CPU host is split as `python -m sagan_jax.main` does. Nothing is written but --json_out.
"""

import argparse
import json
import os
import time


def parse_schedule(spec: str, config):
  """'const:0.999@800' / 'power:6.94' / 'raw' -> decay(step), sagan_jax.step.ema_decay's."""
  import jax.numpy as jnp

  from sagan_jax import step

  kind, _, arg = spec.partition(":")
  if kind == "raw":
    return lambda t: jnp.float32(0.0)
  config = config.copy_and_resolve_references()
  if kind == "const":
    decay, _, start = arg.partition("@")
    config.ema_schedule, config.ema_decay, config.ema_start_step = "constant", float(decay), int(start or 0)
  elif kind == "power":
    config.ema_schedule, config.ema_power_gamma = "power", float(arg)
  else:
    raise ValueError(f"unknown EMA schedule {spec!r}; use const:D@S, power:G or raw")
  return lambda t: step.ema_decay(config, t)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--base_config", default="configs/fashion_mnist.py")
  p.add_argument("--set", action="append", default=[], help="config override F=V (repeatable)")
  p.add_argument(
    "--ema",
    nargs="+",
    default=["const:0.999@800", "const:0.998@800", "const:0.995@800", "power:6.94", "power:16.97", "raw"],
  )
  p.add_argument("--eval_steps", type=int, nargs="+", default=[2000, 3000])
  p.add_argument("--eval_samples", type=int, default=5000)
  p.add_argument("--json_out", default="")
  args = p.parse_args(argv)

  from sagan_jax import runtime
  from sagan_jax.ablations.records import load_base_config

  config = load_base_config(args.base_config, args.set)
  config.num_train_steps = max(args.eval_steps)
  runtime.split_cpu_host([config.batch_size, config.eval.batch_size], config.cpu_devices)
  import tempfile

  import jax

  from sagan_jax import programs, sharding
  from sagan_jax.data import pipeline
  from sagan_jax.evaluation.evaluator import Evaluator

  mesh = sharding.create_mesh()
  built = programs.programs(config, mesh)
  schedules = {spec: parse_schedule(spec, config) for spec in args.ema}
  state = built.init()
  emas = {spec: jax.tree.map(jax.numpy.copy, state.g_params) for spec in schedules}  # the step donates state

  @jax.jit
  def update(emas, params, step):  # step: the number of G updates made so far
    decays = {spec: schedules[spec](step) for spec in emas}
    return {
      spec: jax.tree.map(lambda e, q, d=decays[spec]: d * e + (1.0 - d) * q, ema, params)
      for spec, ema in emas.items()
    }

  workdir = tempfile.mkdtemp(prefix="ema_schedule_")  # the evaluator's label map etc., nothing kept
  evaluator = Evaluator(config, mesh, built.sampler, workdir, built.kernels)
  host = pipeline.create_train_iterator(config)
  results = {
    "config_overrides": args.set,
    "eval_samples": args.eval_samples,
    "time": time.strftime("%Y-%m-%d %H:%M"),
    "devices": mesh.size,
    "by_step": {},
  }
  start = time.time()
  for step in range(1, config.num_train_steps + 1):
    batch = sharding.global_batch(pipeline.stack_d_step_batches(host, config.d_steps_per_g_step), mesh)
    state, _ = built.train_step(state, batch)
    emas = update(emas, state.g_params, step)
    if step in args.eval_steps:
      print(f"step {step} ({time.time() - start:.0f} s)", flush=True)
      scores = {}
      for spec, ema in emas.items():
        s = evaluator.evaluate(state.replace(ema_params=ema), step, args.eval_samples, record=False)
        scores[spec] = {k: v for k, v in s.items() if isinstance(v, (int, float))}
        scores[spec]["class_accuracy_per_class"] = s.get("class_accuracy_per_class")
        print(
          f"  {spec:>16}: "
          + ", ".join(
            f"{k} {scores[spec][k]:.4g}"
            for k in ("fid_fmnist", "class_accuracy", "precision", "recall", "density", "coverage")
            if k in scores[spec]
          ),
          flush=True,
        )
      results["by_step"][str(step)] = scores
  if args.json_out:
    os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
    with open(args.json_out, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
