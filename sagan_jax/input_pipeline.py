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
import json
import logging
import os
import socket
from typing import Callable, Iterator, NamedTuple
from urllib.parse import urlparse

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
  class_names: tuple = ()  # an image folder's classes (its label map)


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


DECODE_CHECK_PARALLELISM = 16  # classes whose files are tried at once


def undecodable_classes(folder: ImageFolder, resolution: int, channels: int) -> list:
  """The labels of the classes none of whose files decodes (into a model image).

  Per class, files are tried in order until one decodes: one read per healthy class, all
  of them for a class that has none (which training would silently fill with the next
  class's images)."""
  num_classes = len(folder.class_names)
  starts = np.searchsorted(folder.labels, np.arange(num_classes + 1))
  paths, starts = tf.constant(folder.paths), tf.constant(starts, tf.int64)

  def first_decodable(label):
    def attempt(i):
      image = decode_and_preprocess(tf.io.read_file(paths[i]), resolution=resolution,
                                    channels=channels)
      return label, tf.reduce_min(image)  # an output of the decode: never pruned
    return (tf.data.Dataset.range(starts[label], starts[label + 1]).map(attempt)
            .ignore_errors().take(1).map(lambda label, _: label))

  found = tf.data.Dataset.range(num_classes).interleave(
      first_decodable, cycle_length=DECODE_CHECK_PARALLELISM,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  decodable = {int(label) for label in found.as_numpy_iterator()}
  return [label for label in range(num_classes) if label not in decodable]


def check_folder_decodes(folder: ImageFolder, root: str, resolution: int, channels: int) -> None:
  """Refuses a folder with a class (or no class at all) whose files all fail to decode."""
  bad = undecodable_classes(folder, resolution, channels)
  if len(bad) == len(folder.class_names):
    raise UserError(f"no file of image folder {root!r} decodes as an image ({len(folder.paths)} "
                    f"tried); check that the files are JPEG/PNG images and not truncated")
  if bad:
    counts = np.bincount(folder.labels, minlength=len(folder.class_names))
    names = ", ".join(f"{folder.class_names[c]!r} (label {c}, {counts[c]} files)" for c in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise UserError(f"no file of class folder(s) {names}{more} in {root!r} decodes as an image, "
                    f"so the class would never be trained; replace its files or remove the folder "
                    f"(and lower model.num_classes)")


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
      # A sentinel after the n attempts: no file decodes. The host iterator refuses it
      # instead of the interleave drawing example after example forever.
      none_decodes = tf.data.Dataset.from_tensors({
          "image": tf.zeros([m.resolution, m.resolution, m.image_channels], tf.float32),
          "label": tf.constant(-1, tf.int32), "skipped": tf.constant(n, tf.int64),
          "skipped_file": paths[e["index"]]})
      return (tf.data.Dataset.range(n).map(attempt).ignore_errors().take(1)
              .concatenate(none_decodes).take(1))

    # Each inner dataset yields exactly one example, so the interleave keeps the input order.
    return index_batches.unbatch().interleave(
        first_decodable, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return Source(description, n, examples, tuple(folder.class_names))


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
  except ValueError as e:  # a name TFDS cannot parse: 'fashion-mnist', 'a b', '5.1'
    hint = f" (did you mean {dataset.name.replace('-', '_')!r}?)" if "-" in dataset.name else ""
    what = f"dataset.name {dataset.name!r}" + (
        f" (with dataset.version {dataset.version!r})" if dataset.version else "")
    raise UserError(f"{what} is not a dataset name{hint}: use 'fashion_mnist', 'folder' or a TFDS "
                    f"name (letters, digits, underscores) such as 'cifar10' "
                    f"({str(e).splitlines()[0]})") from None


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
  if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    _check_download_reachable(builder)
  logging.info("preparing %s in %s as array_record (once)", builder.info.full_name, builder.data_dir)
  try:
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except (OSError, tfds.download.DownloadError) as e:  # requests' errors are OSErrors
    raise UserError(f"{_not_prepared(builder)}, and downloading it failed "
                    f"({' '.join(str(e).split())[:300]}); {_how_to_prepare(builder)}") from None


DOWNLOAD_PROBE_TIMEOUT = 5.0  # seconds to connect to a download host before calling it unreachable


def _not_prepared(builder) -> str:
  return f"TFDS {builder.info.full_name} is not prepared in {builder.data_dir_root}"


def _how_to_prepare(builder) -> str:
  return (f"run once where the download works (the first run prepares it into "
          f"<data_dir>/{builder.info.full_name}) and copy that folder to {builder.data_dir}, or "
          f"set --config.dataset.data_dir to a TFDS data_dir that holds it")


def _check_download_reachable(builder) -> None:
  """Refuses at once, offline, a dataset TFDS would download: its download manager retries
  an unreachable host for minutes. The hosts are those of the builder's recorded URLs."""
  hosts = sorted({(u.hostname, u.port or (443 if u.scheme == "https" else 80))
                  for u in map(urlparse, builder.url_infos or ()) if u.hostname})
  errors = []
  for host, port in hosts:
    try:
      socket.create_connection((host, port), timeout=DOWNLOAD_PROBE_TIMEOUT).close()
      return
    except OSError as e:
      errors.append(f"{host}: {e.strerror or e}")
  if errors:
    raise UserError(f"{_not_prepared(builder)} and its download host cannot be reached "
                    f"({'; '.join(errors)}); {_how_to_prepare(builder)}")


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
                workdir: str | None = None, write: bool = True) -> Source:
  """The source ``config.dataset`` names, checked against the model (labels, classes,
  decodable files). ``workdir`` receives (write) or is checked against (write=False) a
  folder's label map."""
  key = _source_key(config, process_index, process_count, workdir)
  source = _PRELOADED.pop(key, None)
  if source is None:
    source = _load_source(config, process_index=process_index, process_count=process_count,
                          workdir=workdir)
  if source.class_names and workdir:
    path = write_label_map(workdir, list(source.class_names), write=write and process_index == 0)
    logging.info("%s: %d images of %d classes; label map in %s", source.description,
                 source.num_examples, len(source.class_names), path)
  return source


_PRELOADED = {}  # the source a run checked at start-up, for its first iterator


def _source_key(config, process_index, process_count, workdir) -> str:
  m = config.model
  return json.dumps([config.dataset.to_dict(), m.num_classes, m.image_channels, m.resolution,
                     process_index, process_count, workdir], sort_keys=True, default=str)


def preload_source(config, *, process_index: int = 0, process_count: int = 1,
                   workdir: str | None = None) -> Source:
  """load_source without writing anything: the data checks a run does before it writes a
  file or compiles. The next load_source of the same arguments takes it instead of reading
  the data again (once); forget_preloaded drops it."""
  source = load_source(config, process_index=process_index, process_count=process_count,
                       workdir=workdir, write=False)
  _PRELOADED.clear()
  _PRELOADED[_source_key(config, process_index, process_count, workdir)] = source
  return source


def forget_preloaded() -> None:
  _PRELOADED.clear()


def _load_source(config, *, process_index: int, process_count: int, workdir) -> Source:
  del workdir  # the label map is load_source's
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
    check_folder_decodes(folder, dataset.data_dir, model.resolution, model.image_channels)
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


def _log_skipped(batches: Iterator[dict], num_files: int, description: str) -> Iterator[dict]:
  """Drops the folder source's skip fields after logging each skipped file and the running
  count; refuses a source none of whose files decodes any more."""
  total = 0
  for batch in batches:
    skipped, files = batch.pop("skipped", ()), batch.pop("skipped_file", ())
    for count, name in zip(skipped, files):
      if count >= num_files:
        raise UserError(f"no file of {description} decodes as an image any more ({num_files} "
                        f"tried); check the files")
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
  return _check_label_range(_log_skipped(ds.as_numpy_iterator(), source.num_examples,
                                          source.description),
                            config.model.num_classes, source.description)


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
