"""Shared machinery of the ablation sweeps (attention_placement.py, stabilization.py).

A sweep is a list of variants, each a set of config overrides on a base config, trained
with ``--seeds`` seeds each (config.seed = first_seed, first_seed + 1, …: parameters,
noise and data order). Every variant × seed trains ``python -m sagan_jax.main`` in
OUT/<variant>/seed<k>/ (or that command is printed, for batch systems and Cloud TPU),
evaluated ``--eval_points`` times along training. Results:

- RESULTS/runs/<variant>/seed<k>.json: one finished run (its evaluations, parameter
  counts, wall time). Small: commit them. A run whose file exists (there, or as
  OUT/<variant>/seed<k>/result.json) is never retrained; an unfinished one resumes from
  its checkpoints.
- RESULTS/results.md and .csv: per variant and metric at the last step, the mean over
  seeds (every finished record in RESULTS/runs, not only this command's --seeds, --first_seed
  and --only), its standard error and 95% t-interval; and per variant the paired difference to
  ``--baseline`` (the same seeds) with its interval and, in words, whether it excludes 0.
- RESULTS/<name>_<metric>.png: the metric along training, each seed faint, the mean bold.

RESULTS is ``--results`` (default OUT). ``--parallel=P`` trains P runs at once, each pinned
to its own share of the cores (on a 2-core CPU two single-core runs get more done than one
run on both cores).
"""
import argparse
import csv
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import sweep_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("fid", "fid_fmnist", "class_accuracy", "coverage", "density", "precision", "recall",
           "intra_fid", "is")


class Variant(NamedTuple):
  name: str
  description: str
  overrides: dict  # config field -> value, as Python values


class Job(NamedTuple):
  variant: Variant
  seed: int

  @property
  def key(self) -> tuple:
    return self.variant.name, self.seed


def parse_args(doc: str, default_steps: int, default_baseline: str | None,
               default_eval_points: int = 1) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base_config", default="configs/fashion_mnist.py",
                 help="config file (optionally :variant) every variant starts from")
  p.add_argument("--steps", type=int, default=default_steps, help="G steps per run")
  p.add_argument("--out", required=True, help="output folder: one workdir per variant and seed")
  p.add_argument("--results", default="", help="folder of the per-run result files, tables and "
                 "plots (default: --out); commit it")
  p.add_argument("--seeds", type=int, default=1, help="training seeds per variant")
  p.add_argument("--first_seed", type=int, default=0)
  p.add_argument("--baseline", default=default_baseline,
                 help="variant every other is compared with, seed by seed (default: the tool's)")
  p.add_argument("--eval_points", type=int, default=default_eval_points,
                 help="evaluations per run, evenly spaced, the last at the end")
  p.add_argument("--eval_samples", type=int, default=2000, help="samples per evaluation")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="extra override for every variant, e.g. --set model.ch=2 (repeatable)")
  p.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
  p.add_argument("--parallel", type=int, default=1, help="runs trained at once on this machine")
  p.add_argument("--reuse", action="append", default=[], metavar="RESULTS",
                 help="another sweep's --results folder: a finished run there with the very config a "
                 "run here would train is taken instead of training it (repeatable)")
  p.add_argument("--report_only", action="store_true",
                 help="train nothing: the tables and plots of the runs finished so far")
  p.add_argument("--print_commands", action="store_true",
                 help="print one launch command per variant and seed and exit (batch jobs, Cloud TPU)")
  args = p.parse_args()
  if min(args.steps, args.eval_points, args.eval_samples, args.seeds, args.parallel) <= 0:
    p.error("--steps, --eval_points, --eval_samples, --seeds and --parallel must be positive")
  for item in args.set:
    if "=" not in item:
      p.error(f"--set {item!r} is not FIELD=VALUE")
  args.results = args.results or args.out
  return args


def _flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return "(" + "".join(f"{v}," for v in value) + ")"
  return str(value)


def workdir(args, job: Job) -> str:
  return os.path.join(args.out, job.variant.name, f"seed{job.seed}")


def record_path(args, job: Job) -> str:
  return os.path.join(args.results, "runs", job.variant.name, f"seed{job.seed}.json")


