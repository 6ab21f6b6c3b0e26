"""A sweep's results from its records, written to --results (RESULTS):

- results.md and results.csv: per variant and metric at the last step, the mean over seeds (every
  finished record, not only the seeds and variants of this command), its standard error and 95%
  t-interval.
- paired.csv (and results.md's second table): per variant and metric the paired difference to
  ``--baseline`` over the seeds both have, with its interval and, in words, whether it excludes 0.
- <name>_<metric>.png: the metric along training (each seed faint, the mean bold), or per variant
  at the last step (each seed a dot, the mean a bar with its interval).

``args`` is the sweep command's flags as attributes (sagan_jax.ablations.__main__).
"""

import csv
import math
import os

from sagan_jax.ablations import stats
from sagan_jax.ablations.records import METRICS, final_metrics


def metric_names(results) -> list:
  """The metrics some record has at its last step, in table order."""
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
  """results.csv's rows: per variant its parameter counts, seeds and each metric's interval."""
  rows = []
  for variant, runs in _by_variant(results).items():
    first = next(iter(runs.values()))
    row = {
      "variant": variant,
      "description": first["description"],
      "G params": first.get("g_params", ""),
      "D params": first.get("d_params", ""),
      "seeds": len(runs),
    }
    for name in names:
      values = [final_metrics(r)[name] for r in runs.values() if name in final_metrics(r)]
      if values:
        iv = stats.interval(values)
        row.update(
          {f"{name} mean": iv.mean, f"{name} se": iv.se, f"{name} ci_low": iv.low, f"{name} ci_high": iv.high}
        )
    row["wall min/run"] = sum(r["wall_seconds"] for r in runs.values()) / len(runs) / 60
    rows.append(row)
  return rows


def paired_rows(results, names, baseline: str) -> list:
  """paired.csv's rows: per variant but the baseline and metric, variant − baseline seed by seed."""
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
      diff = stats.paired(mine, theirs)
      rows.append(
        {
          "variant": variant,
          "metric": name,
          "pairs": diff.n if diff else 0,
          "difference": diff.mean if diff else math.nan,
          "ci_low": diff.low if diff else math.nan,
          "ci_high": diff.high if diff else math.nan,
          "verdict": stats.verdict(name, diff, baseline),
        }
      )
  return rows


def seed_list(results) -> str:
  """'0…7' for the seeds of the finished runs, or '0, 2, 5' where they are not contiguous."""
  seeds = sorted({r["seed"] for r in results if r.get("status") == "finished"})
  if not seeds:
    return "none finished"
  if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
    return f"{seeds[0]}…{seeds[-1]}"
  return ", ".join(str(seed) for seed in seeds)


def write_tables(args, results: list, title: str) -> None:
  """results.md (also printed), results.csv and paired.csv of the sweep's records."""
  names = metric_names(results)
  summary, pairs = summary_rows(results, names), paired_rows(results, names, args.baseline)
  failed = [
    f"{r['variant']} seed {r['seed']}: {r['status']}" for r in results if r.get("status") != "finished"
  ]
  os.makedirs(args.results, exist_ok=True)
  for filename, rows in (("results.csv", summary), ("paired.csv", pairs)):
    with open(os.path.join(args.results, filename), "w", newline="") as f:
      if rows:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
  fmt = stats.fmt
  lines = [
    f"# {title}",
    "",
    f"Base config `{args.base_config}`, {args.steps} G steps per run, seeds "
    f"{seed_list(results)}, {args.eval_samples} samples per "
    f"evaluation, extra overrides: {', '.join(args.set) or 'none'}. Lower FID is better; higher "
    f"class accuracy, coverage, precision, recall, density. Per metric: the mean over seeds at "
    f"the last step, ± its standard error, [its 95% Student-t interval].",
    "",
  ]
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
        cells.append(
          f"{fmt(row[f'{name} mean'])} ± {fmt(row[f'{name} se'])} "
          f"[{fmt(row[f'{name} ci_low'])}, {fmt(row[f'{name} ci_high'])}]"
        )
    cells.append(f"{row['wall min/run']:.1f}")
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  if pairs:
    lines += [
      "",
      f"Paired with `{args.baseline}` (seed by seed): the mean of variant − "
      f"{args.baseline} and its 95% Student-t interval.",
      "",
      "| variant | metric | seeds | difference | 95% interval | verdict |",
      "|---|---|---|---|---|---|",
    ]
    for row in pairs:
      lines.append(
        f"| {row['variant']} | {row['metric']} | {row['pairs']} | {fmt(row['difference'])} | "
        f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}] | {row['verdict']} |"
      )
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
          ax.plot(*zip(*points, strict=True), color=color, alpha=0.25, linewidth=1)
          for step, value in points:
            by_step.setdefault(step, []).append(value)
      steps = sorted(s for s, v in by_step.items() if len(v) == len(runs))
      if steps:
        ax.plot(
          steps,
          [sum(by_step[s]) / len(by_step[s]) for s in steps],
          color=color,
          linewidth=2.5,
          marker="o",
          label=f"{variant} (mean of {len(runs)})",
        )
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
    err = [
      [row[f"{name} mean"] - row[f"{name} ci_low"] if row["seeds"] > 1 else 0 for row in shown],
      [row[f"{name} ci_high"] - row[f"{name} mean"] if row["seeds"] > 1 else 0 for row in shown],
    ]
    ax.bar(x, [row[f"{name} mean"] for row in shown], yerr=err, capsize=4, alpha=0.6)
    for i, row in enumerate(shown):
      values = [final_metrics(r)[name] for r in by[row["variant"]].values() if name in final_metrics(r)]
      ax.plot([i] * len(values), values, "k.", alpha=0.6)
    ax.set_xticks(list(x), [row["variant"] for row in shown], rotation=45)
    ax.set_ylabel(name)
    ax.set_title(title)
    written.append(_save(fig, os.path.join(args.results, f"{filename}_{name}.png")))
  return written
