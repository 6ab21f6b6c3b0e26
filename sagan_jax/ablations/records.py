"""A sweep's runs on disk: where each job trains and is recorded, the config it trains, and
its record — read, written, taken from another sweep (``--reuse``) or refused when it trained
another config.

- OUT/<variant>/seed<k>/: the job's workdir (``python -m sagan_jax.main --workdir``), with
  result.json once it finished.
- RESULTS/runs/<variant>/seed<k>.json: its record, the same JSON (evaluations, parameter
  counts, wall time, the config it trained). Small: commit them. A job whose record exists
  (there, or as the workdir's result.json) is never retrained.

``args`` here is the sweep command's flags as attributes (sagan_jax.ablations.__main__).
"""

import ast
import importlib.util
import json
import os
import re

from sagan_jax import config as config_lib
from sagan_jax.ablations.variants import Job
from sagan_jax.errors import UserError
from sagan_jax.workdir import write_atomic

# The folder that holds the package and configs/: relative --base_config paths start there.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The metrics a record keeps, in table order.
METRICS = (
  "fid",
  "fid_fmnist",
  "class_accuracy",
  "coverage",
  "density",
  "precision",
  "recall",
  "intra_fid",
  "is",
)
# Where a machine keeps its files: the same run elsewhere has other values here.
LOCAL_FIELDS = ("dataset.data_dir", "dataset.manual_dir", "eval.cache_dir", "eval.inception_weights")


def load_base_config(spec: str, sets=()):
  """The config file ``spec`` (PATH or PATH:variant, a relative PATH from ROOT) with the
  ``sets`` overrides applied (FIELD=VALUE, the value a Python literal or else a string)."""
  path, _, variant = spec.partition(":")
  path = path if os.path.isabs(path) else os.path.join(ROOT, path)
  if not os.path.isfile(path):
    raise UserError(f"--base_config={spec}: no config file {path}")
  module_spec = importlib.util.spec_from_file_location("base_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  for item in sets:
    field, _, value = item.partition("=")
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
      node = node.get(name) if hasattr(node, "get") else None
    if node is None or leaf not in node:
      raise UserError(
        f"--set {item}: the config has no field {field!r}; the config file lists every field with a comment"
      )
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a string
    try:
      node[leaf] = value
    except TypeError as e:  # ml_collections refuses a value of another type
      raise UserError(f"--set {item}: {e}") from None
  return config


def _flag_value(value) -> str:
  """A config value as a --config.FIELD=… flag spells it (tuples as '(a,b,)')."""
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
  run = {
    "num_train_steps": args.steps,
    "evals.periodic.every_steps": every,
    "evals.periodic.num_samples": args.eval_samples,
    "checkpoint_every_steps": every,
    "seed": job.seed,
  }
  sets = [item for item in args.set if item.partition("=")[0] not in job.variant.overrides]
  return (
    [f"{k}={_flag_value(v)}" for k, v in run.items()]
    + sets
    + [f"{k}={_flag_value(v)}" for k, v in job.variant.overrides.items()]
  )


def run_config(args, job: Job) -> dict:
  """The config the job's run trains, as its config.json holds it."""
  config = load_base_config(args.base_config, config_overrides(args, job))
  return json.loads(config.to_json())


def new_record(args, job: Job, wall_seconds: float) -> dict:
  """The record of the job's run as its training left it (the launcher adds its status, and
  for a finished run its parameter counts and config)."""
  return {
    "variant": job.variant.name,
    "seed": job.seed,
    "description": job.variant.description,
    "overrides": {k: _flag_value(v) for k, v in job.variant.overrides.items()},
    "steps": args.steps,
    "wall_seconds": round(wall_seconds, 1),
    "evaluations": evaluations(workdir(args, job)),
  }


def evaluations(run_dir: str) -> list:
  """metrics.jsonl lines, the last one per step (a resumed run may re-evaluate a step)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      line = json.loads(line)
      by_step[line["step"]] = {
        k: line[k] for k in ("step", "num_samples", *METRICS, "is_std", "seconds") if k in line
      }
  return [by_step[s] for s in sorted(by_step)]


def final_metrics(result: dict) -> dict:
  """The record's evaluation at its last step ({} when it has none there)."""
  evals = [e for e in result.get("evaluations", []) if e["step"] == result["steps"]]
  return dict(evals[-1]) if evals else {}


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_differences(recorded: dict, wanted: dict) -> dict:
  """{dotted field: (recorded, wanted)} where a record's config (read as config.json is: fields
  moved since at their new places, fields added since completed) differs from the config a job
  would train; paths left out."""
  old = _flat(json.loads(config_lib.from_saved(recorded).to_json()))
  new = _flat(json.loads(json.dumps(wanted)))
  return {
    k: (old.get(k), new.get(k))
    for k in sorted(set(old) | set(new))
    if k not in LOCAL_FIELDS and old.get(k) != new.get(k)
  }


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
          return {
            **result,
            "variant": job.variant.name,
            "description": job.variant.description,
            "overrides": {k: _flag_value(v) for k, v in job.variant.overrides.items()},
            "reused_from": path,
          }
  return None


def finished(args, job: Job) -> dict | None:
  """The job's finished run, or None; a UserError when its record trained another config
  (mixing it in would compare runs of different recipes)."""
  for path in (record_path(args, job), os.path.join(workdir(args, job), "result.json")):
    if os.path.exists(path):
      with open(path) as f:
        result = json.load(f)
      recorded = _recorded_config(result)
      differing = config_differences(recorded, run_config(args, job)) if recorded is not None else {}
      if differing:
        shown = ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in list(differing.items())[:4])
        raise UserError(
          f"{path} is a run of another config ({shown}); rerun with the "
          f"--steps/--eval_*/--set it was run with, or give this config its own "
          f"--results and --out"
        )
      return result
  reused = _reused(args, job) if args.reuse else None
  if reused is not None:
    print(f"[{job.variant.name} seed {job.seed}] the same config ran as {reused['reused_from']}", flush=True)
    _write_json(record_path(args, job), reused)
  return reused


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


def _write_json(path: str, value) -> None:
  """Writes ``value`` to ``path`` atomically (a reader never sees half a record)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  write_atomic(path, json.dumps(value, indent=1))


def write_finished(args, job: Job, result: dict) -> None:
  """A finished run's record, in its workdir (result.json) and in RESULTS/runs."""
  _write_json(os.path.join(workdir(args, job), "result.json"), result)
  _write_json(record_path(args, job), result)
