"""Trains a sweep: its jobs planned (variants × seeds, seed-major), each launched as
``python -m sagan_jax.main`` in its workdir (or that command printed, for batch systems and
Cloud TPU), ``--parallel`` at a time, each pinned to its own share of the cores (on a 2-core CPU
two single-core runs get more done than one run on both cores). A job with a record is not
retrained; an unfinished one resumes from its checkpoints. A SIGTERM or Ctrl-C to the sweep
stops its runs too, each saving a checkpoint when it is in its training loop.

``args`` is the sweep command's flags as attributes (sagan_jax.ablations.__main__).
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from sagan_jax.ablations import records
from sagan_jax.ablations.variants import Job
from sagan_jax.errors import UserError


def command(args, job: Job) -> list:
  """The job's training command."""
  return [
    sys.executable,
    "-m",
    "sagan_jax.main",
    f"--config={args.base_config}",
    f"--workdir={records.workdir(args, job)}",
    *[f"--config.{o}" for o in records.config_overrides(args, job)],
  ]


def parameter_counts(run_dir: str) -> tuple:
  """G's and D's parameter counts of the run's model (shapes only: nothing is computed)."""
  from sagan_jax import programs, run

  state = programs.abstract_state(run.load_config(run_dir))
  return programs.parameter_count(state.g_params), programs.parameter_count(state.d_params)


def _start(args, job: Job, cores) -> tuple:
  run_dir = records.workdir(args, job)
  os.makedirs(run_dir, exist_ok=True)
  cmd = command(args, job)
  print(f"[{job.variant.name} seed {job.seed}] {shlex.join(cmd)}", flush=True)
  log = open(os.path.join(run_dir, "train.log"), "a")
  pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
  proc = subprocess.Popen(
    cmd,
    cwd=records.ROOT,
    stdout=log,
    stderr=subprocess.STDOUT,
    preexec_fn=pin,
    env=dict(os.environ, PYTHONPATH=records.ROOT),
  )
  return proc, log, time.time()


def _last_error_line(log_path: str) -> str:
  """The last 'error: …' line a failed run printed, to repeat in the sweep's own error."""
  try:
    with open(log_path, errors="replace") as f:
      lines = [line.strip() for line in f if line.startswith("error:")]
  except OSError:
    return ""
  return lines[-1] if lines else ""


def _finish(args, job: Job, proc, log, start) -> dict:
  log.close()
  run_dir = records.workdir(args, job)
  result = records.new_record(args, job, time.time() - start)
  if proc.returncode != 0:
    killed = " (SIGKILL: often the out-of-memory killer)" if proc.returncode == -signal.SIGKILL else ""
    result["status"] = f"failed (exit {proc.returncode}{killed}; see {run_dir}/train.log)"
    said = _last_error_line(os.path.join(run_dir, "train.log"))
    if said:
      result["status"] += f": {said}"
    print(f"[{job.variant.name} seed {job.seed}] {result['status']}", flush=True)
    return result  # no record: a rerun tries it again
  result["status"] = "finished"
  result["g_params"], result["d_params"] = parameter_counts(run_dir)
  with open(os.path.join(run_dir, "config.json")) as f:
    result["config"] = json.load(f)
  records.write_finished(args, job, result)
  print(
    f"[{job.variant.name} seed {job.seed}] finished in {result['wall_seconds'] / 60:.1f} min: "
    + ", ".join(f"{k}={v:.4g}" for k, v in records.final_metrics(result).items() if k in records.METRICS),
    flush=True,
  )
  return result


def _core_shares(parallel: int) -> list:
  """One set of cores per parallel slot (empty sets: fewer cores than slots, nothing pinned)."""
  cores = sorted(os.sched_getaffinity(0))
  if parallel <= 1 or len(cores) < parallel:
    return [set()] * parallel
  per = len(cores) // parallel
  return [set(cores[i * per : (i + 1) * per]) for i in range(parallel)]


def run_jobs(args, jobs: list) -> list:
  """Trains the unfinished jobs, ``args.parallel`` at a time, in the given order.

  SIGTERM (a scheduler's stop) or Ctrl-C stops the runs too (each saves its checkpoint when
  it is in its training loop), instead of leaving them orphaned: the next sweep resumes them."""
  results, pending = {}, []
  for job in jobs:
    done = records.finished(args, job)
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
    for _, proc, log, _ in running.values():  # interrupted: the runs resume next time
      proc.terminate()
      proc.wait()
      log.close()
    signal.signal(signal.SIGTERM, previous_handler)
  if stop:
    raise SystemExit(128 + stop[0])
  return [results[j.key] for j in jobs if j.key in results]


def run_sweep(args, variants: list) -> list:
  """The records of the sweep's jobs (--only's variants × --seeds), trained where missing
  (none with --report_only: a job not run yet is shown as such), and every other finished
  record in --results, in sweep order; [] with --print_commands, which prints the jobs'
  commands instead."""
  every_variant = variants
  names = [v.name for v in variants]
  if args.baseline not in names:
    raise UserError(f"--baseline {args.baseline!r} is no variant; have {names}")
  if args.only:
    wanted = set(args.only.split(","))
    unknown = wanted - set(names)
    if unknown:
      raise UserError(f"unknown variant(s) {sorted(unknown)}; have {names}")
    variants = [v for v in variants if v.name in wanted]
  seeds = range(args.first_seed, args.first_seed + args.seeds)
  jobs = [Job(v, s) for s in seeds for v in variants]  # seed-major: a cut-short sweep has whole seeds
  if args.print_commands:
    for job in jobs:
      print(shlex.join(command(args, job)))
    return []
  if args.report_only:
    results = [(job, records.finished(args, job)) for job in jobs]
    results = [
      r if r is not None else {"variant": job.variant.name, "seed": job.seed, "status": "not run yet"}
      for job, r in results
    ]
  else:
    results = run_jobs(args, jobs)
  order = {v.name: i for i, v in enumerate(every_variant)}
  results += records.recorded_elsewhere(args, every_variant, {job.key for job in jobs})
  return sorted(results, key=lambda r: (order[r["variant"]], r["seed"]))
