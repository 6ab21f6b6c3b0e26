"""tf.data input: sources -> model images in [-1, 1] (NHWC float32) and int32 labels.

Sources, chosen by ``config.dataset.name``:
  'fashion_mnist'  the IDX files, held in memory;
  'folder'         an image folder ``data_dir/<class_name>/*.jpg|png``, classes sorted by name;
  any other name   a TFDS dataset (imagenet2012, cifar10, …), prepared once as array_record.

Every source yields an endless, deterministic, resumable stream of host-local
batches: the example order of epoch e is a permutation seeded by (seed, e) and the
random flip of the example at stream position p is seeded by (seed, p), so a run
restarted at example k continues exactly where it stopped. The sources are read by
random access, and each process reads only its own rows of every global batch: P
processes read disjoint shares of each epoch that together cover it.
"""
import logging
import os
from typing import Callable, Iterator, NamedTuple

import numpy as np
import tensorflow as tf

from sagan_jax import fashion_mnist
from sagan_jax.errors import UserError

class InMemoryData(NamedTuple):
  images: np.ndarray  # (N, H, W, C) uint8
  labels: np.ndarray  # (N,) int32


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
  """A wrong folder or label offset silently collapses a conditional GAN: refuse it."""
  lo, hi = int(labels.min()), int(labels.max())
  if lo < 0 or hi >= num_classes:
    raise UserError(f"{source} has labels in [{lo}, {hi}] but model.num_classes is "
                    f"{num_classes}; labels must lie in [0, num_classes)")
  present = np.unique(labels).size
  if present < num_classes:
    raise UserError(f"{source} has {present} classes but model.num_classes is {num_classes}; "
                    f"set --config.model.num_classes={present} or fix the data")


def _to_unit_range(images: tf.Tensor) -> tf.Tensor:
  return tf.cast(images, tf.float32) / 127.5 - 1.0


def to_model_images(images: tf.Tensor, resolution: int, channels: int) -> tf.Tensor:
  """uint8 (…, h, w, c) -> float32 (…, resolution, resolution, channels) in [-1, 1].

  28×28 digits/garments are padded (with their black background) to 32×32 rather
  than stretched; other sizes are resized with antialiasing.
  """
  h, w = images.shape[-3], images.shape[-2]
  if (h, w) == (28, 28) and resolution == 32:
    pad = [[0, 0]] * (len(images.shape) - 3) + [[2, 2], [2, 2], [0, 0]]
    x = tf.pad(_to_unit_range(images), pad, constant_values=-1.0)
  elif (h, w) != (resolution, resolution):
    # Resize, then scale: the scaling touches resolution² pixels instead of h·w (same result).
    x = _to_unit_range(tf.image.resize(images, (resolution, resolution), method="bilinear",
                                       antialias=True))
  else:
    x = _to_unit_range(images)
  c = x.shape[-1]
  if c != channels:
    if c == 1:
      x = tf.repeat(x, channels, axis=-1)
    elif c == 3 and channels == 1:
      x = tf.image.rgb_to_grayscale(x)
    elif c == 4:
      x = to_model_images(tf.cast(images[..., :3], tf.uint8), resolution, channels)
    else:
      raise UserError(f"cannot turn {c}-channel images into {channels} channels")
  return x


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared lower-case: ImageNet's files end in .JPEG
LABEL_MAP_FILE = "label_map.txt"              # written into the workdir by the folder source
IMAGENET_ARCHIVES = {"train": "ILSVRC2012_img_train.tar", "validation": "ILSVRC2012_img_val.tar",
                     "test": "ILSVRC2012_img_test.tar"}


def epoch_permutation_stream(num_examples: int, seed: int, start_index: int) -> tf.data.Dataset:
  """Example indices, epoch after epoch, each epoch a permutation seeded by (seed, epoch)."""
  start_epoch, offset = divmod(start_index, num_examples)

  def epoch_indices(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(order)

  return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_indices).skip(offset)


