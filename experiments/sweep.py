"""Shared machinery of the ablation sweeps (attention_placement.py, stabilization.py).

A sweep is a list of variants, each a set of config overrides on a base config. For
each variant it trains `python -m sagan_jax.main` in OUT/<variant>/ (or prints that
command, for batch systems), reads the evaluations the run wrote to metrics.jsonl, and
writes OUT/results.csv, OUT/results.md and plots. A variant whose OUT/<variant>/
result.json exists is finished and not retrained; an unfinished one resumes from its
checkpoints.
"""
import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Variant(NamedTuple):
  name: str
  description: str
  overrides: dict  # config field -> value, as Python values


def parse_args(doc: str, default_steps: int, default_eval_points: int = 1) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base_config", default="configs/fashion_mnist.py",
                 help="config file (optionally :variant) every variant starts from")
  p.add_argument("--steps", type=int, default=default_steps, help="G steps per variant")
  p.add_argument("--out", required=True, help="output folder: one workdir per variant + results")
  p.add_argument("--eval_points", type=int, default=default_eval_points,
                 help="evaluations per run, evenly spaced, the last at the end")
  p.add_argument("--eval_samples", type=int, default=2000, help="samples per evaluation")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="extra override for every variant, e.g. --set model.ch=2 (repeatable)")
  p.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
  p.add_argument("--print_commands", action="store_true",
                 help="print one launch command per variant and exit (batch jobs, Cloud TPU)")
  args = p.parse_args()
  if args.steps <= 0 or args.eval_points <= 0 or args.eval_samples <= 0:
    p.error("--steps, --eval_points and --eval_samples must be positive")
  for item in args.set:
    if "=" not in item:
      p.error(f"--set {item!r} is not FIELD=VALUE")
  return args


def _flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return "(" + "".join(f"{v}," for v in value) + ")"
  return str(value)


