"""Input pipeline: preprocessing, the image folder, ImageNet in its official archive format
through the real TFDS imagenet2012 builder, process shards and exact resume."""

import io
import logging
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_jax.data import pipeline, preprocess
from sagan_jax.errors import UserError

# Positions 0, 500 and 999 in TFDS's imagenet2012 labels.txt (its 1000 synsets, sorted).
IMAGENET_SYNSETS = {"n01440764": 0, "n03042490": 500, "n15075141": 999}
IMAGES_PER_SYNSET = 4


def encode(array, fmt="JPEG") -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buffer, fmt)
  return buffer.getvalue()


def photo_like(rng, height, width):
  """Smooth colour fields plus grain: JPEG sizes and decode costs close to photographs'."""
  coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
  smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32)
  return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_imagenet_archives(
  manual_dir,
  synsets=tuple(IMAGENET_SYNSETS),
  images_per_synset=IMAGES_PER_SYNSET,
  num_val=3,
  size=(30, 40),
  seed=0,
):
  """ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar as image-net.org ships them.

  The train archive holds one nXXXXXXXX.tar per synset of nXXXXXXXX_N.JPEG files; the val
  archive holds ILSVRC2012_val_00000001.JPEG…, whose labels TFDS takes from its own list.
  Image sides vary around `size` (height, width), some portrait, some grayscale.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)

  def image(i):
    h, w = size if i % 3 else size[::-1]
    array = photo_like(rng, h + int(rng.integers(0, h // 4 + 1)), w)
    return encode(array.mean(-1) if i % 5 == 4 else array)

  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as train:
    for synset in synsets:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as synset_tar:
        for i in range(images_per_synset):
          _add(synset_tar, f"{synset}_{i + 1}.JPEG", image(i))
      _add(train, f"{synset}.tar", inner.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
    for i in range(num_val):
      _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", image(i))
  return manual_dir


def imagenet_config(data_dir, manual_dir):
  """configs/sagan128.py:smoke (128×128, ch=2, batch 4) on the given TFDS folders."""
  from configs import sagan128

  config = sagan128.get_config("smoke")
  config.dataset.data_dir = data_dir
  config.dataset.manual_dir = manual_dir
  return config


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  """A tiny ImageNet prepared by TFDS's own imagenet2012 builder: (data_dir, manual_dir)."""
  root = tmp_path_factory.mktemp("imagenet")
  manual_dir = write_imagenet_archives(str(root / "manual"))
  data_dir = str(root / "tfds")
  pipeline.load_source(imagenet_config(data_dir, manual_dir))  # prepares it once
  return data_dir, manual_dir


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


# Preprocessing.


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_decoded_images_have_model_shape_dtype_and_range(mode, channels):
  rng = np.random.default_rng(0)
  array = np.asarray(Image.fromarray(photo_like(rng, 45, 70)).convert(mode))
  encoded = encode(array, "PNG" if mode == "RGBA" else "JPEG")
  x = preprocess.decode_and_preprocess(
    tf.constant(encoded), resolution=32, channels=channels, flip_seed=tf.constant([0, 1], tf.int64)
  )
  assert x.shape == (32, 32, channels) and x.dtype == tf.float32
  assert -1.0 <= float(tf.reduce_min(x)) < float(tf.reduce_max(x)) <= 1.0


def test_central_square_crop_keeps_the_centre():
  """A wide image, white at its sides and black in its central square, becomes all black."""
  array = np.full((20, 60, 3), 255, np.uint8)
  array[:, 20:40] = 0
  x = preprocess.decode_and_preprocess(tf.constant(encode(array, "PNG")), resolution=8, channels=3)
  np.testing.assert_allclose(x.numpy(), -1.0, atol=1e-6)


def test_flip_only_in_training_and_decided_by_the_seed():
  array = photo_like(np.random.default_rng(1), 40, 40)
  encoded = tf.constant(encode(array, "PNG"))
  plain = preprocess.decode_and_preprocess(encoded, resolution=16, channels=3).numpy()
  flipped = []
  for position in range(16):
    seed = tf.constant([7, position], tf.int64)
    x = preprocess.decode_and_preprocess(encoded, resolution=16, channels=3, flip_seed=seed).numpy()
    again = preprocess.decode_and_preprocess(encoded, resolution=16, channels=3, flip_seed=seed)
    np.testing.assert_array_equal(x, again.numpy())
    if np.array_equal(x, plain[:, ::-1]):
      flipped.append(position)
    else:
      np.testing.assert_array_equal(x, plain)
  assert 0 < len(flipped) < 16


