"""Evaluator: metrics.jsonl from a tiny run, the reference-statistics cache, the Inception
metrics (random weights), and the standalone CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_fake_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fmnist_eval_config(data_dir, cache_dir):
  from configs import fashion_mnist

  config = fashion_mnist.get_config("smoke")
  config.dataset.data_dir = data_dir
  config.num_train_steps = 2
  config.checkpoint_every_steps = 1
  config.evals.periodic.every_steps = 1
  config.eval.metrics = ("fid_fmnist",)  # the default also scores class_accuracy, prdc
  config.evals.periodic.num_samples = 20  # two per class
  config.eval.batch_size = 10
  config.eval.cache_dir = cache_dir
  config.eval.fmnist_classifier_epochs = 2  # a few steps on the fake images: features, not accuracy
  return config


@pytest.fixture(scope="module")
def trained_run(fake_fmnist_dir, tmp_path_factory):
  """(config, workdir, final state) of a 2-step run evaluated after each step."""
  from sagan_jax import train

  root = tmp_path_factory.mktemp("evaluator")
  config = _fmnist_eval_config(fake_fmnist_dir, str(root / "cache"))
  workdir = str(root / "run")
  state = train.train_and_evaluate(config, workdir)
  return config, workdir, state


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _event_tags(workdir):
  import tensorflow as tf

  tags = set()
  for name in os.listdir(workdir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        tags.update(v.tag for v in event.summary.value)
  return tags


def _build(config, workdir):
  """(evaluator, programs.Programs) on the local devices."""
  from sagan_jax import programs, sharding
  from sagan_jax.evaluation import evaluator

  mesh = sharding.create_mesh()
  built = programs.programs(config, mesh)
  return evaluator.Evaluator(config, mesh, built.sampler, str(workdir), built.kernels), built


def test_training_writes_one_metrics_line_per_evaluation(trained_run):
  _, workdir, _ = trained_run
  lines = _lines(workdir)
  assert [line["step"] for line in lines] == [1, 2]
  for line in lines:
    assert line["num_samples"] == 20 and line["metrics"] == ["fid_fmnist"]
    assert np.isfinite(line["fid_fmnist"]) and line["fid_fmnist"] > 0
    assert "fid" not in line  # fid_fmnist is never reported as FID
    assert line["sampling"]["weights"] == "ema"
    assert line["sampling"]["sample_bn_stats"] == "standing"
    assert line["reference"]["split"] == "test"
    assert line["reference"]["num_samples"] == 50  # the whole fake test split
    classifier = line["feature_spaces"]["fmnist_classifier"]
    assert classifier["id"].startswith("fmnist_classifier-e2-nall-")
    assert 0 <= classifier["test_accuracy"] <= 1
  assert lines[0]["fid_fmnist"] != lines[1]["fid_fmnist"]  # G changed in between
  assert "fid_fmnist" in _event_tags(workdir)


def test_reference_statistics_are_cached_and_reused(trained_run, tmp_path, monkeypatch):
  from sagan_jax.evaluation import references

  config, workdir, state = trained_run
  fresh, _ = _build(config, tmp_path)
  path = fresh.reference_path("fmnist_classifier")
  assert os.listdir(path.parent) == [path.name]  # written by the run's first evaluation only
  mtime = path.stat().st_mtime_ns

  def no_recompute(*unused_args):
    raise AssertionError("the cached reference statistics should have been loaded")

  monkeypatch.setattr(references, "real_batches", no_recompute)
  scalars = fresh.evaluate(state, 2, 20)
  assert path.stat().st_mtime_ns == mtime
  # Same state, noise and reference as the run's last evaluation: the same number.
  assert scalars["fid_fmnist"] == pytest.approx(_lines(workdir)[-1]["fid_fmnist"], rel=1e-6)
  assert [line["step"] for line in _lines(tmp_path)] == [2]


def test_class_accuracy_and_prdc_go_to_metrics_jsonl_with_their_protocol(trained_run, tmp_path):
  from sagan_jax.evaluation import fmnist_classifier

  config, _, state = trained_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("fid_fmnist", "class_accuracy", "prdc")
  evaluation, _ = _build(config, tmp_path)  # the run's cached classifier and reference
  scalars = evaluation.evaluate(state, 2, 20)
  assert set(scalars) == {"fid_fmnist", "class_accuracy", "precision", "recall", "density", "coverage"}
  (line,) = _lines(tmp_path)
  assert line["metrics"] == ["fid_fmnist", "class_accuracy", "prdc"]
  for name in ("class_accuracy", "precision", "recall", "coverage"):
    assert 0 <= line[name] <= 1, (name, line[name])
  assert line["density"] >= 0
  per_class, confusion = line["class_accuracy_per_class"], np.array(line["class_confusion"])
  assert len(per_class) == 10 and confusion.shape == (10, 10)
  assert confusion.sum(axis=1).tolist() == [2] * 10  # 20 samples, labels cycling over the classes
  assert np.mean(per_class) == pytest.approx(line["class_accuracy"])
  assert line["prdc_protocol"]["k"] == 5
  assert line["prdc_protocol"]["num_real"] == 50 and line["prdc_protocol"]["num_fake"] == 20
  assert 0 < line["prdc_protocol"]["coverage_if_identical"] < 1

  # The real reference images themselves, scored as samples with their own labels: the
  # classifier's test accuracy (the whole fake test split) and the identical-set values.
  images, labels = fmnist_classifier.load_fashion_mnist("test", config.dataset.data_dir)
  real_scalars, details = evaluation.score(evaluation.image_features(images), labels, config.eval.metrics)
  test_accuracy = line["feature_spaces"]["fmnist_classifier"]["test_accuracy"]
  assert real_scalars["class_accuracy"] == pytest.approx(test_accuracy, abs=1e-9)
  assert abs(real_scalars["fid_fmnist"]) < 1e-3
  assert real_scalars["precision"] == real_scalars["recall"] == real_scalars["coverage"] == 1.0
  assert real_scalars["density"] == pytest.approx(1.0, abs=0.05)
  assert details["prdc_protocol"]["num_fake"] == 50


def test_a_noise_seed_scores_other_samples_and_record_false_writes_nothing(trained_run, tmp_path):
  config, _, state = trained_run
  evaluation, _ = _build(config, tmp_path)
  default = evaluation.evaluate(state, 2, 20)
  again = evaluation.evaluate(state, 2, 20, noise_seed=evaluation.noise_seed(), record=False)
  other = evaluation.evaluate(state, 2, 20, noise_seed=evaluation.noise_seed() + 1, record=False)
  assert again == default  # the run's own seed: the same samples, the same figure
  assert other["fid_fmnist"] != default["fid_fmnist"]
  (line,) = _lines(tmp_path)  # only the recorded evaluation
  assert line["noise_seed"] == evaluation.noise_seed()


def test_inception_metrics_on_a_tiny_rgb_config(fake_fmnist_dir, tmp_path, monkeypatch):
  from configs import fashion_mnist
  from sagan_jax.evaluation import inception, metrics, registry, spaces

  config = fashion_mnist.get_config("smoke")
  # Two classes of four test images: the reference holds two of each, as intra-FID needs.
  config.dataset.data_dir = make_fake_fashion_mnist(
    str(tmp_path / "data"), n_train=8, n_test=4, num_classes=2
  )
  config.model.image_channels = 3
  config.model.num_classes = 2
  config.sample_bn_stats = "running"  # the sampler is not under test here: compile less
  config.eval.metrics = ("fid", "is", "intra_fid", "kid", "prdc_inception")
  config.eval.batch_size = 4  # Inception runs at ~3 images/s on a CPU
  config.eval.reference_samples = 4
  config.eval.is_splits = 2
  config.eval.kid_subsets, config.eval.kid_subset_size, config.eval.prdc_k = 3, 3, 2
  config.eval.cache_dir = str(tmp_path / "cache")
  monkeypatch.setattr(
    spaces,
    "inception_space",
    lambda unused_config: spaces.FeatureSpace(
      "inception",
      "random-seed0",
      lambda v, x: inception.FIDInceptionV3().apply(v, x),
      inception.random_variables(),
      {"weights": "random"},
    ),
  )
  calls = []

  def cheap_frechet(mu1, sigma1, mu2, sigma2):
    # scipy's sqrtm of a 2048x2048 product takes over a minute on 2 cores; test_metrics checks it.
    calls.append((mu1.shape, sigma1.shape, mu2.shape, sigma2.shape))
    return float(np.sum((mu1 - mu2) ** 2))

  monkeypatch.setattr(metrics, "frechet_distance", cheap_frechet)
  evaluation, built = _build(config, tmp_path / "run")
  state = built.init()
  scalars = evaluation.evaluate(state, 0, 4)
  prdc_inception = {f"{name}_inception" for name in ("precision", "recall", "density", "coverage")}
  assert set(scalars) == {"fid", "is", "is_std", "intra_fid", "kid", "kid_std", *prdc_inception}
  assert set(scalars) == {s for m in config.eval.metrics for s in registry.get(m).scalars}  # as declared
  assert all(np.isfinite(v) for v in scalars.values())
  assert scalars["fid"] > 0 and scalars["is"] >= 1.0
  # One global and one per-class distance per class, all in the 2048-d pool space.
  assert calls == [((2048,), (2048, 2048), (2048,), (2048, 2048))] * 3
  (line,) = _lines(tmp_path / "run")
  assert len(line["intra_fid_per_class"]) == 2
  assert scalars["intra_fid"] == pytest.approx(np.mean(line["intra_fid_per_class"]))
  assert line["feature_spaces"]["inception"]["id"] == "random-seed0"
  assert line["is_splits"] == 2 and line["reference"]["num_samples"] == 4
  assert line["kid_protocol"]["subset_size"] == 3 and line["prdc_inception_protocol"]["k"] == 2


def test_missing_checkpoints_are_clear_errors(trained_run, tmp_path):
  from sagan_jax import evaluate
  from sagan_jax.errors import UserError

  config, workdir, _ = trained_run
  with pytest.raises(UserError, match="no checkpoint in .*train first"):
    evaluate.evaluate_checkpoint(config, str(tmp_path))
  with pytest.raises(UserError, match=r"no checkpoint of step 7 .* holds steps \[1, 2\]"):
    evaluate.evaluate_checkpoint(config, workdir, step=7)
  other = config.copy_and_resolve_references()
  other.model.ch = 8
  with pytest.raises(UserError, match=r"holds a run of another model: model.ch \(4 in the workdir, 8 now\)"):
    evaluate.evaluate_checkpoint(other, workdir)
  with pytest.raises(UserError, match="config.json does not exist"):
    evaluate.evaluate_checkpoint(None, str(tmp_path))


def test_cli_scores_a_named_checkpoint_with_the_runs_own_config(trained_run):
  _, workdir, _ = trained_run
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
    [sys.executable, "-m", "sagan_jax.evaluate", f"--workdir={workdir}", "--step=1", "--num_samples=20"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = _lines(workdir)
  assert lines[-1]["step"] == 1 and lines[-1]["num_samples"] == 20
  # The checkpoint of step 1 scores what training measured at step 1.
  assert lines[-1]["fid_fmnist"] == pytest.approx(lines[0]["fid_fmnist"], rel=1e-6)


MULTI_DEVICE_SCRIPT = """
import functools, json, sys, tempfile
sys.path.insert(0, "tests")
import jax
from conftest import make_fake_fashion_mnist
from configs import fashion_mnist
from sagan_jax import programs, sampling, sharding
from sagan_jax.evaluation import evaluator
assert jax.device_count() == 4, jax.devices()
tmp = tempfile.mkdtemp()
config = fashion_mnist.get_config("smoke")
config.dataset.data_dir = make_fake_fashion_mnist(tmp + "/data")
config.eval.cache_dir = tmp + "/cache"
config.eval.fmnist_classifier_epochs = 1
config.eval.batch_size = 8
scores = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = sharding.create_mesh(devices)
  g, d = programs.build_models(config)
  built = programs.programs(config, mesh)
  run = evaluator.Evaluator(config, mesh, built.sampler, f"{tmp}/run{len(devices)}", built.kernels)
  state = built.init()
  scores.append(run.evaluate(state, 0, 20)["fid_fmnist"])
