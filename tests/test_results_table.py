"""README's expected-results table is the one tools/results_table.py makes from the records."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import results_table  # noqa: E402


def test_readme_shows_the_table_the_records_give():
  text = results_table.README.read_text()
  assert results_table.with_table(text) == text, "run python tools/results_table.py"


def test_the_table_is_mean_and_range_of_the_records(tmp_path, monkeypatch):
  records = tmp_path / "make_train.json"
  runs = [
    {"jax": "9.9", "seed": s, **{m: v for m, _ in results_table.METRICS}} for s, v in ((0, 0.5), (1, 0.7))
  ]
  records.write_text(json.dumps({"runs": runs}))
  monkeypatch.setattr(results_table, "RECORDS", records)
  row = results_table.table().splitlines()[-1]
  assert row.startswith("| 9.9 | 0, 1 | 0.6 (0.5–0.7) | 0.600 (0.500–0.700) |")


def test_runs_of_another_train_step_form_are_another_row(tmp_path, monkeypatch):
  records = tmp_path / "make_train.json"
  metrics = {m: 0.5 for m, _ in results_table.METRICS}
  runs = [
    {"jax": "9.9", "train_step": "per-array updates", "seed": 0, **metrics},
    {"jax": "9.9", "train_step": "flat updates", "seed": 0, **metrics},
  ]
  records.write_text(json.dumps({"runs": runs}))
  monkeypatch.setattr(results_table, "RECORDS", records)
  rows = results_table.table().splitlines()[2:]
  assert [row.split(" | ")[0] for row in rows] == ["| 9.9, per-array updates", "| 9.9, flat updates"]