def test_training_stream_mirrors_some_images_and_only_with_random_flip(smoke_config):
  smoke_config.dataset.random_flip = True  # off in the Fashion-MNIST default
  plain_config = smoke_config.copy_and_resolve_references()
  plain_config.dataset.random_flip = False
  flipped, plain = (next(pipeline.create_train_iterator(c))["image"] for c in (smoke_config, plain_config))
  mirrored = [not np.array_equal(f, p) for f, p in zip(flipped, plain, strict=True)]
  for f, p, m in zip(flipped, plain, mirrored, strict=True):
    np.testing.assert_array_equal(f, p[:, ::-1] if m else p)
  assert 0 < sum(mirrored) < len(mirrored)


def test_eager_result_equals_result_inside_tf_data():
  rng = np.random.default_rng(2)
  encoded = [encode(photo_like(rng, 30 + 9 * i, 50)) for i in range(4)]
  seeds = np.array([[3, i] for i in range(4)], np.int64)
  decode = lambda e, s: preprocess.decode_and_preprocess(e, resolution=24, channels=3, flip_seed=s)
  eager = [decode(tf.constant(e), tf.constant(s)).numpy() for e, s in zip(encoded, seeds, strict=True)]
  ds = tf.data.Dataset.from_tensor_slices((encoded, seeds)).map(decode, num_parallel_calls=4)
  for a, b in zip(eager, ds.as_numpy_iterator(), strict=True):
    np.testing.assert_array_equal(a, b)


# The image folder source.

FOLDER_CLASSES = ("zebra", "apple", "mango")  # created unsorted; labels follow sorted names
CLASS_GRAY = {"apple": 30, "mango": 130, "zebra": 230}


def write_folder(root, per_class=3):
  """Solid-gray images, one gray per class, so an image tells its true label."""
  for name in FOLDER_CLASSES:
    os.makedirs(os.path.join(root, name))
    for i in range(per_class):
      array = np.full((20 + 4 * i, 24, 3), CLASS_GRAY[name], np.uint8)
      ext = ".png" if i == 1 else ".JPEG"
      with open(os.path.join(root, name, f"img{i}{ext}"), "wb") as f:
        f.write(encode(array, "PNG" if ext == ".png" else "JPEG"))
  return str(root)


def folder_config(root, num_classes=3, batch_size=3):
  from configs import cifar10

  config = cifar10.get_config("smoke")
  config.dataset.name = "folder"
  config.dataset.data_dir = root
  config.model.num_classes = num_classes
  config.batch_size = batch_size
  return config


def assert_labels_match_images(batch):
  grays = np.array([CLASS_GRAY[n] for n in sorted(FOLDER_CLASSES)]) / 127.5 - 1
  np.testing.assert_allclose(batch["image"].mean(axis=(1, 2, 3)), grays[batch["label"]], atol=0.03)


def test_folder_labels_follow_sorted_class_names(tmp_path):
  root = write_folder(tmp_path / "images")
  workdir = str(tmp_path / "work")
  batches = take(pipeline.create_train_iterator(folder_config(root), workdir=workdir), 6)
  for batch in batches:
    assert batch["image"].shape == (3, 32, 32, 3) and batch["label"].dtype == np.int32
    assert_labels_match_images(batch)
  epoch = np.concatenate([b["label"] for b in batches[:3]])
  assert sorted(epoch) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  with open(os.path.join(workdir, "label_map.txt")) as f:
    assert f.read() == "0\tapple\n1\tmango\n2\tzebra\n"

  os.rename(os.path.join(root, "zebra"), os.path.join(root, "aardvark"))
  with pytest.raises(UserError, match="label map this workdir was trained with"):
    pipeline.create_train_iterator(folder_config(root), workdir=workdir)


