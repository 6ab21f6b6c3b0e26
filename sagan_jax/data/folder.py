"""An image folder ``root/<class_name>/*.jpg|jpeg|png`` as a source: classes sorted by name
(recorded in the workdir's label map), every class checked to decode, undecodable files skipped
without moving the stream's positions."""

import logging
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from sagan_jax import workdir as workdir_lib
from sagan_jax.data.preprocess import decode_and_preprocess, flip_seed
from sagan_jax.data.source import Source, check_labels
from sagan_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared lower-case: ImageNet's files end in .JPEG


class ImageFolder(NamedTuple):
  paths: np.ndarray  # (N,) str, sorted by class, then by file name
  labels: np.ndarray  # (N,) int32
  class_names: list  # label -> class folder name


def list_image_folder(root: str) -> ImageFolder:
  """root/<class_name>/*.jpg|png; labels follow the sorted class names."""
  if not root or not tf.io.gfile.isdir(root):
    raise UserError(
      f"image folder {root!r} does not exist; set --config.dataset.data_dir to a "
      f"folder holding one subfolder of images per class"
    )
  class_names = sorted(
    d.rstrip("/") for d in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(os.path.join(root, d))
  )
  if not class_names:
    raise UserError(
      f"image folder {root!r} has no class subfolders; put the images of each "
      f"class into their own subfolder root/<class_name>/"
    )
  paths, labels = [], []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(root, name)
    files = sorted(f for f in tf.io.gfile.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise UserError(
        f"class folder {class_dir!r} holds no .jpg/.jpeg/.png image; add images or remove the folder"
      )
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
      image = decode_and_preprocess(tf.io.read_file(paths[i]), resolution=resolution, channels=channels)
      return label, tf.reduce_min(image)  # an output of the decode: never pruned

    return (
      tf.data.Dataset.range(starts[label], starts[label + 1])
      .map(attempt)
      .ignore_errors()
      .take(1)
      .map(lambda label, _: label)
    )

  found = tf.data.Dataset.range(num_classes).interleave(
    first_decodable,
    cycle_length=DECODE_CHECK_PARALLELISM,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=False,
  )
  decodable = {int(label) for label in found.as_numpy_iterator()}
  return [label for label in range(num_classes) if label not in decodable]


def check_folder_decodes(folder: ImageFolder, root: str, resolution: int, channels: int) -> None:
  """Refuses a folder with a class (or no class at all) whose files all fail to decode."""
  bad = undecodable_classes(folder, resolution, channels)
  if len(bad) == len(folder.class_names):
    raise UserError(
      f"no file of image folder {root!r} decodes as an image ({len(folder.paths)} "
      f"tried); check that the files are JPEG/PNG images and not truncated"
    )
  if bad:
    counts = np.bincount(folder.labels, minlength=len(folder.class_names))
    names = ", ".join(f"{folder.class_names[c]!r} (label {c}, {counts[c]} files)" for c in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise UserError(
      f"no file of class folder(s) {names}{more} in {root!r} decodes as an image, "
      f"so the class would never be trained; replace its files or remove the folder "
      f"(and lower model.num_classes)"
    )


def write_label_map(workdir: str, class_names: list, write: bool = True) -> str:
  """workdir/label_map.txt, '<label>\t<class name>' per line; refuses classes changed since."""
  path = workdir_lib.path(workdir, workdir_lib.LABEL_MAP)
  text = "".join(f"{label}\t{name}\n" for label, name in enumerate(class_names))
  if path.exists():
    if path.read_bytes().decode(errors="replace") != text:
      raise UserError(
        f"the class folders differ from {path}, the label map this workdir was "
        f"trained with; restore the folders or start a new --workdir"
      )
  elif write:
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_atomic(path, text)
  return os.fspath(path)


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
        image = decode_and_preprocess(
          tf.io.read_file(paths[i]),
          resolution=m.resolution,
          channels=m.image_channels,
          flip_seed=flip_seed(config, e["position"]),
        )
        return {"image": image, "label": labels[i], "skipped": offset, "skipped_file": paths[e["index"]]}

      # A sentinel after the n attempts: no file decodes. The host iterator refuses it
      # instead of the interleave drawing example after example forever.
      none_decodes = tf.data.Dataset.from_tensors(
        {
          "image": tf.zeros([m.resolution, m.resolution, m.image_channels], tf.float32),
          "label": tf.constant(-1, tf.int32),
          "skipped": tf.constant(n, tf.int64),
          "skipped_file": paths[e["index"]],
        }
      )
      return tf.data.Dataset.range(n).map(attempt).ignore_errors().take(1).concatenate(none_decodes).take(1)

    # Each inner dataset yields exactly one example, so the interleave keeps the input order.
    return index_batches.unbatch().interleave(
      first_decodable, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )

  return Source(description, n, examples, tuple(folder.class_names))


def source(config, workdir: str | None = None, write: bool = True) -> Source:
  """The folder config.dataset.data_dir names, checked against the model (labels, classes,
  decodable files); ``workdir`` receives (write) or is checked against (write=False) its label
  map."""
  dataset, model = config.dataset, config.model
  folder = list_image_folder(dataset.data_dir)
  description = f"image folder {dataset.data_dir!r}"
  check_labels(folder.labels, model.num_classes, description)
  check_folder_decodes(folder, dataset.data_dir, model.resolution, model.image_channels)
  built = folder_source(folder, description)
  if workdir:
    path = write_label_map(workdir, list(built.class_names), write=write)
    logging.info(
      "%s: %d images of %d classes; label map in %s",
      built.description,
      built.num_examples,
      len(built.class_names),
      path,
    )
  return built
