"""Fashion-MNIST classifier for fid_fmnist: data, caching, features, and (opt-in) its accuracy."""

import gzip
import os
import pathlib

import numpy as np
import pytest

from sagan_jax.data import fashion_mnist
from sagan_jax.errors import UserError
from sagan_jax.evaluation import fmnist_classifier as fc
from sagan_jax.evaluation import metrics

_HAVE_DATA = pathlib.Path(fashion_mnist.SYSTEM_DIR, fashion_mnist.FILES["train"][0]).exists()


def test_images_are_padded_to_32_in_minus_one_one(fake_fmnist_dir):
  images, labels = fc.load_fashion_mnist("test", fake_fmnist_dir)
  assert images.shape == (50, 32, 32, 1) and images.dtype == np.float32
  assert labels.shape == (50,) and labels.dtype == np.int32
  assert images.min() == -1.0 and images.max() == 200 / 127.5 - 1
  border = np.concatenate(
    [images[:, :2].ravel(), images[:, -2:].ravel(), images[:, :, :2].ravel(), images[:, :, -2:].ravel()]
  )
  assert np.all(border == -1.0)


def test_missing_data_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="Fashion-MNIST files not found"):
    fc.load_fashion_mnist("train", data_dir=tmp_path)


def test_classifier_is_trained_once_then_loaded(tmp_path, fake_fmnist_dir, monkeypatch):
  # The fake data's class-dependent bars are learnt in a few dozen steps.
  params, accuracy = fc.get_classifier(tmp_path, epochs=20, data_dir=fake_fmnist_dir)
  assert accuracy > 0.5
  assert len(list(tmp_path.glob("*.npz"))) == 1

  def no_training(*unused_args, **unused_kwargs):
    raise AssertionError("the cached classifier should have been loaded")

  monkeypatch.setattr(fc, "train_classifier", no_training)
  loaded, loaded_accuracy = fc.get_classifier(tmp_path, epochs=20, data_dir=fake_fmnist_dir)
  assert loaded_accuracy == accuracy
  images, labels = fc.load_fashion_mnist("train", fake_fmnist_dir)
  images = np.concatenate([images] * 6)[:1100]  # two batches, the last one padded
  features = fc.classifier_features(loaded, images)
  assert features.shape == (1100, fc.FEATURE_DIM) and features.dtype == np.float32
  np.testing.assert_array_equal(features, fc.classifier_features(params, images))
  # Same images: fid_fmnist is ~0; against one class only it is not.
  reference = metrics.gaussian_stats(features)
  assert abs(fc.fid_fmnist(loaded, images, reference)) < 1e-6
  one_class = fc.load_fashion_mnist("train", fake_fmnist_dir)[0][labels == 3]
  assert fc.fid_fmnist(loaded, one_class, reference) > 1e-2


def test_unwritable_cache_is_a_clear_error(tmp_path, fake_fmnist_dir, monkeypatch):
  monkeypatch.setattr(fc, "train_classifier", lambda *a, **k: ({"params": {}}, 0.5))
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(UserError, match="writable cache directory"):
    fc.get_classifier(blocker / "cache", data_dir=fake_fmnist_dir)


def test_two_processes_writing_the_classifier_at_once_both_succeed(tmp_path, fake_fmnist_dir, monkeypatch):
  """A sweep's parallel runs train and write the same classifier together: here a second
  process (another pid) writes and renames its file while the first is between its own write
  and rename. With one shared temporary name the first rename failed (seen in the sweep test)."""
  monkeypatch.setattr(fc, "train_classifier", lambda *a, **k: ({"w": np.ones(3, np.float32)}, 0.5))
  real_savez, pids = np.savez, iter([101, 202])
  monkeypatch.setattr(fc.os, "getpid", lambda: next(pids))
  other_wrote = []

  def savez_then_another_process_finishes(path, **arrays):
    real_savez(path, **arrays)
    if not other_wrote:
      other_wrote.append(True)
      fc.get_classifier(tmp_path, data_dir=fake_fmnist_dir)  # the other process, start to end

  monkeypatch.setattr(fc.np, "savez", savez_then_another_process_finishes)
  params, accuracy = fc.get_classifier(tmp_path, data_dir=fake_fmnist_dir)
  assert (
    other_wrote
    and accuracy == 0.5
    and [p.name for p in tmp_path.iterdir()] == [fc._cache_path(tmp_path, 4, None, 0, fake_fmnist_dir).name]
  )