def test_folder_skips_and_counts_corrupt_images(tmp_path, caplog):
  root = write_folder(tmp_path / "images")
  with open(os.path.join(root, "mango", "img0.JPEG"), "rb") as f:
    good = f.read()
  with open(os.path.join(root, "apple", "img1b.jpg"), "wb") as f:
    f.write(b"not an image at all")
  with open(os.path.join(root, "mango", "img0b.jpg"), "wb") as f:
    f.write(good[: len(good) // 2])  # truncated
  caplog.set_level(logging.WARNING)
  batches = take(pipeline.create_train_iterator(folder_config(root, batch_size=11)), 2)
  for batch in batches:
    assert batch["image"].shape == (11, 32, 32, 3)
    assert_labels_match_images(batch)
  skips = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
  assert any("img1b.jpg" in m for m in skips) and any("img0b.jpg" in m for m in skips)
  assert skips[-1].endswith("4 skipped so far")  # 2 bad files, drawn once per epoch, 2 epochs


def test_folder_errors_at_start(tmp_path):
  root = write_folder(tmp_path / "images")
  with pytest.raises(UserError, match="image folder .* has 3 classes but model.num_classes is 5"):
    pipeline.create_train_iterator(folder_config(root, num_classes=5))
  os.makedirs(os.path.join(root, "empty"))
  with pytest.raises(UserError, match="empty' holds no .jpg/.jpeg/.png image"):
    pipeline.create_train_iterator(folder_config(root))
  with pytest.raises(UserError, match="does not exist"):
    pipeline.create_train_iterator(folder_config(str(tmp_path / "nowhere")))


# ImageNet through TFDS.


def test_missing_imagenet_says_which_files_to_put_where(tmp_path):
  manual_dir = str(tmp_path / "manual")
  with pytest.raises(UserError) as error:
    pipeline.create_train_iterator(imagenet_config(str(tmp_path / "tfds"), manual_dir))
  message = str(error.value)
  assert "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in message
  assert f"into {manual_dir}" in message and "\n" not in message


def test_imagenet_batches(imagenet):
  config = imagenet_config(*imagenet)
  batches = take(pipeline.create_train_iterator(config), 3)  # one epoch of 12 images
  for batch in batches:
    assert batch["image"].shape == (4, 128, 128, 3) and batch["image"].dtype == np.float32
    assert -1 <= batch["image"].min() < batch["image"].max() <= 1
  labels = np.concatenate([b["label"] for b in batches])
  assert labels.dtype == np.int32
  assert sorted(labels) == sorted(np.repeat(list(IMAGENET_SYNSETS.values()), IMAGES_PER_SYNSET))


def test_an_unconditional_model_reads_only_the_images_of_a_tfds_set(imagenet):
  """model.num_classes 0: the dataset's image feature alone (the path a label-free set such as
  CelebA or LSUN takes), every label 0; the same images as the labelled read."""
  config = imagenet_config(*imagenet)
  config.model.num_classes = 0
  config.dataset.random_flip = False
  source = pipeline.load_source(config)
  assert source.description.endswith("(unlabelled)") and source.num_examples == 12
  unlabelled = take(pipeline.create_train_iterator(config, source=source), 3)
  config.model.num_classes = 1000
  labelled = take(pipeline.create_train_iterator(config), 3)
  for plain, with_labels in zip(unlabelled, labelled, strict=True):
    np.testing.assert_array_equal(plain["image"], with_labels["image"])
    assert (plain["label"] == 0).all()


def test_imagenet_class_count_must_match_the_model(imagenet):
  config = imagenet_config(*imagenet)
  config.model.num_classes = 10
  with pytest.raises(UserError, match="has 1000 classes but model.num_classes is 10"):
    pipeline.create_train_iterator(config)


def test_two_processes_read_disjoint_shards_that_cover_the_split(imagenet):
  config = imagenet_config(*imagenet)
  config.dataset.random_flip = False
  one = take(pipeline.create_train_iterator(config), 3)
  shards = [
    take(pipeline.create_train_iterator(config, process_index=p, process_count=2), 3) for p in range(2)
  ]
  images = [np.concatenate([b["image"] for b in shard]) for shard in shards]
  assert images[0].shape == (6, 128, 128, 3)
  keys = [{x.tobytes() for x in shard} for shard in images]
  assert not keys[0] & keys[1]
  assert len(keys[0] | keys[1]) == 12  # every example of the split, once
  for k in range(3):  # the processes' rows make up the single-process global batch
    for field in ("image", "label"):
      np.testing.assert_array_equal(one[k][field], np.concatenate([shards[0][k][field], shards[1][k][field]]))


def test_imagenet_smoke_training(imagenet, tmp_path):
  """sagan128:smoke's data path (TFDS-prepared archives, 1000 classes) trains, into a 32×32
  model: the 128×128 train step's CPU compile alone took ~80 s of the suite; it is compiled for
  a TPU slice and an H100 by make test-plan and trained on the CPU by the slow tier
  (tests/test_full_size.py)."""
  from sagan_jax import train

  config = imagenet_config(*imagenet)
  config.model.resolution = 32
  config.model.attention_resolutions = (16,)
  config.num_train_steps = 2
  state = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(state.step) == 2
  assert "2" in os.listdir(tmp_path / "run" / "checkpoints")


# Exact resume.


@pytest.mark.parametrize("source", ["fashion_mnist", "folder", "imagenet2012"])
def test_batches_after_restart_equal_uninterrupted_batches(source, request, tmp_path):
  if source == "fashion_mnist":
    config = request.getfixturevalue("smoke_config")
    config.dataset.split = "test"  # 50 images: the 7 batches below cross an epoch boundary
  elif source == "folder":
    config = folder_config(write_folder(tmp_path / "images"), batch_size=4)
  else:
    config = imagenet_config(*request.getfixturevalue("imagenet"))
  b = config.batch_size
  straight = take(pipeline.create_train_iterator(config), 7)
  resumed = take(pipeline.create_train_iterator(config, start_index=4 * b), 3)
  for a, r in zip(straight[4:], resumed, strict=True):
    for field in ("image", "label"):
      np.testing.assert_array_equal(a[field], r[field])
  assert not np.array_equal(straight[0]["image"], resumed[0]["image"])
