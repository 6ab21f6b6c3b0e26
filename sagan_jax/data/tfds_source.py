"""Any TFDS image-classification dataset as a source (imagenet2012, cifar10, …): prepared
once as array_record (ImageNet from the hand-downloaded archives), then read by random
access, each record parsed, decoded and preprocessed, examples in parallel."""

import logging
import os
import socket
from urllib.parse import urlparse

import tensorflow as tf

from sagan_jax.data.preprocess import decode_and_preprocess, flip_seed
from sagan_jax.data.source import Source
from sagan_jax.errors import UserError

IMAGENET_ARCHIVES = {
  "train": "ILSVRC2012_img_train.tar",
  "validation": "ILSVRC2012_img_val.tar",
  "test": "ILSVRC2012_img_test.tar",
}


def tfds_source(data_source, image_key: str, label_key: str | None, description: str) -> Source:
  """Random access to a TFDS array_record split: each record is read by index, then parsed,
  decoded and preprocessed, examples in parallel. ``label_key`` None: a label-free dataset
  (label 0 for every image)."""
  features = {image_key: tf.io.FixedLenFeature([], tf.string)}
  if label_key:
    features[label_key] = tf.io.FixedLenFeature([], tf.int64)

  def examples(index_batches, config):
    m = config.model

    def load(e):
      record = tf.numpy_function(lambda i: data_source[i], [e["index"]], tf.string, stateful=False)
      example = tf.io.parse_single_example(tf.ensure_shape(record, []), features)
      image = decode_and_preprocess(
        example[image_key],
        resolution=m.resolution,
        channels=m.image_channels,
        flip_seed=flip_seed(config, e["position"]),
      )
      label = tf.cast(example[label_key], tf.int32) if label_key else tf.constant(0, tf.int32)
      return {"image": image, "label": label}

    return index_batches.unbatch().map(load, num_parallel_calls=tf.data.AUTOTUNE)

  return Source(description, len(data_source), examples)


def _tfds_builder(dataset):
  import tensorflow_datasets as tfds  # imported here: slow, and only TFDS sources need it

  name = f"{dataset.name}:{dataset.version}" if dataset.version else dataset.name
  try:
    return tfds.builder(name, data_dir=dataset.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
      f"unknown dataset {dataset.name!r}; use 'fashion_mnist', 'folder' or a TFDS "
      f"dataset name such as 'imagenet2012' or 'cifar10'"
    ) from None
  except AssertionError as e:  # TFDS's way of saying the version does not exist
    raise UserError(
      f"TFDS cannot build {name!r} ({str(e).splitlines()[0]}); fix --config.dataset.version"
    ) from None
  except ValueError as e:  # a name TFDS cannot parse: 'fashion-mnist', 'a b', '5.1'
    hint = f" (did you mean {dataset.name.replace('-', '_')!r}?)" if "-" in dataset.name else ""
    what = f"dataset.name {dataset.name!r}" + (
      f" (with dataset.version {dataset.version!r})" if dataset.version else ""
    )
    raise UserError(
      f"{what} is not a dataset name{hint}: use 'fashion_mnist', 'folder' or a TFDS "
      f"name (letters, digits, underscores) such as 'cifar10' "
      f"({str(e).splitlines()[0]})"
    ) from None


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
        f"--config.dataset.manual_dir to their folder); the first run converts them once"
      )
  elif builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
    tf.io.gfile.isdir(manual_dir) and tf.io.gfile.listdir(manual_dir)
  ):
    raise UserError(
      f"{builder.name} needs files downloaded by hand into {manual_dir} (or set "
      f"--config.dataset.manual_dir): {' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}"
    )
  if process_count > 1:  # every process would write the same files
    raise UserError(
      f"{builder.info.full_name} is not prepared in {builder.data_dir_root}; run "
      f"once as a single process to prepare it, then start the {process_count} processes"
    )
  if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    _check_download_reachable(builder)
  logging.info("preparing %s in %s as array_record (once)", builder.info.full_name, builder.data_dir)
  try:
    builder.download_and_prepare(
      file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
  except (OSError, tfds.download.DownloadError) as e:  # requests' errors are OSErrors
    raise UserError(
      f"{_not_prepared(builder)}, and downloading it failed "
      f"({' '.join(str(e).split())[:300]}); {_how_to_prepare(builder)}"
    ) from None


DOWNLOAD_PROBE_TIMEOUT = 5.0  # seconds to connect to a download host before calling it unreachable


def _not_prepared(builder) -> str:
  return f"TFDS {builder.info.full_name} is not prepared in {builder.data_dir_root}"


def _how_to_prepare(builder) -> str:
  return (
    f"run once where the download works (the first run prepares it into "
    f"<data_dir>/{builder.info.full_name}) and copy that folder to {builder.data_dir}, or "
    f"set --config.dataset.data_dir to a TFDS data_dir that holds it"
  )


def _check_download_reachable(builder) -> None:
  """Refuses at once, offline, a dataset TFDS would download: its download manager retries
  an unreachable host for minutes. The hosts are those of the builder's recorded URLs."""
  hosts = sorted(
    {
      (u.hostname, u.port or (443 if u.scheme == "https" else 80))
      for u in map(urlparse, builder.url_infos or ())
      if u.hostname
    }
  )
  errors = []
  for host, port in hosts:
    try:
      socket.create_connection((host, port), timeout=DOWNLOAD_PROBE_TIMEOUT).close()
      return
    except OSError as e:
      errors.append(f"{host}: {e.strerror or e}")
  if errors:
    raise UserError(
      f"{_not_prepared(builder)} and its download host cannot be reached "
      f"({'; '.join(errors)}); {_how_to_prepare(builder)}"
    )


def source(config, process_count: int = 1) -> Source:
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
      f"--out_file_format=array_record'"
    )
  if _split_name(dataset.split) not in info.splits:
    raise UserError(
      f"{info.full_name} has no split {dataset.split!r}; use one of "
      f"{sorted(info.splits)} in --config.dataset.split"
    )
  if config.model.num_classes == 0:  # unconditional: the dataset's first image feature, no label
    images = [k for k, f in info.features.items() if isinstance(f, tfds.features.Image)]
    if not images:
      raise UserError(f"{info.full_name} has no image feature; choose an image dataset")
    data_source = builder.as_data_source(
      split=dataset.split,
      file_format="array_record",
      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
    )
    return tfds_source(
      data_source, images[0], None, f"TFDS {info.full_name} split {dataset.split!r} (unlabelled)"
    )
  keys = info.supervised_keys
  if not (
    keys
    and all(isinstance(k, str) for k in keys)
    and isinstance(info.features[keys[0]], tfds.features.Image)
    and isinstance(info.features[keys[1]], tfds.features.ClassLabel)
  ):
    raise UserError(
      f"{info.full_name} is not a dataset of (image, class label) pairs; choose a class-labelled "
      f"image dataset, or train without labels (--config.model.num_classes=0)"
    )
  image_key, label_key = keys
  num_classes = info.features[label_key].num_classes
  if num_classes != config.model.num_classes:
    raise UserError(
      f"{info.full_name} has {num_classes} classes but model.num_classes is "
      f"{config.model.num_classes}; set --config.model.num_classes={num_classes}"
    )
  data_source = builder.as_data_source(
    split=dataset.split,
    file_format="array_record",
    deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
  )
  return tfds_source(data_source, image_key, label_key, f"TFDS {info.full_name} split {dataset.split!r}")
