"""The evaluation's own noise: one checkpoint scored on different samples (noise seeds).

  python experiments/evaluation_noise.py --workdir=RUN [--step=N] [--num_samples 5000 10000]
      [--seeds=5] [--json_out=experiments/results/x.json]

The generator is fixed (the run's checkpoint); only the z of its samples changes from one
evaluation to the next, so the spread of a metric over seeds is what sampling alone adds
to any figure measured on that many samples. Printed per sample count and metric: the
mean, the standard deviation over seeds and the range. Nothing is written to the run's
metrics.jsonl. A sweep's differences between variants must be large against this spread
(and against the spread between training seeds, which includes it).
"""

import argparse
import json
import os
import statistics
import time

METRICS = ("fid_fmnist", "class_accuracy", "precision", "recall", "density", "coverage", "fid", "is")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--num_samples", type=int, nargs="+", default=[5000, 10000])
  p.add_argument("--seeds", type=int, default=5, help="noise seeds per sample count")
  p.add_argument("--json_out", default="")
  args = p.parse_args(argv)

  from sagan_jax.evaluation.evaluator import Evaluator
  from sagan_jax.run import open_run

  run = open_run(args.workdir, args.step)
  evaluator = Evaluator(run.config, run.mesh, run.programs.sampler, args.workdir, run.programs.kernels)
  base = evaluator.noise_seed()
  results = {
    "workdir": args.workdir,
    "step": run.step,
    "seeds": args.seeds,
    "time": time.strftime("%Y-%m-%d %H:%M"),
    "by_num_samples": {},
  }
  for num in args.num_samples:
    scores = [
      evaluator.evaluate(run.state, run.step, num, noise_seed=base + 1000 + i, record=False)
      for i in range(args.seeds)
    ]
    summary = {}
    for name in METRICS:
      values = [s[name] for s in scores if name in s]
      if len(values) > 1:
        summary[name] = {
          "mean": statistics.fmean(values),
          "sd": statistics.stdev(values),
          "min": min(values),
          "max": max(values),
          "values": values,
        }
        print(
          f"{num:>6} samples, {name:>14}: mean {summary[name]['mean']:.4f}, sd {summary[name]['sd']:.4f} "
          f"over {len(values)} noise seeds (range {min(values):.4f} … {max(values):.4f})",
          flush=True,
        )
    results["by_num_samples"][str(num)] = summary
  if args.json_out:
    os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
    with open(args.json_out, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
