"""The ablation sweeps: one table row per variant with a 2-step budget; reruns skip finished ones."""
import csv
import os
import subprocess
import sys

import pytest

SLOW = bool(os.environ.get("SAGAN_JAX_SLOW_TESTS"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(script, out, data_dir, cache_dir, *extra):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", script),
         "--base_config=configs/fashion_mnist.py:smoke", "--steps=2", f"--out={out}",
         "--eval_samples=20", f"--set=dataset.data_dir={data_dir}", f"--set=eval_cache_dir={cache_dir}",
         "--set=eval_metrics=('fid_fmnist',)", "--set=eval_batch_size=10",
         "--set=eval_fmnist_classifier_epochs=1", "--set=eval_fmnist_classifier_num_train=200",
         "--set=model.z_dim=8", *extra]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                        env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def eval_cache(tmp_path_factory):
  """One fid_fmnist classifier and reference statistics for both sweeps."""
  return str(tmp_path_factory.mktemp("eval_cache"))


def _rows(out):
  with open(os.path.join(out, "results.csv")) as f:
    return list(csv.DictReader(f))


def test_attention_placement_sweep(tmp_path, fake_fmnist_dir, eval_cache):
  """The default suite trains the control variant (all seven with SAGAN_JAX_SLOW_TESTS=1); the
  control's parameter count is tested against attention's in tests/test_visualize.py."""
  out = str(tmp_path / "table1")
  only = [] if SLOW else ["--only=residual16"]
  expected = (["none", "feat8", "feat16", "feat32", "residual8", "residual16", "residual32"] if SLOW
              else ["residual16"])
  proc = _sweep("attention_placement.py", out, fake_fmnist_dir, eval_cache, *only)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  rows = _rows(out)
  assert [r["variant"] for r in rows] == expected  # sweep order
  assert all(r["status"] == "finished" and r["fid_fmnist"] for r in rows), rows
  by = {r["variant"]: r for r in rows}
  assert int(by["residual16"]["G params"]) > 0 and int(by["residual16"]["D params"]) > 0
  if SLOW:
    assert by["feat16"]["G params"] == by["residual16"]["G params"]
    assert by["feat32"]["D params"] == by["none"]["D params"]  # 32×32 D has no 32 side: G only
  assert os.path.exists(os.path.join(out, "results.md"))
  assert os.path.exists(os.path.join(out, "attention_placement_fid_fmnist.png"))

  again = _sweep("attention_placement.py", out, fake_fmnist_dir, eval_cache, *only)
  assert again.returncode == 0
  assert again.stdout.count("finished earlier; not retrained") == len(expected)
  assert _rows(out) == rows


def test_attention_placement_variants_32():
  """32×32: feat8/16/32 and their controls; D has no 32×32 map, so feat32 is G only."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import attention_placement
  from configs import fashion_mnist
  variants = {v.name: v.overrides for v in attention_placement.variants(fashion_mnist.get_config())}
  assert list(variants) == ["none", "feat8", "feat16", "feat32", "residual8", "residual16", "residual32"]
  assert variants["feat32"]["model.d_attention_resolutions"] == ()
  assert "model.d_attention_resolutions" not in variants["feat16"]
  assert variants["residual16"]["model.attention_block"] == "residual"


def test_attention_placement_lists_the_paper_variants(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "attention_placement.py"),
                         "--base_config=configs/sagan128.py", f"--out={tmp_path}", "--print_commands"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  workdirs = [l.split("--workdir=")[1].split()[0].rsplit("/", 1)[1] for l in lines]
  assert workdirs == ["none", "feat8", "feat16", "feat32", "feat64",
                      "residual8", "residual16", "residual32", "residual64"]


def test_stabilization_sweep(tmp_path, fake_fmnist_dir, eval_cache):
  """The default suite trains the 5:1 variant (all four with SAGAN_JAX_SLOW_TESTS=1)."""
  out = str(tmp_path / "fig3")
  expected = ["sn_d_1to1", "sn_d_5to1", "sn_gd_1to1", "sn_gd_ttur"] if SLOW else ["sn_d_5to1"]
  proc = _sweep("stabilization.py", out, fake_fmnist_dir, eval_cache, "--eval_points=2",
                f"--only={','.join(expected)}")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  rows = _rows(out)
  assert [r["variant"] for r in rows] == expected
  assert all(r["status"] == "finished" and r["fid_fmnist"] for r in rows), rows
  assert os.path.exists(os.path.join(out, "stabilization_fid_fmnist.png"))
  import json
  with open(os.path.join(out, "sn_d_5to1", "result.json")) as f:
    assert [e["step"] for e in json.load(f)["evaluations"]] == [1, 2]
  with open(os.path.join(out, "sn_d_5to1", "config.json")) as f:
    config = json.load(f)
  assert (config["d_steps_per_g_step"], config["model"]["g_spectral_norm"]) == (5, False)
  assert config["optimizer"]["g_lr"] == config["optimizer"]["d_lr"]


def test_stabilization_lists_the_paper_variants(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "stabilization.py"),
                         "--base_config=configs/sagan128.py", f"--out={tmp_path}", "--print_commands"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 4
  assert "--config.d_steps_per_g_step=5" in lines[1] and "--config.optimizer.d_lr=0.0001" in lines[1]
  assert "--config.optimizer.d_lr=0.0004" in lines[3] and "--config.optimizer.g_lr=0.0001" in lines[3]