def command(args, variant: Variant) -> list:
  every = max(1, args.steps // args.eval_points)
  overrides = {"num_train_steps": args.steps, "eval_every_steps": every,
               "eval_num_samples": args.eval_samples, "checkpoint_every_steps": every,
               **variant.overrides}
  flags = [f"--config.{k}={_flag_value(v)}" for k, v in overrides.items()]
  flags += [f"--config.{item}" for item in args.set]
  return [sys.executable, "-m", "sagan_jax.main", f"--config={args.base_config}",
          f"--workdir={os.path.join(args.out, variant.name)}", *flags]


def _evaluations(workdir: str) -> list:
  """metrics.jsonl lines, the last one per step (a resumed run may re-evaluate a step)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      line = json.loads(line)
      by_step[line["step"]] = line
  return [by_step[s] for s in sorted(by_step)]


def parameter_counts(workdir: str) -> tuple:
  from sagan_jax import config as config_lib
  from sagan_jax import programs
  state = programs.abstract_state(config_lib.load_run_config(workdir))
  return programs.parameter_count(state.g_params), programs.parameter_count(state.d_params)


def run_variant(args, variant: Variant) -> dict:
  workdir = os.path.join(args.out, variant.name)
  done = os.path.join(workdir, "result.json")
  if os.path.exists(done):
    with open(done) as f:
      result = json.load(f)
    print(f"[{variant.name}] finished earlier; not retrained", flush=True)
    return result
  cmd = command(args, variant)
  print(f"[{variant.name}] {shlex.join(cmd)}", flush=True)
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  with open(os.path.join(workdir, "train.log"), "a") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
  wall = time.time() - start
  result = {"variant": variant.name, "description": variant.description,
            "overrides": {k: _flag_value(v) for k, v in variant.overrides.items()},
            "steps": args.steps, "wall_seconds": round(wall, 1), "evaluations": _evaluations(workdir)}
  if proc.returncode != 0:
    result["status"] = f"failed (exit {proc.returncode}; see {variant.name}/train.log)"
    print(f"[{variant.name}] {result['status']}", flush=True)
    return result  # no result.json: a rerun tries it again
  result["status"] = "finished"
  result["g_params"], result["d_params"] = parameter_counts(workdir)
  with open(done, "w") as f:
    json.dump(result, f, indent=1)
  return result


def final_metrics(result: dict) -> dict:
  evals = [e for e in result.get("evaluations", []) if e["step"] == result["steps"]]
  if not evals:
    return {}
  keys = ("fid", "fid_fmnist", "class_accuracy", "coverage", "density", "precision", "recall",
          "is", "is_std", "intra_fid", "num_samples")
  return {k: evals[-1][k] for k in keys if k in evals[-1]}


def metric_names(results) -> list:
  present = set()
  for r in results:
    present.update(final_metrics(r))
  return [k for k in ("fid", "fid_fmnist", "class_accuracy", "coverage", "density", "precision",
                      "recall", "intra_fid", "is") if k in present]


def write_tables(args, results: list, title: str, notes: str = "") -> None:
  names = metric_names(results)
  header = ["variant", "description", "G params", "D params", *names, "samples", "steps",
            "wall min", "status"]
  rows = []
  for r in results:
    m = final_metrics(r)
    rows.append([r["variant"], r["description"], r.get("g_params", ""), r.get("d_params", ""),
                 *[(f"{m[k]:.2f}" + (f" ± {m['is_std']:.2f}" if k == "is" and "is_std" in m else ""))
                   if k in m else "" for k in names],
                 m.get("num_samples", ""), r["steps"], f"{r['wall_seconds'] / 60:.1f}", r["status"]])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
    csv.writer(f).writerows([header, *rows])
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(f"# {title}\n\nBase config `{args.base_config}`, {args.steps} G steps per variant, "
            f"extra overrides: {', '.join(args.set) or 'none'}. Lower FID is better.\n\n")
    if notes:
      f.write(notes + "\n\n")
    f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for row in rows:
      f.write("| " + " | ".join(str(c) for c in row) + " |\n")
  print(open(os.path.join(args.out, "results.md")).read())


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)
  return path


def plot_curves(args, results: list, filename: str, title: str) -> list:
  """One plot per metric: its value at each evaluated step, one line per variant."""
  plt = _pyplot()
  written = []
  for name in metric_names(results):
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
      points = [(e["step"], e[name]) for e in r.get("evaluations", []) if name in e]
      if points:
        ax.plot(*zip(*points), marker="o", label=r["variant"])
    ax.set_xlabel("generator step")
    ax.set_ylabel(name)
    ax.set_title(title)
    ax.legend()
    written.append(_save(fig, os.path.join(args.out, f"{filename}_{name}.png")))
  return written


def plot_bars(args, results: list, filename: str, title: str) -> list:
  """One bar per variant of each final metric."""
  plt = _pyplot()
  written = []
  for name in metric_names(results):
    shown = [(r["variant"], final_metrics(r)[name]) for r in results if name in final_metrics(r)]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(shown)), 4))
    ax.bar([s[0] for s in shown], [s[1] for s in shown])
    ax.set_ylabel(name)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    written.append(_save(fig, os.path.join(args.out, f"{filename}_{name}.png")))
  return written


def run_sweep(args, variants: list) -> list:
  if args.only:
    wanted = set(args.only.split(","))
    unknown = wanted - {v.name for v in variants}
    if unknown:
      sys.exit(f"error: unknown variant(s) {sorted(unknown)}; have {[v.name for v in variants]}")
    variants = [v for v in variants if v.name in wanted]
  if args.print_commands:
    for v in variants:
      print(shlex.join(command(args, v)))
    return []
  return [run_variant(args, v) for v in variants]


def load_base_config(spec: str, sets=()):
  """The base config with the --set overrides (to read the model's sides and learning rates)."""
  import ast
  import importlib.util
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("sweep_base_config", os.path.join(ROOT, path)
                                                       if not os.path.isabs(path) else path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  for item in sets:
    field, _, value = item.partition("=")
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
      node = node[name]
    try:
      node[leaf] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      node[leaf] = value
  return config
