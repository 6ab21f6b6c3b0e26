"""One benchmark command in two environments (e.g. two JAX releases), interleaved round by round.

  python benchmarks/env_ab.py --side old=/path/venv-old/bin/python:/path/old-checkout \
      --side new=.venv/bin/python:. --rounds 3 --json_out=benchmarks/results/x.json \
      -- benchmarks/step.py --config=configs/fashion_mnist.py --devices=2 --steps=40

Each ``--side NAME=PYTHON:TREE`` runs the command after ``--`` with that interpreter in that
source tree (its working directory, first on PYTHONPATH), so each side imports its own package
copy even where the interpreter's environment has another installed. Every round
runs every side once, in alternating order; the command must accept ``--json_out=FILE`` and
write one JSON object of figures there (benchmarks/step.py does). Printed per figure
(compile_s, step_s by default): each side's values per round, their medians, and the median
of the per-round ratios of each side to the first. Environment variables pass through, but
JAX_DISABLE_MOST_OPTIMIZATIONS (the test suite's -O0) is removed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def parse_side(text):
  name, _, rest = text.partition("=")
  python, _, tree = rest.partition(":")
  if not (name and python and tree):
    raise argparse.ArgumentTypeError(f"--side {text!r}: expected NAME=PYTHON:TREE")
  return name, os.path.abspath(python), os.path.abspath(tree)


ATTEMPTS = 3  # a run that dies (a crash, an abort) is run again, and the failure recorded


def run_side(python, tree, command, json_path, failures):
  env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
  env["PYTHONPATH"] = tree  # the tree's package, before any installed (editable) copy
  for attempt in range(ATTEMPTS):
    proc = subprocess.run(
      [python, *command, f"--json_out={json_path}"],
      cwd=tree,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    if proc.returncode == 0:
      with open(json_path) as f:
        return json.load(f)
    last = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
    failures.append({"python": python, "returncode": proc.returncode, "stderr_tail": last})
    print(
      f"  run failed (exit {proc.returncode}; attempt {attempt + 1} of {ATTEMPTS}): {' | '.join(last)[:300]}",
      flush=True,
    )
  raise SystemExit(f"error: {python} failed {ATTEMPTS} times in a row")


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if "--" not in argv:
    raise SystemExit("error: give the benchmark command after --")
  split = argv.index("--")
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--side", type=parse_side, action="append", required=True)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--figures", nargs="+", default=["compile_s", "step_s"])
  p.add_argument("--json_out", default="")
  args = p.parse_args(argv[:split])
  command = argv[split + 1 :]
  results = {name: [] for name, _, _ in args.side}
  failures = []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      order = args.side if r % 2 == 0 else args.side[::-1]
      for name, python, tree in order:
        result = run_side(python, tree, command, os.path.join(tmp, f"{name}.json"), failures)
        results[name].append(result)
        print(
          f"round {r + 1}/{args.rounds} {name}: "
          + ", ".join(f"{k} {result.get(k, float('nan')):.4g}" for k in args.figures),
          flush=True,
        )
  first = args.side[0][0]
  summary = {}
  for figure in args.figures:
    for name in results:
      values = [r[figure] for r in results[name]]
      ratios = [v / b[figure] for v, b in zip(values, results[first], strict=True)]
      summary[f"{name}/{figure}"] = {
        "values": values,
        "median": statistics.median(values),
        f"ratio_to_{first}_per_round": ratios,
        f"ratio_to_{first}_median": statistics.median(ratios),
      }
      print(
        f"{figure:>12} {name:>8}: median {statistics.median(values):.4g} "
        f"({', '.join(f'{v:.4g}' for v in values)}); / {first} per round: "
        f"median {statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})"
      )
  if args.json_out:
    os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
    with open(args.json_out, "w") as f:
      json.dump(
        {
          "command": command,
          "sides": [list(s) for s in args.side],
          "rounds": args.rounds,
          "loadavg_after": os.getloadavg(),
          "results": results,
          "summary": summary,
          "failed_runs": failures,
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