def config_overrides(args, job: Job) -> list:
  """FIELD=VALUE of every field the job's run sets on the base config: the run's own, the --set
  ones, then the variant's. A variant's field wins over a --set of it: variants are built from the
  base config with --set applied (Fig. 3's "lr_G for both" must stay equal under --set d_lr)."""
  every = max(1, args.steps // args.eval_points)
  run = {"num_train_steps": args.steps, "eval_every_steps": every,
         "eval_num_samples": args.eval_samples, "checkpoint_every_steps": every, "seed": job.seed}
  sets = [item for item in args.set if item.partition("=")[0] not in job.variant.overrides]
  return ([f"{k}={_flag_value(v)}" for k, v in run.items()] + sets +
          [f"{k}={_flag_value(v)}" for k, v in job.variant.overrides.items()])


def command(args, job: Job) -> list:
  return [sys.executable, "-m", "sagan_jax.main", f"--config={args.base_config}",
          f"--workdir={workdir(args, job)}", *[f"--config.{o}" for o in config_overrides(args, job)]]


def _evaluations(run_dir: str) -> list:
  """metrics.jsonl lines, the last one per step (a resumed run may re-evaluate a step)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      line = json.loads(line)
      by_step[line["step"]] = {k: line[k] for k in ("step", "num_samples", *METRICS, "is_std", "seconds")
                               if k in line}
  return [by_step[s] for s in sorted(by_step)]


def parameter_counts(run_dir: str) -> tuple:
  from sagan_jax import config as config_lib
  from sagan_jax import programs
  state = programs.abstract_state(config_lib.load_run_config(run_dir))
  return programs.parameter_count(state.g_params), programs.parameter_count(state.d_params)


def run_config(args, job: Job) -> dict:
  """The config the job's run trains, as its config.json holds it."""
  config = load_base_config(args.base_config, config_overrides(args, job))
  return json.loads(config.to_json())


# Where a machine keeps its files: the same run elsewhere has other values here.
LOCAL_FIELDS = ("dataset.data_dir", "dataset.manual_dir", "eval_cache_dir", "inception_weights")


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_differences(recorded: dict, wanted: dict) -> dict:
  """{dotted field: (recorded, wanted)} where a record's config (completed with the fields
  added since it was written) differs from the config a job would train; paths left out."""
  from sagan_jax import config as config_lib
  old = _flat(json.loads(json.dumps(config_lib.with_added_fields(recorded))))
  new = _flat(json.loads(json.dumps(wanted)))
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if k not in LOCAL_FIELDS and old.get(k) != new.get(k)}


def _recorded_config(result: dict) -> dict | None:
  recorded = result.get("config")
  return recorded if isinstance(recorded, dict) and isinstance(recorded.get("model"), dict) else None


def _reused(args, job: Job) -> dict | None:
  """A finished run of another sweep (``--reuse``) that trained exactly this job's config."""
  wanted = run_config(args, job)
  for folder in args.reuse:
    runs = os.path.join(folder, "runs")
    for variant in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
      path = os.path.join(folder, "runs", variant, f"seed{job.seed}.json")
      if os.path.exists(path):
        with open(path) as f:
          result = json.load(f)
        recorded = _recorded_config(result)
        if recorded is not None and not config_differences(recorded, wanted):
          return {**result, "variant": job.variant.name, "description": job.variant.description,
                  "overrides": {k: _flag_value(v) for k, v in job.variant.overrides.items()},
                  "reused_from": path}
  return None


def finished(args, job: Job) -> dict | None:
  """The job's finished run, or None; exits with an error when its record trained another
  config (mixing it in would compare runs of different recipes)."""
  for path in (record_path(args, job), os.path.join(workdir(args, job), "result.json")):
    if os.path.exists(path):
      with open(path) as f:
        result = json.load(f)
      recorded = _recorded_config(result)
      differing = config_differences(recorded, run_config(args, job)) if recorded is not None else {}
      if differing:
        shown = ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in list(differing.items())[:4])
        sys.exit(f"error: {path} is a run of another config ({shown}); rerun with the "
                 f"--steps/--eval_*/--set it was run with, or give this config its own --results "
                 f"and --out")
      return result
  reused = _reused(args, job) if args.reuse else None
  if reused is not None:
    print(f"[{job.variant.name} seed {job.seed}] the same config ran as {reused['reused_from']}", flush=True)
    _write_json(record_path(args, job), reused)
  return reused


def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def _start(args, job: Job, cores) -> tuple:
  run_dir = workdir(args, job)
  os.makedirs(run_dir, exist_ok=True)
  cmd = command(args, job)
  print(f"[{job.variant.name} seed {job.seed}] {shlex.join(cmd)}", flush=True)
  log = open(os.path.join(run_dir, "train.log"), "a")
  pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin,
                          env=dict(os.environ, PYTHONPATH=ROOT))
  return proc, log, time.time()