def local_index_batches(num_examples: int, *, global_batch: int, seed: int, start_index: int,
                        process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """{'position', 'index'} of this process's rows of every global batch, from example start_index on.

  'position' counts examples in the global stream (it seeds the flip); 'index' is the example.
  """
  if global_batch % process_count:
    raise UserError(f"batch_size {global_batch} must divide by the process count {process_count}")
  local = global_batch // process_count
  rows = slice(process_index * local, (process_index + 1) * local)
  ds = tf.data.Dataset.zip({"position": tf.data.Dataset.range(start_index, 2**62),
                            "index": epoch_permutation_stream(num_examples, seed, start_index)})
  ds = ds.batch(global_batch, drop_remainder=True)
  return ds.map(lambda batch: {k: v[rows] for k, v in batch.items()})


# Preprocessing (BigGAN/SAGAN's 128×128 ImageNet recipe): central square crop, antialiased
# resize, random horizontal flip in training, [-1, 1].

def central_square_crop(image: tf.Tensor) -> tf.Tensor:
  """The largest centred square of an (h, w, c) image; a static square passes untouched."""
  h, w = image.shape[-3], image.shape[-2]
  if h is not None and h == w:
    return image  # keeps the static shape, which to_model_images' 28->32 padding needs
  shape = tf.shape(image)
  h, w = shape[-3], shape[-2]
  side = tf.minimum(h, w)
  return tf.image.crop_to_bounding_box(image, (h - side) // 2, (w - side) // 2, side, side)


def preprocess(image: tf.Tensor, *, resolution: int, channels: int,
               flip_seed: tf.Tensor | None = None) -> tf.Tensor:
  """uint8 (h, w, c) -> float32 (resolution, resolution, channels) in [-1, 1].

  With a flip_seed (training) the image is mirrored with probability 1/2, decided by the seed.
  """
  x = to_model_images(central_square_crop(image), resolution, channels)
  if flip_seed is not None:
    x = tf.image.stateless_random_flip_left_right(x, flip_seed)
  return x


def decode_and_preprocess(encoded: tf.Tensor, *, resolution: int, channels: int,
                          flip_seed: tf.Tensor | None = None) -> tf.Tensor:
  """Encoded JPEG/PNG bytes -> model image; grayscale and RGBA become `channels` in the decoder."""
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  return preprocess(image, resolution=resolution, channels=channels, flip_seed=flip_seed)


def _flip_seed(config, position: tf.Tensor) -> tf.Tensor | None:
  if not config.dataset.random_flip:
    return None
  return tf.stack([tf.constant(config.seed, tf.int64), position])


# Sources: each turns local index batches into a stream of single examples.

class Source(NamedTuple):
  description: str    # for messages, e.g. "TFDS imagenet2012/5.1.0 split 'train'"
  num_examples: int
  examples: Callable  # (local index batches, config) -> dataset of {'image', 'label'[, skip info]}


def in_memory_source(data: InMemoryData, description: str) -> Source:
  def examples(index_batches, config):
    images, labels = tf.constant(data.images), tf.constant(data.labels)
    m = config.model
    return index_batches.unbatch().map(lambda e: {
        "image": preprocess(tf.gather(images, e["index"]), resolution=m.resolution,
                            channels=m.image_channels, flip_seed=_flip_seed(config, e["position"])),
        "label": tf.gather(labels, e["index"]),
    }, num_parallel_calls=tf.data.AUTOTUNE)
  return Source(description, len(data.labels), examples)


class ImageFolder(NamedTuple):
  paths: np.ndarray        # (N,) str, sorted by class, then by file name
  labels: np.ndarray       # (N,) int32
  class_names: list        # label -> class folder name


def list_image_folder(root: str) -> ImageFolder:
  """root/<class_name>/*.jpg|png; labels follow the sorted class names."""
  if not root or not tf.io.gfile.isdir(root):
    raise UserError(f"image folder {root!r} does not exist; set --config.dataset.data_dir to a "
                    f"folder holding one subfolder of images per class")
  class_names = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                       if tf.io.gfile.isdir(os.path.join(root, d)))
  if not class_names:
    raise UserError(f"image folder {root!r} has no class subfolders; put the images of each "
                    f"class into their own subfolder root/<class_name>/")
  paths, labels = [], []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(root, name)
    files = sorted(f for f in tf.io.gfile.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise UserError(f"class folder {class_dir!r} holds no .jpg/.jpeg/.png image; add images or "
                      f"remove the folder")
    paths += [os.path.join(class_dir, f) for f in files]
    labels += [label] * len(files)
  return ImageFolder(np.asarray(paths), np.asarray(labels, np.int32), class_names)


def write_label_map(workdir: str, class_names: list, write: bool = True) -> str:
  """workdir/label_map.txt, '<label>\t<class name>' per line; refuses classes changed since."""
  path = os.path.join(workdir, LABEL_MAP_FILE)
  text = "".join(f"{label}\t{name}\n" for label, name in enumerate(class_names))
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      if f.read() != text:
        raise UserError(f"the class folders differ from {path}, the label map this workdir was "
                        f"trained with; restore the folders or start a new --workdir")
  elif write:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
  return path


def folder_source(folder: ImageFolder, description: str) -> Source:
  """Undecodable files are skipped: the example at a position becomes the next decodable file
  in sorted order, so positions (and thus resume) stay exact. 'skipped' counts the files
  passed over and 'skipped_file' names the first; the host iterator logs them."""
  n = len(folder.paths)

  def examples(index_batches, config):
    paths, labels = tf.constant(folder.paths), tf.constant(folder.labels)
    m = config.model

    def first_decodable(e):
      def attempt(offset):
        i = (e["index"] + offset) % n
        image = decode_and_preprocess(tf.io.read_file(paths[i]), resolution=m.resolution,
                                      channels=m.image_channels,
                                      flip_seed=_flip_seed(config, e["position"]))
        return {"image": image, "label": labels[i], "skipped": offset,
                "skipped_file": paths[e["index"]]}
      return tf.data.Dataset.range(n).map(attempt).ignore_errors().take(1)

    # Each inner dataset yields exactly one example, so the interleave keeps the input order.
    return index_batches.unbatch().interleave(
        first_decodable, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return Source(description, n, examples)


def tfds_source(data_source, image_key: str, label_key: str, description: str) -> Source:
  """Random access to a TFDS array_record split: each record is read by index, then parsed,
  decoded and preprocessed, examples in parallel."""
  features = {image_key: tf.io.FixedLenFeature([], tf.string),
              label_key: tf.io.FixedLenFeature([], tf.int64)}

  def examples(index_batches, config):
    m = config.model

    def load(e):
      record = tf.numpy_function(lambda i: data_source[i], [e["index"]], tf.string, stateful=False)
      example = tf.io.parse_single_example(tf.ensure_shape(record, []), features)
      image = decode_and_preprocess(example[image_key], resolution=m.resolution,
                                    channels=m.image_channels,
                                    flip_seed=_flip_seed(config, e["position"]))
      return {"image": image, "label": tf.cast(example[label_key], tf.int32)}

    return index_batches.unbatch().map(load, num_parallel_calls=tf.data.AUTOTUNE)
  return Source(description, len(data_source), examples)


def _tfds_builder(dataset):
  import tensorflow_datasets as tfds  # imported here: slow, and only TFDS sources need it
  name = f"{dataset.name}:{dataset.version}" if dataset.version else dataset.name
  try:
    return tfds.builder(name, data_dir=dataset.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f"unknown dataset {dataset.name!r}; use 'fashion_mnist', 'folder' or a TFDS "
                    f"dataset name such as 'imagenet2012' or 'cifar10'") from None
  except AssertionError as e:  # TFDS's way of saying the version does not exist
    raise UserError(f"TFDS cannot build {name!r} ({str(e).splitlines()[0]}); fix "
                    f"--config.dataset.version") from None


def _split_name(split: str) -> str:
  return split.split("[")[0]  # 'train[:90%]' -> 'train'


def _prepare_tfds(builder, dataset, process_count: int) -> None:
  """Downloads (or reads from manual_dir) and writes the dataset once, as array_record."""
  import tensorflow_datasets as tfds
  manual_dir = dataset.manual_dir or os.path.join(builder.data_dir_root, "downloads", "manual")
  if builder.name == "imagenet2012":
    archive = IMAGENET_ARCHIVES.get(_split_name(dataset.split), IMAGENET_ARCHIVES["train"])
    if not tf.io.gfile.exists(os.path.join(manual_dir, archive)):
      raise UserError(
          f"ImageNet is not prepared in {builder.data_dir} and {archive} is not in {manual_dir}: "
          f"download {IMAGENET_ARCHIVES['train']} and {IMAGENET_ARCHIVES['validation']} from "
          f"https://image-net.org/download-images into {manual_dir} (or set "
          f"--config.dataset.manual_dir to their folder); the first run converts them once")
  elif builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
      tf.io.gfile.isdir(manual_dir) and tf.io.gfile.listdir(manual_dir)):
    raise UserError(f"{builder.name} needs files downloaded by hand into {manual_dir} (or set "
                    f"--config.dataset.manual_dir): {' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}")
  if process_count > 1:  # every process would write the same files
    raise UserError(f"{builder.info.full_name} is not prepared in {builder.data_dir_root}; run "
                    f"once as a single process to prepare it, then start the {process_count} processes")
  logging.info("preparing %s in %s as array_record (once)", builder.info.full_name, builder.data_dir)
  builder.download_and_prepare(file_format="array_record",
                               download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def load_tfds(config, process_count: int = 1) -> Source:
  import tensorflow_datasets as tfds
  dataset = config.dataset
  builder = _tfds_builder(dataset)
  if not builder.is_prepared():
    _prepare_tfds(builder, dataset, process_count)
  info = builder.info
  if tfds.core.FileFormat.ARRAY_RECORD not in info.available_file_formats():
    raise UserError(
        f"{info.full_name} in {builder.data_dir} is stored as {info.file_format.value}, without "
        f"random access; add an array_record copy once with 'pip install apache-beam mlcroissant' "
        f"and 'tfds convert_format --dataset_version_dir={builder.data_dir} "
        f"--out_file_format=array_record'")
  if _split_name(dataset.split) not in info.splits:
    raise UserError(f"{info.full_name} has no split {dataset.split!r}; use one of "
                    f"{sorted(info.splits)} in --config.dataset.split")
  keys = info.supervised_keys
  if not (keys and all(isinstance(k, str) for k in keys)
          and isinstance(info.features[keys[0]], tfds.features.Image)
          and isinstance(info.features[keys[1]], tfds.features.ClassLabel)):
    raise UserError(f"{info.full_name} is not a dataset of (image, class label) pairs; "
                    f"choose a class-labelled image dataset")
  image_key, label_key = keys
  num_classes = info.features[label_key].num_classes
  if num_classes != config.model.num_classes:
    raise UserError(f"{info.full_name} has {num_classes} classes but model.num_classes is "
                    f"{config.model.num_classes}; set --config.model.num_classes={num_classes}")
  data_source = builder.as_data_source(
      split=dataset.split, file_format="array_record",
      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  return tfds_source(data_source, image_key, label_key,
                     f"TFDS {info.full_name} split {dataset.split!r}")


def load_source(config, *, process_index: int = 0, process_count: int = 1,
                workdir: str | None = None) -> Source:
  dataset, model = config.dataset, config.model
  if dataset.name == "fashion_mnist":
    data = InMemoryData(*fashion_mnist.load(dataset.split, dataset.data_dir))
    description = f"dataset {dataset.name!r}"
    check_labels(data.labels, model.num_classes, description)
    return in_memory_source(data, description)
  if model.image_channels not in (1, 3):
    raise UserError(f"model.image_channels is {model.image_channels}; image files decode to 1 or 3 "
                    f"channels, so set it to 1 or 3")
  if dataset.name == "folder":
    folder = list_image_folder(dataset.data_dir)
    description = f"image folder {dataset.data_dir!r}"
    check_labels(folder.labels, model.num_classes, description)
    if workdir:
      path = write_label_map(workdir, folder.class_names, write=process_index == 0)
      logging.info("%s: %d images of %d classes; label map in %s", description,
                   len(folder.paths), len(folder.class_names), path)
    return folder_source(folder, description)
  return load_tfds(config, process_count)


def train_dataset(config, source: Source, *, start_index: int = 0, process_index: int = 0,
                  process_count: int = 1) -> tf.data.Dataset:
  """Host-local batches as a tf.data.Dataset (a folder source adds 'skipped', 'skipped_file')."""
  index_batches = local_index_batches(
      source.num_examples, global_batch=config.batch_size, seed=config.seed,
      start_index=start_index, process_index=process_index, process_count=process_count)
  ds = source.examples(index_batches, config)
  ds = ds.batch(config.batch_size // process_count, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1  # parallel across examples, not inside one op
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _log_skipped(batches: Iterator[dict]) -> Iterator[dict]:
  """Drops the folder source's skip fields after logging each skipped file and the running count."""
  total = 0
  for batch in batches:
    skipped, files = batch.pop("skipped", ()), batch.pop("skipped_file", ())
    for count, name in zip(skipped, files):
      if count:
        total += int(count)
        logging.warning("skipped %d undecodable image(s) from %s on; %d skipped so far",
                        count, name.decode(), total)
    yield batch


def _check_label_range(batches: Iterator[dict], num_classes: int, description: str) -> Iterator[dict]:
  """Refuses labels outside [0, num_classes), e.g. the unlabelled (-1) ImageNet test split."""
  for batch in batches:
    labels = batch["label"]
    if labels.min() < 0 or labels.max() >= num_classes:
      raise UserError(f"{description} has labels in [{labels.min()}, {labels.max()}] but "
                      f"model.num_classes is {num_classes}; labels must lie in [0, num_classes)")
    yield batch


def create_train_iterator(config, *, start_index: int = 0, process_index: int = 0,
                          process_count: int = 1, workdir: str | None = None) -> Iterator[dict]:
  """Endless iterator of host-local numpy batches {'image', 'label'} starting at example start_index.

  start_index counts the global examples already consumed; workdir receives a folder's label map.
  """
  source = load_source(config, process_index=process_index, process_count=process_count,
                       workdir=workdir)
  ds = train_dataset(config, source, start_index=start_index, process_index=process_index,
                     process_count=process_count)
  return _check_label_range(_log_skipped(ds.as_numpy_iterator()), config.model.num_classes,
                            source.description)


def stack_d_step_batches(iterator: Iterator[dict], d_steps: int) -> dict:
  """One host batch per D step, stacked: arrays of shape (d_steps, local batch, …)."""
  batches = [next(iterator) for _ in range(d_steps)]
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def log_class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
  counts = np.bincount(labels.reshape(-1), minlength=num_classes)
  shown = ", ".join(f"{c}:{n}" for c, n in enumerate(counts[:20]))
  logging.info("class histogram of the first batches (%d labels, %d classes seen): %s%s",
               labels.size, int((counts > 0).sum()), shown, " …" if num_classes > 20 else "")
  return counts
