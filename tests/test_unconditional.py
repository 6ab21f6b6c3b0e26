"""Training without labels (model.num_classes 0): plain BN in G, no projection in D, a flat image
folder as data, and every tool on the run."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from sagan_jax import config as config_lib
from sagan_jax import train
from sagan_jax.errors import UserError


def flat_folder(root, n=24):
  rng = np.random.default_rng(0)
  os.makedirs(root)
  for i in range(n):
    image = np.full((12, 12, 3), 30, np.uint8)
    image[rng.integers(0, 8) :, :, i % 3] = 220  # a blob of one colour
    Image.fromarray(image).save(os.path.join(root, f"img{i:02d}.png"))
  return str(root)


def unconditional(fake_fmnist_dir, data_dir, **fields):
  from configs import fashion_mnist

  config = fashion_mnist.get_config("smoke")
  config.dataset.data_dir = data_dir
  config.dataset.name = "folder"
  config.model.num_classes = 0
  config.model.image_channels = 3
  config.batch_size = 4
  config.eval.metrics = ("fid", "kid", "prdc_inception")
  for name, value in fields.items():
    section, leaf = name.split(".")
    config[section][leaf] = value
  return config


@pytest.fixture(scope="module")
def run_dir(fake_fmnist_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("unconditional")
  workdir = str(root / "run")
  train.train_and_evaluate(unconditional(fake_fmnist_dir, flat_folder(root / "images")), workdir)
  return workdir


def test_an_unconditional_run_has_no_class_parameters(run_dir):
  import sagan_jax

  model = sagan_jax.load(run_dir)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(model.run.state.g_params)]
  assert paths and not any("embed" in p or "gain" in p for p in paths), paths  # no class tables
  d_paths = [
    jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(model.run.state.d_params)
  ]
  assert not any("embed" in p for p in d_paths), d_paths  # no projection
  images = model.generate(np.zeros(6, int), seed=1)
  assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8 and len(np.unique(images[:, 0, 0])) > 1
  with pytest.raises(UserError, match="the model has no classes"):
    model.generate(np.ones(2, int))
  assert not os.path.exists(os.path.join(run_dir, "label_map.txt"))


def test_the_tools_work_on_an_unconditional_run(run_dir, tmp_path):
  from sagan_jax import report, sample, visualize

  figures = visualize.write_run_figures(run_dir, network="generator")
  assert figures and all(os.path.exists(p) for p in figures)
  written = sample.sample(run_dir, str(tmp_path / "samples"), num=8, progress=False)
  assert written and len(os.listdir(tmp_path / "samples" / "0")) == 8
  sample.sample(run_dir, str(tmp_path / "sheets"), interpolate=True, progress=False)
  pngs = [f for f in os.listdir(tmp_path / "sheets") if f.endswith(".png")]
  assert pngs == [sample.SHEETS[1]]  # latent rows only: no classes to mix
  page = report.write_report(run_dir, str(tmp_path / "report.html"), columns=2)
  assert os.path.getsize(page) > 0


def test_labels_are_needed_where_classes_are_asked_for(fake_fmnist_dir, tmp_path):
  data = flat_folder(tmp_path / "images")
  with pytest.raises(
    UserError, match="holds images but no class subfolders; .* --config.model.num_classes=0"
  ):
    from sagan_jax.data import pipeline

    pipeline.load_source(unconditional(fake_fmnist_dir, data, **{"model.num_classes": 3}))
  with pytest.raises(UserError, match=r"metrics \['intra_fid'\] score classes"):
    config_lib.validate_config(unconditional(fake_fmnist_dir, data, **{"eval.metrics": ("fid", "intra_fid")}))