print(json.dumps(scores))
"""


@pytest.mark.skipif(
  not os.environ.get("SAGAN_JAX_SLOW_TESTS"), reason="~70 s on 2 cores; set SAGAN_JAX_SLOW_TESTS=1"
)
def test_four_simulated_devices_score_like_one():
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  proc = subprocess.run(
    [sys.executable, "-c", MULTI_DEVICE_SCRIPT],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  one, four = json.loads(proc.stdout.splitlines()[-1])
  assert four == pytest.approx(one, rel=1e-5)


def test_a_degrading_run_keeps_its_best_checkpoint(fake_fmnist_dir, tmp_path, monkeypatch):
  """fid_fmnist scripted to improve, then degrade (as SN-on-D-only runs do in the paper's Fig. 3):
  workdir/best keeps the best step's state through rotation and a resume, and the tools open it
  with --step=best."""
  import jax

  from sagan_jax import run, train
  from sagan_jax.evaluation import evaluator

  scripted = {1: 5.0, 2: 3.0, 3: 4.0, 4: 6.0, 5: 3.5, 6: 2.0}
  monkeypatch.setattr(
    evaluator.Evaluator,
    "evaluate",
    lambda self, state, step, *args, **kwargs: {"fid_fmnist": scripted[step]},
  )
  config = _fmnist_eval_config(fake_fmnist_dir, str(tmp_path / "cache"))
  config.num_train_steps, config.keep_checkpoints = 4, 1
  config.best_metric, config.best_mode = "fid_fmnist", "min"
  workdir = str(tmp_path / "run")
  kept = {}

  def keep_step_2(step, state, unused_metrics):
    if step == 2:  # a host copy: the step donates the state's buffers
      kept["ema_params"] = jax.device_get(state.ema_params)

  train.train_and_evaluate(config, workdir, hooks=[keep_step_2])
  assert os.listdir(os.path.join(workdir, "best")) == ["2"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]  # rotation left best alone
  best = run.open_run(workdir, "best")
  assert best.step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(best.state.ema_params), kept["ema_params"])

  config.num_train_steps = 6  # resumed: 3.5 does not beat the kept 3.0, 2.0 does
  train.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, "best")) == ["6"]
  assert run.open_run(workdir, "best").step == 6
  code = subprocess.run(
    [
      sys.executable,
      "-m",
      "sagan_jax.visualize",
      f"--workdir={workdir}",
      "--step=best",
      "--network=generator",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert code.returncode == 0 and "step_00000006_generator.png" in code.stdout, code.stderr[-2000:]
