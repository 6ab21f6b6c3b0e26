"""The ablation sweeps (python -m sagan_jax.ablations): one table row per variant with a 2-step
budget; reruns skip finished ones."""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sagan_jax import cli
from sagan_jax.ablations import records
from sagan_jax.ablations.variants import Job, Variant, attention_placement_variants

SLOW = bool(os.environ.get("SAGAN_JAX_SLOW_TESTS"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(name, out, data_dir, cache_dir, *extra):
  cmd = [
    sys.executable,
    "-m",
    "sagan_jax.ablations",
    f"--sweep={name}",
    "--base_config=configs/fashion_mnist.py:smoke",
    "--steps=2",
    f"--out={out}",
    "--eval_samples=20",
    f"--set=dataset.data_dir={data_dir}",
    f"--set=eval.cache_dir={cache_dir}",
    "--set=eval.metrics=('fid_fmnist',)",
    "--set=eval.batch_size=10",
    "--set=eval.fmnist_classifier_epochs=1",
    "--set=eval.fmnist_classifier_num_train=200",
    "--set=model.z_dim=8",
    *extra,
  ]
  return subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=dict(os.environ, PYTHONPATH=ROOT)
  )


@pytest.fixture(scope="module")
def eval_cache(tmp_path_factory):
  """One fid_fmnist classifier and reference statistics for both sweeps."""
  return str(tmp_path_factory.mktemp("eval_cache"))


def _rows(out):
  with open(os.path.join(out, "results.csv")) as f:
    return list(csv.DictReader(f))


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_attention_placement_sweep_over_seeds(tmp_path, fake_fmnist_dir, eval_cache):
  """Two seeds of the baseline and its control, two runs at a time (all seven variants with
  SAGAN_JAX_SLOW_TESTS=1): intervals over seeds, the paired comparison, reuse and resume."""
  out, results = str(tmp_path / "table1"), str(tmp_path / "record")
  expected = (
    ["none", "feat8", "feat16", "feat32", "residual8", "residual16", "residual32"]
    if SLOW
    else ["feat16", "residual16"]
  )
  args = ["--seeds=2", "--parallel=2", f"--results={results}", f"--only={','.join(expected)}"]
  proc = _sweep("table1", out, fake_fmnist_dir, eval_cache, *args)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  rows = _rows(results)
  assert [r["variant"] for r in rows] == expected  # sweep order
  for r in rows:
    assert r["seeds"] == "2" and float(r["fid_fmnist ci_low"]) <= float(r["fid_fmnist mean"]) <= float(
      r["fid_fmnist ci_high"]
    )
  by = {r["variant"]: r for r in rows}
  assert int(by["residual16"]["G params"]) > 0 and by["feat16"]["G params"] == by["residual16"]["G params"]
  if SLOW:
    assert by["feat32"]["D params"] == by["none"]["D params"]  # 32×32 D has no 32 side: G only
  paired = {(r["variant"], r["metric"]): r for r in _read_csv(os.path.join(results, "paired.csv"))}
  assert paired[("residual16", "fid_fmnist")]["pairs"] == "2"
  assert paired[("residual16", "fid_fmnist")]["verdict"]
  with open(os.path.join(out, "feat16", "seed1", "config.json")) as f:
    assert json.load(f)["seed"] == 1
  table = open(os.path.join(results, "results.md")).read()
  assert "Paired with `feat16`" in table and "| residual16 | fid_fmnist | 2 |" in table
  for name in ("attention_placement_fid_fmnist.png", "attention_placement_curves_fid_fmnist.png"):
    assert os.path.exists(os.path.join(results, name))

  # A run without its record (cut short after training) resumes from its workdir.
  os.remove(os.path.join(results, "runs", "residual16", "seed1.json"))
  os.remove(os.path.join(out, "residual16", "seed1", "result.json"))
  resumed = _sweep("table1", out, fake_fmnist_dir, eval_cache, *args)
  assert resumed.returncode == 0, resumed.stdout[-2000:]
  assert resumed.stdout.count("finished earlier; not retrained") == 2 * len(expected) - 1
  assert os.path.exists(os.path.join(results, "runs", "residual16", "seed1.json"))

  # --report_only trains nothing and names what has not run; the tables keep every finished
  # record, also of the seeds and variants the command did not name.
  if not SLOW:
    report = _sweep(
      "table1",
      out,
      fake_fmnist_dir,
      eval_cache,
      "--seeds=1",
      "--first_seed=1",
      f"--results={results}",
      "--only=none,residual16",
      "--report_only",
    )
    assert report.returncode == 0 and "sagan_jax.main" not in report.stdout
    table = open(os.path.join(results, "results.md")).read()
    assert "none seed 1: not run yet" in table and "seeds 0, 1," in table
    assert [(r["variant"], r["seeds"]) for r in _rows(results)] == [(v, "2") for v in expected]
    assert "| residual16 | fid_fmnist | 2 |" in table

  # The small record files alone are enough: nothing is retrained without the workdirs.
  shutil.rmtree(out)
  again = _sweep("table1", out, fake_fmnist_dir, eval_cache, *args)
  assert again.returncode == 0
  assert again.stdout.count("finished earlier; not retrained") == 2 * len(expected)
  no_wall = lambda rows: [{k: v for k, v in r.items() if k != "wall min/run"} for r in rows]
  assert no_wall(_rows(results)) == no_wall(rows)  # the resumed run kept its evaluations

  # Fig. 3's SN on G/D + TTUR is the base config itself: the Table 1 runs of feat16 are taken.
  fig3 = str(tmp_path / "fig3")
  reused = _sweep(
    "fig3",
    str(tmp_path / "fig3_runs"),
    fake_fmnist_dir,
    eval_cache,
    "--seeds=2",
    "--eval_points=1",
    "--only=sn_gd_ttur",
    f"--results={fig3}",
    f"--reuse={results}",
  )
  assert reused.returncode == 0, reused.stdout[-2000:] + reused.stderr[-2000:]
  assert reused.stdout.count("the same config ran as") == 2 and "sagan_jax.main" not in reused.stdout
  assert _rows(fig3)[0]["fid_fmnist mean"] == by["feat16"]["fid_fmnist mean"]


def test_attention_placement_variants_32():
  """32×32: feat8/16/32 and their controls; D has no 32×32 map, so feat32 is G only."""
  from configs import fashion_mnist

  variants = {v.name: v.overrides for v in attention_placement_variants(fashion_mnist.get_config())}
  assert list(variants) == ["none", "feat8", "feat16", "feat32", "residual8", "residual16", "residual32"]
  assert variants["feat32"]["model.d_attention_resolutions"] == ()
  assert "model.d_attention_resolutions" not in variants["feat16"]
  assert variants["residual16"]["model.attention_block"] == "residual"


def test_reuse_completes_a_record_written_before_a_field_existed(tmp_path):
  """A record's config without a field added since (ema_schedule) is the run that field's
  old value reproduces: reused for a job at that value, not for one at another."""
  other = tmp_path / "other"
  job = Job(Variant("feat16", "attention at 16", {}), 0)

  def args(*sets):
    return argparse.Namespace(
      base_config="configs/fashion_mnist.py:smoke",
      steps=2,
      eval_points=1,
      eval_samples=20,
      set=list(sets),
      reuse=[str(other)],
      results=str(tmp_path / "results"),
      out=str(tmp_path / "out"),
    )

  old = records.run_config(args("ema_schedule=constant"), job)
  del old["ema_schedule"], old["ema_power_gamma"]
  (other / "runs" / "feat16").mkdir(parents=True)
  (other / "runs" / "feat16" / "seed0.json").write_text(json.dumps({"config": old, "evaluations": []}))
  assert records._reused(args("ema_schedule=constant"), job)["reused_from"].endswith("seed0.json")
  assert records._reused(args("ema_schedule=power"), job) is None


def test_attention_placement_lists_the_paper_variants(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sagan_jax.ablations",
      "--sweep=table1",
      "--base_config=configs/sagan128.py",
      f"--out={tmp_path}",
      "--print_commands",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  workdirs = [line.split("--workdir=")[1].split()[0].split("/")[-2] for line in lines]
  assert workdirs == [
    "none",
    "feat8",
    "feat16",
    "feat32",
    "feat64",
    "residual8",
    "residual16",
    "residual32",
    "residual64",
  ]


def test_stabilization_sweep(tmp_path, fake_fmnist_dir, eval_cache):
  """The default suite trains SN on D alone at equal rates (all four with SAGAN_JAX_SLOW_TESTS=1).

  Not 5:1 by default: its five unrolled D updates take ~4 min to compile on 2 cores even at
  -O0. Its command line is checked by test_stabilization_lists_the_paper_variants, and several
  D updates per step train end to end in test_robustness's resume test."""
  out = str(tmp_path / "fig3")
  expected = ["sn_d_1to1", "sn_d_5to1", "sn_gd_1to1", "sn_gd_ttur"] if SLOW else ["sn_d_1to1"]
  proc = _sweep("fig3", out, fake_fmnist_dir, eval_cache, "--eval_points=2", f"--only={','.join(expected)}")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  rows = _rows(out)
  assert [r["variant"] for r in rows] == expected, proc.stdout[-2000:]
  assert all(r["seeds"] == "1" and r["fid_fmnist mean"] for r in rows), rows
  assert os.path.exists(os.path.join(out, "stabilization_fid_fmnist.png"))
  trained = expected[0]
  with open(os.path.join(out, "runs", trained, "seed0.json")) as f:
    assert [e["step"] for e in json.load(f)["evaluations"]] == [1, 2]
  with open(os.path.join(out, trained, "seed0", "config.json")) as f:
    config = json.load(f)
  assert (config["d_steps_per_g_step"], config["model"]["g_spectral_norm"]) == (1, False)
  assert config["model"]["d_spectral_norm"]
  assert config["optimizer"]["g_lr"] == config["optimizer"]["d_lr"]


def test_a_failed_run_fails_the_sweep_with_its_error(tmp_path, eval_cache):
  """A run that fails (here: no data) makes the sweep exit 1 with one error line that names the
  run, its log and the run's own error, after the tables of what finished are written."""
  out, results = str(tmp_path / "table1"), str(tmp_path / "record")
  proc = _sweep("table1", out, str(tmp_path / "no_data"), eval_cache, "--only=none", f"--results={results}")
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1, proc.stderr[-2000:]
  assert "1 run(s) failed: none seed 0 failed (exit 2; see " in error[0]
  assert "train.log): error: Fashion-MNIST files not found" in error[0]
  assert "rerun the same command" in error[0]
  assert "none seed 0: failed" in open(os.path.join(results, "results.md")).read()
  assert not os.path.exists(os.path.join(results, "runs", "none", "seed0.json"))


def _processes_naming(text: str) -> list:
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if text.encode() in f.read():
          found.append(int(pid))
    except OSError:
      pass
  return found


def test_sigterm_stops_the_sweep_and_its_runs(tmp_path, fake_fmnist_dir):
  """A scheduler's SIGTERM to the sweep stops the run it trains too (no orphan left training)."""
  out = str(tmp_path / "table1")
  cmd = [
    sys.executable,
    "-m",
    "sagan_jax.ablations",
    "--sweep=table1",
    "--base_config=configs/fashion_mnist.py:smoke",
    "--steps=1000",
    f"--out={out}",
    f"--results={tmp_path / 'record'}",
    f"--set=dataset.data_dir={fake_fmnist_dir}",
    "--only=none",
  ]
  sweep = subprocess.Popen(
    cmd,
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=dict(os.environ, PYTHONPATH=ROOT),
  )
  run_dir = os.path.join(out, "none", "seed0")
  deadline = time.time() + 120
  while not _processes_naming(f"--workdir={run_dir}") and time.time() < deadline:
    time.sleep(0.2)
  assert _processes_naming(f"--workdir={run_dir}"), "the sweep never started its run"
  sweep.send_signal(signal.SIGTERM)
  sweep.communicate(timeout=120)
  assert sweep.returncode == 128 + signal.SIGTERM
  assert not _processes_naming(f"--workdir={run_dir}")


def test_stabilization_lists_the_paper_variants(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sagan_jax.ablations",
      "--sweep=fig3",
      "--base_config=configs/sagan128.py",
      f"--out={tmp_path}",
      "--print_commands",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 4 and all("--config.seed=0" in line for line in lines)
  assert "--config.d_steps_per_g_step=5" in lines[1] and "--config.optimizer.d_lr=0.0001" in lines[1]
  assert "--config.optimizer.d_lr=0.0004" in lines[3] and "--config.optimizer.g_lr=0.0001" in lines[3]


def test_a_variants_learning_rates_win_over_a_set_of_the_base(tmp_path):
  # --set optimizer.*_lr pins the base's TTUR; the equal-rate variants still train at lr_G for both.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sagan_jax.ablations",
      "--sweep=fig3",
      f"--out={tmp_path}",
      "--print_commands",
      "--set",
      "optimizer.g_lr=2e-4",
      "--set",
      "optimizer.d_lr=4e-4",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 4
  for line in lines[:3]:  # sn_d_1to1, sn_d_5to1, sn_gd_1to1: lr_G (2e-4) for both
    assert "--config.optimizer.d_lr=0.0002" in line and "d_lr=0.0004" not in line, line
  assert "--config.optimizer.d_lr=0.0004" in lines[3] and lines[3].count("optimizer.d_lr") == 1


def test_print_commands_gives_one_launch_per_variant_and_seed(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sagan_jax.ablations",
      "--sweep=fig3",
      "--base_config=configs/sagan128.py",
      f"--out={tmp_path}",
      "--print_commands",
      "--seeds=3",
      "--first_seed=5",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 12
  assert [line.split("--config.seed=")[1].split()[0] for line in lines[::4]] == ["5", "6", "7"]
  assert f"--workdir={tmp_path}/sn_gd_ttur/seed7" in lines[-1]


def test_a_record_of_another_config_is_refused_not_mixed_in(tmp_path, capsys):
  """A finished run's record counts only for the config it trained (paths aside); for another
  one the sweep stops with an error instead of averaging two recipes."""
  job = Job(Variant("feat16", "attention at 16", {}), 0)

  def args(*sets):
    return argparse.Namespace(
      base_config="configs/fashion_mnist.py:smoke",
      steps=2,
      eval_points=1,
      eval_samples=20,
      set=list(sets),
      reuse=[],
      results=str(tmp_path / "results"),
      out=str(tmp_path / "out"),
    )

  recorded = records.run_config(args("optimizer.g_lr=1e-4"), job)
  recorded["dataset"]["data_dir"] = "/elsewhere/fashion-mnist"  # another machine's path
  record = tmp_path / "results" / "runs" / "feat16" / "seed0.json"
  record.parent.mkdir(parents=True)
  record.write_text(json.dumps({"config": recorded, "evaluations": [], "status": "finished"}))
  assert records.finished(args("optimizer.g_lr=1e-4"), job)["status"] == "finished"
  with pytest.raises(SystemExit) as stopped:
    cli.run(records.finished, args("optimizer.g_lr=2e-4"), job)
  assert stopped.value.code == 2
  error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and re.match(
    r"error: .*seed0.json is a run of another config "
    r"\(optimizer.g_lr 0.0001 there, 0.0002 now\)",
    error[0],
  )
  assert json.loads(record.read_text())["config"] == recorded  # left as it was


@pytest.mark.parametrize(
  "flags, said",
  [
    (["--sweep=table2"], "--sweep"),
    (["--sweep=fig3", "--baseline=feat16"], "--baseline 'feat16' is no variant"),
    (["--sweep=fig3", "--set", "model.no_such_field=1"], "the config has no field 'model.no_such_field'"),
  ],
)
def test_a_users_mistake_is_one_error_line(tmp_path, flags, said):
  proc = subprocess.run(
    [sys.executable, "-m", "sagan_jax.ablations", f"--out={tmp_path}", "--print_commands", *flags],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and said in error[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