def _last_error_line(log_path: str) -> str:
  """The last 'error: …' line a failed run printed, to repeat in the sweep's own error."""
  try:
    with open(log_path, errors="replace") as f:
      lines = [l.strip() for l in f if l.startswith("error:")]
  except OSError:
    return ""
  return lines[-1] if lines else ""


def _finish(args, job: Job, proc, log, start) -> dict:
  log.close()
  run_dir = workdir(args, job)
  result = {"variant": job.variant.name, "seed": job.seed, "description": job.variant.description,
            "overrides": {k: _flag_value(v) for k, v in job.variant.overrides.items()},
            "steps": args.steps, "wall_seconds": round(time.time() - start, 1),
            "evaluations": _evaluations(run_dir)}
  if proc.returncode != 0:
    killed = " (SIGKILL: often the out-of-memory killer)" if proc.returncode == -signal.SIGKILL else ""
    result["status"] = f"failed (exit {proc.returncode}{killed}; see {run_dir}/train.log)"
    said = _last_error_line(os.path.join(run_dir, "train.log"))
    if said:
      result["status"] += f": {said}"
    print(f"[{job.variant.name} seed {job.seed}] {result['status']}", flush=True)
    return result  # no result file: a rerun tries it again
  result["status"] = "finished"
  result["g_params"], result["d_params"] = parameter_counts(run_dir)
  with open(os.path.join(run_dir, "config.json")) as f:
    result["config"] = json.load(f)
  _write_json(os.path.join(run_dir, "result.json"), result)
  _write_json(record_path(args, job), result)
  print(f"[{job.variant.name} seed {job.seed}] finished in {result['wall_seconds'] / 60:.1f} min: "
        + ", ".join(f"{k}={v:.4g}" for k, v in final_metrics(result).items() if k in METRICS), flush=True)
  return result


def _core_shares(parallel: int) -> list:
  """One set of cores per parallel slot (empty sets: fewer cores than slots, nothing pinned)."""
  cores = sorted(os.sched_getaffinity(0))
  if parallel <= 1 or len(cores) < parallel:
    return [set()] * parallel
  per = len(cores) // parallel
  return [set(cores[i * per:(i + 1) * per]) for i in range(parallel)]


def run_jobs(args, jobs: list) -> list:
  """Trains the unfinished jobs, ``args.parallel`` at a time, in the given order.

  SIGTERM (a scheduler's stop) or Ctrl-C stops the runs too (each saves its checkpoint when
  it is in its training loop), instead of leaving them orphaned: the next sweep resumes them."""
  results, pending = {}, []
  for job in jobs:
    done = finished(args, job)
    if done is not None:
      print(f"[{job.variant.name} seed {job.seed}] finished earlier; not retrained", flush=True)
      results[job.key] = done
    else:
      pending.append(job)
  slots = _core_shares(args.parallel)
  running = {}  # slot -> (job, proc, log, start)
  stop = []  # the signal asking the sweep to stop. Acted on between spawns, not raised inside
  # one: a SIGTERM during Popen would unwind it before the run it started is in `running`.
  previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
  try:
    while (pending or running) and not stop:
      for slot in range(args.parallel):
        if slot not in running and pending and not stop:
          job = pending.pop(0)
          running[slot] = (job, *_start(args, job, slots[slot]))
      time.sleep(2)
      for slot, (job, proc, log, start) in list(running.items()):
        if proc.poll() is not None:
          results[job.key] = _finish(args, job, proc, log, start)
          del running[slot]
  finally:
    for job, proc, log, _ in running.values():  # interrupted: the runs resume next time
      proc.terminate()
      proc.wait()
      log.close()
    signal.signal(signal.SIGTERM, previous_handler)
  if stop:
    raise SystemExit(128 + stop[0])
  return [results[j.key] for j in jobs if j.key in results]


def exit_if_any_failed(results: list) -> None:
  """One error line, exit status 1, when a run of the sweep failed (after its tables are
  written): a script or scheduler that runs the sweep must not take it for finished."""
  failed = [r for r in results if str(r.get("status", "")).startswith("failed")]
  if failed:
    runs = "; ".join(f"{r['variant']} seed {r['seed']} {r['status']}" for r in failed)
    sys.exit(f"error: {len(failed)} run(s) failed: {runs}. The tables cover the finished runs; "
             "rerun the same command to retry the failed ones (finished runs are not retrained)")


def final_metrics(result: dict) -> dict:
  evals = [e for e in result.get("evaluations", []) if e["step"] == result["steps"]]
  return dict(evals[-1]) if evals else {}


