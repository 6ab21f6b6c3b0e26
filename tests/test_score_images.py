"""python -m sagan_jax.evaluate --images: any images (a folder, with or without class subfolders,
or an .npz) scored against a dataset's reference or a statistics file, with one error line for
each kind of bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_faults import ROOT, exits_with_one_line, one_error_line, run_tool

from sagan_jax import evaluate
from sagan_jax.evaluation import references


@pytest.fixture(scope="module")
def config(fake_fmnist_dir, tmp_path_factory):
  from configs import fashion_mnist

  config = fashion_mnist.get_config("smoke")
  config.dataset.data_dir = fake_fmnist_dir
  config.eval.cache_dir = str(tmp_path_factory.mktemp("cache"))
  config.eval.batch_size = 10
  config.eval.reference_samples = 50  # the whole fake test split
  config.eval.fmnist_classifier_epochs = 2  # features, not accuracy
  return config


@pytest.fixture(scope="module")
def reference_images(config):
  """The reference's own images as uint8 (N, 32, 32, 1) and their labels."""
  batches, labels = references.real_batches(config, config.eval.reference_samples)
  images = np.concatenate(batches)[: len(labels)]
  as_uint8 = np.round((images + 1.0) * 127.5).astype(np.uint8)
  np.testing.assert_array_equal(as_uint8.astype(np.float32) / 127.5 - 1.0, images)  # exact in uint8
  return as_uint8, labels


def write_folder(root, images, labels=None):
  for i, image in enumerate(images):
    folder = root if labels is None else root / f"{labels[i]:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0]).save(folder / f"{i:05d}.png")
  return str(root)


METRICS = ["fid_fmnist", "prdc"]


def test_the_reference_images_score_as_the_reference_itself(config, reference_images, tmp_path):
  images, labels = reference_images
  npz = tmp_path / "real.npz"
  np.savez(npz, images=images, labels=labels)
  line = evaluate.score_images(
    config, str(npz), None, METRICS + ["class_accuracy"], str(tmp_path / "m.jsonl"), None
  )
  assert abs(line["fid_fmnist"]) < 1e-4
  assert line["precision"] == line["recall"] == line["coverage"] == 1.0
  assert line["num_samples"] == 50 and line["images"] == str(npz)
  assert line["reference"]["dataset"] == "fashion_mnist" and line["feature_spaces"]["fmnist_classifier"]["id"]
  assert json.loads((tmp_path / "m.jsonl").read_text()) == json.loads(json.dumps(line))

  # The same images as a class-folder tree (python -m sagan_jax.sample's layout): the same numbers.
  folder = write_folder(tmp_path / "classes", images, labels)
  again = evaluate.score_images(config, folder, None, METRICS + ["class_accuracy"], None, None)
  for name in ("fid_fmnist", "precision", "recall", "density", "coverage"):
    assert again[name] == pytest.approx(line[name], abs=1e-6), name  # order: rounding only
  assert again["class_accuracy"] == pytest.approx(line["class_accuracy"])  # same images, other order


def test_a_saved_reference_scores_like_the_dataset(config, reference_images, tmp_path):
  images, _ = reference_images
  shifted = np.clip(images.astype(np.int32) + 40, 0, 255).astype(np.uint8)
  npz = tmp_path / "shifted.npz"
  np.savez(npz, images=shifted)
  stats = str(tmp_path / "fmnist_test.npz")
  from_dataset = evaluate.score_images(config, str(npz), None, METRICS, None, stats)
  from_file = evaluate.score_images(config, str(npz), stats, METRICS, None, None)
  assert from_dataset["fid_fmnist"] > 1.0
  for name in ("fid_fmnist", "precision", "recall", "density", "coverage"):
    assert from_file[name] == from_dataset[name], name
  assert from_file["reference"]["file"] == stats and from_file["reference"]["split"] == "test"


def test_bad_images_and_references_end_in_one_line(config, reference_images, tmp_path, capsys):
  images, labels = reference_images

  def refused(images_path, reference=None, metrics=METRICS):
    return exits_with_one_line(
      evaluate.score_images, capsys, config, images_path, reference, metrics, None, None
    )

  no_images = tmp_path / "no_images.npz"
  np.savez(no_images, pictures=images)
  assert "has no 'images' array (it holds ['pictures'])" in refused(str(no_images))

  small = tmp_path / "small.npz"
  np.savez(small, images=images[:, :28, :28])
  assert "are 28x28x1, the reference's 32x32x1" in refused(str(small))

  rgb = tmp_path / "rgb.npz"
  np.savez(rgb, images=np.repeat(images, 3, axis=-1))
  assert "are 32x32x3, the reference's 32x32x1" in refused(str(rgb))

  few = tmp_path / "few.npz"
  np.savez(few, images=images[:5])
  assert "5 samples are too few for ('fid_fmnist', 'prdc'): use at least 6" in refused(str(few))

  flat = write_folder(tmp_path / "flat", images[:20])
  assert "['class_accuracy'] need each image's class" in refused(flat, metrics=["class_accuracy"])

  other = tmp_path / "other.npz"
  np.savez(other, images=images)
  stats = tmp_path / "stats.npz"
  evaluate.score_images(config, None, None, METRICS, None, str(stats))
  with np.load(stats) as stored:
    fields = dict(stored)
  key = json.loads(str(fields["key"]))
  np.savez(
    tmp_path / "another_classifier.npz",
    **{**fields, "key": json.dumps({**key, "features": "fmnist_classifier-e9"})},
  )
  line = refused(str(other), str(tmp_path / "another_classifier.npz"))
  assert "holds statistics of features 'fmnist_classifier-e9'" in line and "do not compare" in line
  np.savez(tmp_path / "old_format.npz", **{**fields, "key": json.dumps({**key, "format": 0})})
  assert "holds statistics of format 0" in refused(str(other), str(tmp_path / "old_format.npz"))
  assert "is not a reference statistics file (no ['features', 'key'" in refused(str(other), str(no_images))
  assert "--images='/nowhere' does not exist" in refused("/nowhere")


def test_the_command_line_prints_the_metrics_line(config, reference_images, tmp_path):
  images, _ = reference_images
  npz = tmp_path / "real.npz"
  np.savez(npz, images=images)
  args = [
    "sagan_jax.evaluate",
    f"--images={npz}",
    "--config=configs/fashion_mnist.py:smoke",
    f"--config.dataset.data_dir={config.dataset.data_dir}",
    f"--config.eval.cache_dir={config.eval.cache_dir}",
    "--config.eval.batch_size=10",
    "--config.eval.reference_samples=50",
    "--config.eval.fmnist_classifier_epochs=2",
    "--metrics=fid_fmnist",
  ]
  done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  line = json.loads(done.stdout.strip().splitlines()[-1])
  assert abs(line["fid_fmnist"]) < 1e-4 and line["num_samples"] == 50
  code, stderr = run_tool(["sagan_jax.evaluate", f"--images={npz}", "--workdir=W"])
  assert code == 2 and "give one of them" in one_error_line(stderr)
