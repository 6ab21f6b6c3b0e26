"""README's expected-results table, generated from docs/results/make_train.json (the records of
the embedded default's runs): per JAX version and train step form, the mean and the range over
its seeds.

  python tools/results_table.py          # rewrites the table between README's markers
  python tools/results_table.py --check  # exits 1 when README's table differs from the records
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "results" / "make_train.json"
README = ROOT / "README.md"
BEGIN, END = "<!-- results table: tools/results_table.py -->", "<!-- end of results table -->"
METRICS = (
  ("fid_fmnist", "{:.1f}"),
  ("class_accuracy", "{:.3f}"),
  ("precision", "{:.3f}"),
  ("recall", "{:.3f}"),
  ("density", "{:.3f}"),
  ("coverage", "{:.3f}"),
)


def cell(values, form) -> str:
  if len(values) == 1:
    return form.format(values[0])
  mean = sum(values) / len(values)
  return f"{form.format(mean)} ({form.format(min(values))}–{form.format(max(values))})"


def build(run: dict) -> str:
  """What rounds a run's numbers: the JAX version, and the train step's form where recorded."""
  return f"{run['jax']}, {run['train_step']}" if "train_step" in run else run["jax"]


def table() -> str:
  runs = json.loads(RECORDS.read_text())["runs"]
  builds = list(dict.fromkeys(build(r) for r in runs))
  lines = [
    "| JAX, train step | seeds | " + " | ".join(name for name, _ in METRICS) + " |",
    "|---|---|" + "---|" * len(METRICS),
  ]
  for label in builds:
    mine = [r for r in runs if build(r) == label]
    seeds = ", ".join(str(r["seed"]) for r in mine)
    cells = [cell([r[name] for r in mine], form) for name, form in METRICS]
    lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def with_table(text: str) -> str:
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv) -> int:
  text = README.read_text()
  updated = with_table(text)
  if "--check" in argv:
    if updated != text:
      print(
        "README.md's results table differs from docs/results/make_train.json: "
        "run python tools/results_table.py"
      )
      return 1
    return 0
  README.write_text(updated)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