def metric_names(results) -> list:
  present = set()
  for r in results:
    present.update(final_metrics(r))
  return [k for k in METRICS if k in present]


def _by_variant(results) -> dict:
  """variant -> {seed: result} of the finished runs, in sweep order."""
  out = {}
  for r in results:
    if r.get("status") == "finished":
      out.setdefault(r["variant"], {})[r["seed"]] = r
  return out


def summary_rows(results, names) -> list:
  rows = []
  for variant, runs in _by_variant(results).items():
    first = next(iter(runs.values()))
    row = {"variant": variant, "description": first["description"],
           "G params": first.get("g_params", ""), "D params": first.get("d_params", ""),
           "seeds": len(runs)}
    for name in names:
      values = [final_metrics(r)[name] for r in runs.values() if name in final_metrics(r)]
      if values:
        iv = sweep_stats.interval(values)
        row.update({f"{name} mean": iv.mean, f"{name} se": iv.se, f"{name} ci_low": iv.low,
                    f"{name} ci_high": iv.high})
    row["wall min/run"] = sum(r["wall_seconds"] for r in runs.values()) / len(runs) / 60
    rows.append(row)
  return rows


def paired_rows(results, names, baseline: str) -> list:
  by = _by_variant(results)
  if baseline not in by:
    return []
  base = {s: final_metrics(r) for s, r in by[baseline].items()}
  rows = []
  for variant, runs in by.items():
    if variant == baseline:
      continue
    for name in names:
      mine = {s: final_metrics(r)[name] for s, r in runs.items() if name in final_metrics(r)}
      theirs = {s: m[name] for s, m in base.items() if name in m}
      diff = sweep_stats.paired(mine, theirs)
      rows.append({"variant": variant, "metric": name, "pairs": diff.n if diff else 0,
                   "difference": diff.mean if diff else math.nan,
                   "ci_low": diff.low if diff else math.nan, "ci_high": diff.high if diff else math.nan,
                   "verdict": sweep_stats.verdict(name, diff, baseline)})
  return rows


def seed_list(results) -> str:
  """'0…7' for the seeds of the finished runs, or '0, 2, 5' where they are not contiguous."""
  seeds = sorted({r["seed"] for r in results if r.get("status") == "finished"})
  if not seeds:
    return "none finished"
  if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
    return f"{seeds[0]}…{seeds[-1]}"
  return ", ".join(str(seed) for seed in seeds)


def write_tables(args, results: list, title: str, notes: str = "") -> None:
  names = metric_names(results)
  summary, pairs = summary_rows(results, names), paired_rows(results, names, args.baseline)
  failed = [f"{r['variant']} seed {r['seed']}: {r['status']}" for r in results if r.get("status") != "finished"]
  os.makedirs(args.results, exist_ok=True)
  for filename, rows in (("results.csv", summary), ("paired.csv", pairs)):
    with open(os.path.join(args.results, filename), "w", newline="") as f:
      if rows:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
  fmt = sweep_stats.fmt
  lines = [f"# {title}", "",
           f"Base config `{args.base_config}`, {args.steps} G steps per run, seeds "
           f"{seed_list(results)}, {args.eval_samples} samples per "
           f"evaluation, extra overrides: {', '.join(args.set) or 'none'}. Lower FID is better; higher "
           f"class accuracy, coverage, precision, recall, density. Per metric: the mean over seeds at "
           f"the last step, ± its standard error, [its 95% Student-t interval].", ""]
  if notes:
    lines += [notes, ""]
  header = ["variant", "description", "G params", "D params", "seeds", *names, "wall min/run"]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in summary:
    cells = [row["variant"], row["description"], row["G params"], row["D params"], row["seeds"]]
    for name in names:
      if f"{name} mean" not in row:
        cells.append("")
      elif row["seeds"] < 2:
        cells.append(fmt(row[f"{name} mean"]))
      else:
        cells.append(f"{fmt(row[f'{name} mean'])} ± {fmt(row[f'{name} se'])} "
                     f"[{fmt(row[f'{name} ci_low'])}, {fmt(row[f'{name} ci_high'])}]")
    cells.append(f"{row['wall min/run']:.1f}")
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  if pairs:
    lines += ["", f"Paired with `{args.baseline}` (seed by seed): the mean of variant − "
              f"{args.baseline} and its 95% Student-t interval.", "",
              "| variant | metric | seeds | difference | 95% interval | verdict |", "|---|---|---|---|---|---|"]
    for row in pairs:
      lines.append(f"| {row['variant']} | {row['metric']} | {row['pairs']} | {fmt(row['difference'])} | "
                   f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}] | {row['verdict']} |")
  elif summary:
    lines += ["", f"No paired comparison: the baseline `{args.baseline}` has no finished run."]
  if failed:
    lines += ["", "Not finished (rerun the same command to retry or resume): " + "; ".join(failed)]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(args.results, "results.md"), "w") as f:
    f.write(text)
  print(text)


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
  """One plot per metric along training: each seed's run faint, the mean over seeds bold."""
  plt = _pyplot()
  written = []
  for name in metric_names(results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (variant, runs) in enumerate(_by_variant(results).items()):
      color = f"C{i % 10}"
      by_step = {}
      for r in runs.values():
        points = [(e["step"], e[name]) for e in r.get("evaluations", []) if name in e]
        if points:
          ax.plot(*zip(*points), color=color, alpha=0.25, linewidth=1)
          for step, value in points:
            by_step.setdefault(step, []).append(value)
      steps = sorted(s for s, v in by_step.items() if len(v) == len(runs))
      if steps:
        ax.plot(steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], color=color, linewidth=2.5,
                marker="o", label=f"{variant} (mean of {len(runs)})")
    ax.set_xlabel("generator step")
    ax.set_ylabel(name)
    ax.set_title(title)
    ax.legend(fontsize=8)
    written.append(_save(fig, os.path.join(args.results, f"{filename}_{name}.png")))
  return written


