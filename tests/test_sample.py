"""A trained run used without its dataset: sagan_jax.load's API and python -m sagan_jax.sample."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fake_fmnist_dir):
  """A 4-step smoke run whose dataset is gone: sampling must not need it."""
  from configs import fashion_mnist
  from sagan_jax import train

  config = fashion_mnist.get_config("smoke")
  data = str(tmp_path_factory.mktemp("data"))
  for name in os.listdir(fake_fmnist_dir):
    shutil.copy(os.path.join(fake_fmnist_dir, name), data)
  config.dataset.data_dir = data
  workdir = str(tmp_path_factory.mktemp("sample") / "run")
  train.train_and_evaluate(config, workdir)
  shutil.rmtree(data)
  return workdir


@pytest.fixture(scope="module")
def model(run_dir):
  import sagan_jax

  return sagan_jax.load(run_dir)


def test_generate_is_seeded_and_independent_of_the_batch_it_shares(model):
  labels = np.arange(20) % 10
  z = model.noise(20, seed=5)
  all_at_once = model.generate(labels, z, output="float")
  assert all_at_once.shape == (20, 32, 32, 1) and all_at_once.dtype == np.float32
  assert np.abs(all_at_once).max() <= 1 and all_at_once.std() > 0
  np.testing.assert_allclose(model.generate(labels[3:6], z[3:6], output="float"), all_at_once[3:6], atol=1e-6)
  batch_size, model.batch_size = model.batch_size, 8  # batches of 8, the last one padded
  try:
    np.testing.assert_allclose(model.generate(labels, z, output="float"), all_at_once, atol=1e-6)
  finally:
    model.batch_size = batch_size
  seeded = model.generate(labels, seed=5)
  assert seeded.dtype == np.uint8
  np.testing.assert_array_equal(seeded, np.clip(np.round((all_at_once + 1) * 127.5), 0, 255).astype(np.uint8))
  assert not np.array_equal(model.generate(labels, seed=6), seeded)


def test_class_weights_interpolate_between_the_classes_generated(model):
  z = np.repeat(model.noise(1, seed=2), 3, axis=0)
  ends = model.generate([1, 7, 7], z, output="float")
  mixed = model.generate(model.class_weights(1, 7, [0.0, 1.0, 0.5]), z, output="float")
  np.testing.assert_allclose(mixed[:2], ends[:2], atol=1e-5)
  assert not np.allclose(mixed[2], ends[0]) and not np.allclose(mixed[2], ends[1])


def test_attention_maps_are_softmax_rows_of_the_generated_images(model):
  images, maps = model.attention([0, 9, 4], seed=1)
  np.testing.assert_allclose(images, model.generate([0, 9, 4], seed=1, output="float"), atol=1e-6)
  assert list(maps) and all(beta.shape[0] == 3 for beta in maps.values())
  for beta in maps.values():
    np.testing.assert_allclose(beta.sum(-1), 1.0, atol=1e-5)


def test_discriminate_is_d_forward_in_eval_mode(model):
  import jax

  from sagan_jax.models.layers import SPECTRAL

  images = model.generate([2, 3, 8], seed=0)
  logits = model.discriminate(images, [2, 3, 8])
  assert logits.shape == (3,) and logits.dtype == np.float32
  state = model.run.state
  direct = model.run.programs.discriminator.apply(
    {"params": jax.device_get(state.d_params), SPECTRAL: jax.device_get(state.d_spectral)},
    images.astype(np.float32) / 127.5 - 1,
    np.asarray([2, 3, 8], np.int32),
  )
  np.testing.assert_allclose(logits, np.asarray(direct), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    model.discriminate(images.astype(np.float32) / 127.5 - 1, [2, 3, 8]), logits, atol=1e-6
  )


def test_bad_inputs_are_one_clear_error(model):
  from sagan_jax.errors import UserError

  with pytest.raises(UserError, match=r"outside \[0, 10\)"):
    model.generate([3, 10])
  with pytest.raises(UserError, match="z has shape"):
    model.generate([1, 2], np.zeros((2, 3)))
  with pytest.raises(UserError, match="takes"):
    model.discriminate(np.zeros((1, 28, 28, 1), np.uint8), [0])
  with pytest.raises(UserError, match="one label per image"):
    model.discriminate(np.zeros((2, 32, 32, 1), np.uint8), [0])


def test_a_checkpoint_folder_loads_that_step(run_dir):
  import sagan_jax
  from sagan_jax.errors import UserError

  assert sagan_jax.load(os.path.join(run_dir, "checkpoints", "2")).step == 2
  with pytest.raises(UserError, match="not of step 4"):
    sagan_jax.load(os.path.join(run_dir, "checkpoints", "2"), step=4)
  with pytest.raises(UserError, match="no config.json"):
    sagan_jax.load(os.path.dirname(run_dir))


def test_sample_writes_class_folders_and_npz_with_their_protocol(run_dir, tmp_path):
  from sagan_jax import sample

  out = str(tmp_path / "samples")
  sample.sample(run_dir, out, per_class=3, classes="0,7", seed=4, npz=True, progress=False)
  files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
  assert files == [
    "0/000000.png", "0/000001.png", "0/000002.png",
    "7/000003.png", "7/000004.png", "7/000005.png",
    "samples.npz", "sampling.json",
  ]  # fmt: skip
  with np.load(os.path.join(out, "samples.npz")) as data:
    images, labels = data["images"], data["labels"]
  assert images.shape == (6, 32, 32, 1) and images.dtype == np.uint8
  assert labels.tolist() == [0, 0, 0, 7, 7, 7]
  np.testing.assert_array_equal(
    np.asarray(Image.open(os.path.join(out, "7", "000004.png")))[..., None], images[4]
  )
  protocol = json.load(open(os.path.join(out, "sampling.json")))
  assert protocol["step"] == 4 and protocol["seed"] == 4 and protocol["truncation"] is None
  assert protocol["generator"] == "EMA" and protocol["sample_bn_stats"] == "standing"
  assert protocol["classes"] == [0, 7] and protocol["per_class"] == 3

  npz = str(tmp_path / "t.npz")
  sample.sample(run_dir, npz, num=5, seed=1, truncation=0.5, progress=False)
  with np.load(npz) as data:
    assert data["images"].shape == (5, 32, 32, 1) and set(data["labels"].tolist()) <= set(range(10))
  assert json.load(open(str(tmp_path / "t.json")))["truncation"] == 0.5


def test_interpolation_sheets(run_dir, tmp_path):
  from sagan_jax import sample

  out = str(tmp_path / "sheets")
  sample.sample(run_dir, out, interpolate=True, classes="1,5,9", interpolation_steps=4, progress=False)
  assert sorted(os.listdir(out)) == ["interpolation_classes.png", "interpolation_latent.png", "sampling.json"]
  tile = 2 * 32 + 2  # 32×32 images drawn at twice their size, 1-pixel pad
  assert np.asarray(Image.open(os.path.join(out, "interpolation_classes.png"))).shape == (
    2 * tile + 2,
    4 * tile + 2,
  )
  assert np.asarray(Image.open(os.path.join(out, "interpolation_latent.png"))).shape == (
    3 * tile + 2,
    4 * tile + 2,
  )


def test_sample_refuses_bad_input_and_writes_nothing(run_dir, tmp_path):
  from sagan_jax import sample
  from sagan_jax.errors import UserError

  out = str(tmp_path / "o")
  for kwargs, message in (
    (dict(truncation=0.0), "must be > 0"),
    (dict(per_class=2, num=3), "exclude each other"),
    (dict(classes="3,12"), r"\[12\] are outside"),
    (dict(classes="a"), "not a comma-separated"),
    (dict(interpolate=True, classes="3"), "at least two classes"),
  ):
    with pytest.raises(UserError, match=message):
      sample.sample(run_dir, out, progress=False, **kwargs)
    assert os.listdir(tmp_path) == []
  with pytest.raises(UserError, match="not a .npz"):
    sample.sample(run_dir, str(tmp_path / "x.npz"), interpolate=True)
  os.makedirs(out)
  with pytest.raises(UserError, match="exists; pass --overwrite"):
    sample.sample(run_dir, out, per_class=1, progress=False)
  sample.sample(run_dir, out, per_class=1, overwrite=True, progress=False)
  assert sorted(os.listdir(tmp_path)) == ["o"]  # no staging or set-aside folder left
  assert len(os.listdir(out)) == 11


def test_sample_command_line(run_dir, tmp_path):
  out = str(tmp_path / "cli.npz")
  cmd = [sys.executable, "-m", "sagan_jax.sample", f"--workdir={run_dir}", f"--out={out}", "--per_class=1"]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == [out, str(tmp_path / "cli.json")]
  assert "sampled 10/10 images" in done.stderr
  again = subprocess.run(cmd + ["--truncation=-1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "Traceback" not in again.stderr
  assert again.stderr.strip().splitlines() == [
    "error: --truncation=-1.0: must be > 0 (leave it out for untruncated z)"
  ]


def test_nearest_indices_match_a_float64_sort():
  from sagan_jax.visualize import nearest_indices

  rng = np.random.default_rng(0)
  pool, queries = rng.standard_normal((200, 12)), rng.standard_normal((7, 12))
  want = np.argsort(((queries[:, None] - pool[None]) ** 2).sum(-1), axis=1)[:, :5]
  np.testing.assert_array_equal(nearest_indices(queries, pool, 5), want)
  assert nearest_indices(pool[[3, 150]], pool, 1)[:, 0].tolist() == [3, 150]  # a copy finds itself


def test_visualize_nearest_training_images(run_dir, fake_fmnist_dir):
  from configs import fashion_mnist
  from sagan_jax import visualize
  from sagan_jax.run import open_run

  assert visualize.nearest_space(fashion_mnist.get_config(), "auto") == "fmnist_classifier"
  assert visualize.nearest_space(fashion_mnist.get_config(), "pixels") == "pixels"
  data = json.load(open(os.path.join(run_dir, "config.json")))["dataset"]["data_dir"]
  shutil.copytree(fake_fmnist_dir, data)  # the training images, back where the run read them
  try:
    run = open_run(run_dir)
    paths = visualize.write_run_figures(
      run_dir,
      classes=[0, 4, 9],
      nearest=3,
      nearest_space_name="pixels",
      nearest_pool=40,
      network="generator",
      run=run,
    )
    samples = np.linspace(-1, 1, 3 * 32 * 32).reshape(3, 32, 32, 1).astype(np.float32)
    figure, space = visualize.nearest_figure(run, samples, 2, "pixels", 40)
  finally:
    shutil.rmtree(data)
  assert os.path.join(run_dir, "nearest", "step_00000004_pixels.png") in paths
  tile = 32 + 2
  shown = np.asarray(Image.open(os.path.join(run_dir, "nearest", "step_00000004_pixels.png")))
  assert shown.shape == (3 * tile + 2, 4 * tile + 2)  # per class a row: the sample, 3 neighbours
  assert space == "pixels" and figure.shape == (3 * tile + 2, 3 * tile + 2, 1)
  # each neighbour is a training image: nearest first by pixel distance
  real = figure[2:, tile + 2 :].reshape(3, tile, 2, tile, 1)[:, :32, :, :32].astype(np.float64)
  distance = lambda r, c: np.sum((real[r, :, c] / 127.5 - 1 - samples[r]) ** 2)
  assert all(distance(r, 0) <= 1.01 * distance(r, 1) for r in range(3))  # (the PNG rounds pixels)