def test_cached_classifier_belongs_to_its_data(tmp_path, fake_fmnist_dir, monkeypatch):
  """Other data train their own classifier; the same files in another folder reuse it."""
  from conftest import make_fake_fashion_mnist

  trained = []
  monkeypatch.setattr(
    fc,
    "train_classifier",
    lambda *a, data_dir, **k: (
      trained.append(data_dir) or {"params": {"w": np.full(3, float(len(trained)))}},
      0.5,
    ),
  )
  other = make_fake_fashion_mnist(str(tmp_path / "other"), seed=1)
  copy = tmp_path / "copy"
  copy.mkdir()
  for name in os.listdir(fake_fmnist_dir):
    (copy / name).write_bytes(pathlib.Path(fake_fmnist_dir, name).read_bytes())
  cache = tmp_path / "cache"
  first, _ = fc.get_classifier(cache, epochs=1, data_dir=fake_fmnist_dir)
  second, _ = fc.get_classifier(cache, epochs=1, data_dir=other)
  again, _ = fc.get_classifier(cache, epochs=1, data_dir=str(copy))
  assert trained == [fake_fmnist_dir, other]
  assert float(second["params"]["w"][0]) == 2.0 and float(again["params"]["w"][0]) == 1.0
  assert len(list(cache.glob("*.npz"))) == 2


@pytest.mark.skipif(not _HAVE_DATA, reason=f"Fashion-MNIST IDX files not in {fashion_mnist.SYSTEM_DIR}")
def test_the_standard_data_scores_with_the_shipped_classifier_untrained(tmp_path, monkeypatch):
  """The package's classifier file is named for Debian's Fashion-MNIST files: the metric loads
  it, trains nothing and writes nothing; its recorded accuracy is that of the test images."""

  def no_training(*unused_args, **unused_kwargs):
    raise AssertionError("the shipped classifier should have been loaded")

  monkeypatch.setattr(fc, "train_classifier", no_training)
  params, accuracy = fc.get_classifier(tmp_path)
  assert list(tmp_path.iterdir()) == [] and accuracy >= 0.90
  test_x, test_y = fc.load_fashion_mnist("test")
  assert fc.accuracy_of(params, test_x, test_y) == accuracy


def test_the_data_digest_is_of_the_content_not_the_compressed_files(tmp_path, fake_fmnist_dir):
  """Debian's .gz files and the original ones differ byte for byte but hold the same data:
  the same digest, so the same shipped or cached classifier."""
  recompressed = tmp_path / "recompressed"
  recompressed.mkdir()
  for name in os.listdir(fake_fmnist_dir):
    data = gzip.decompress(pathlib.Path(fake_fmnist_dir, name).read_bytes())
    (recompressed / name).write_bytes(gzip.compress(data, compresslevel=1, mtime=12345))
    assert (recompressed / name).read_bytes() != pathlib.Path(fake_fmnist_dir, name).read_bytes()
  assert fc._data_digest(str(recompressed)) == fc._data_digest(fake_fmnist_dir)


@pytest.mark.skipif(
  not os.environ.get("SAGAN_JAX_SLOW_TESTS"),
  reason="full training takes ~1.5 min on 2 cores; set SAGAN_JAX_SLOW_TESTS=1",
)
@pytest.mark.skipif(not _HAVE_DATA, reason=f"Fashion-MNIST IDX files not in {fashion_mnist.SYSTEM_DIR}")
def test_training_the_default_classifier_afresh_gives_the_shipped_one(tmp_path, monkeypatch):
  """What this code trains reaches 90% and the shipped file's accuracy (bitwise the same file
  on the machine that made it; another CPU or JAX may round differently)."""
  _, shipped_accuracy = fc.get_classifier(tmp_path)
  monkeypatch.setattr(fc, "SHIPPED", tmp_path / "nothing shipped")
  _, accuracy = fc.get_classifier(tmp_path)
  assert accuracy >= 0.90 and abs(accuracy - shipped_accuracy) <= 0.005