def plot_bars(args, results: list, filename: str, title: str) -> list:
  """Per variant the final metric: each seed a dot, the mean a bar with its 95% interval."""
  plt = _pyplot()
  written = []
  names = metric_names(results)
  summary = summary_rows(results, names)
  by = _by_variant(results)
  for name in names:
    shown = [row for row in summary if f"{name} mean" in row]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(shown)), 4))
    x = range(len(shown))
    err = [[row[f"{name} mean"] - row[f"{name} ci_low"] if row["seeds"] > 1 else 0 for row in shown],
           [row[f"{name} ci_high"] - row[f"{name} mean"] if row["seeds"] > 1 else 0 for row in shown]]
    ax.bar(x, [row[f"{name} mean"] for row in shown], yerr=err, capsize=4, alpha=0.6)
    for i, row in enumerate(shown):
      values = [final_metrics(r)[name] for r in by[row["variant"]].values() if name in final_metrics(r)]
      ax.plot([i] * len(values), values, "k.", alpha=0.6)
    ax.set_xticks(list(x), [row["variant"] for row in shown], rotation=45)
    ax.set_ylabel(name)
    ax.set_title(title)
    written.append(_save(fig, os.path.join(args.results, f"{filename}_{name}.png")))
  return written


def run_sweep(args, variants: list) -> list:
  every_variant = variants
  names = [v.name for v in variants]
  if args.baseline not in names:
    sys.exit(f"error: --baseline {args.baseline!r} is no variant; have {names}")
  if args.only:
    wanted = set(args.only.split(","))
    unknown = wanted - set(names)
    if unknown:
      sys.exit(f"error: unknown variant(s) {sorted(unknown)}; have {names}")
    variants = [v for v in variants if v.name in wanted]
  seeds = range(args.first_seed, args.first_seed + args.seeds)
  jobs = [Job(v, s) for s in seeds for v in variants]  # seed-major: a cut-short sweep has whole seeds
  if args.print_commands:
    for job in jobs:
      print(shlex.join(command(args, job)))
    return []
  if args.report_only:
    results = [(job, finished(args, job)) for job in jobs]
    results = [r if r is not None else {"variant": job.variant.name, "seed": job.seed, "status": "not run yet"}
               for job, r in results]
  else:
    results = run_jobs(args, jobs)
  order = {v.name: i for i, v in enumerate(every_variant)}
  results += recorded_elsewhere(args, every_variant, {job.key for job in jobs})
  return sorted(results, key=lambda r: (order[r["variant"]], r["seed"]))


def recorded_elsewhere(args, variants: list, keys: set) -> list:
  """The finished records in --results of every variant at seeds this command did not ask for,
  so that the tables always show every run there is (extending a sweep by one seed, or running
  one variant, does not shrink them)."""
  found = []
  for variant in variants:
    folder = os.path.join(args.results, "runs", variant.name)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    seeds = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"seed(\d+)\.json", n)))
    found += [Job(variant, seed) for seed in seeds if (variant.name, seed) not in keys]
  return [result for job in found if (result := finished(args, job)) is not None]


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
