"""An image folder ``root/<class_name>/**/*.jpg|jpeg|png`` as a source: classes sorted by name
(recorded in the workdir's label map), images in nested folders read with their class, every
class checked at start to decode, undecodable files skipped without moving the stream's
positions.

Only regular files are images (a FIFO or device named like one would block the reader);
hidden names (``.*``, macOS's ``._*`` resource forks) are passed over, and so are links that
lead nowhere or back into a folder already read, each kind named in one warning at start."""

import collections
import logging
import os
import stat
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from sagan_jax import workdir as workdir_lib
from sagan_jax.data.image_files import is_image_name
from sagan_jax.data.preprocess import decode_and_preprocess, flip_seed
from sagan_jax.data.source import Source, check_labels
from sagan_jax.errors import UserError

# Files of each class decoded at start (spread over the class in sorted order): a class whose
# share of decodable ones falls below dataset.min_decodable_fraction is refused.
DECODE_CHECK_FILES = 16


class ImageFolder(NamedTuple):
  paths: np.ndarray  # (N,) str, sorted by class, then by path within the class folder
  labels: np.ndarray  # (N,) int32
  class_names: list  # label -> class folder name


def _local_images(class_dir: str, passed_over: dict) -> list:
  """The image files under a local ``class_dir``, links followed; what is not read is counted
  in ``passed_over`` by reason, with the first path of each."""

  def note(reason, where):
    passed_over.setdefault(reason, [0, where])[0] += 1

  files, seen = [], set()
  pending = [class_dir]
  while pending:
    folder = pending.pop()
    info = os.stat(folder)
    if (info.st_dev, info.st_ino) in seen:
      note("links back into a folder already read", folder)
      continue
    seen.add((info.st_dev, info.st_ino))
    try:
      entries = list(os.scandir(folder))
    except OSError as e:
      note(f"unreadable folders ({e.strerror})", folder)
      continue
    for entry in entries:
      if entry.name.startswith("."):
        continue
      try:
        mode = os.stat(entry.path).st_mode  # through links
      except OSError:
        note("links that lead nowhere", entry.path)
        continue
      if stat.S_ISDIR(mode):
        pending.append(entry.path)
      elif is_image_name(entry.name):
        if stat.S_ISREG(mode):
          files.append(entry.path)
        else:
          note("image names that are not regular files (FIFOs, devices, sockets)", entry.path)
  return files


def _remote_images(class_dir: str) -> list:
  """The image objects under a bucket's ``class_dir`` (an object store has only regular files)."""
  files = []
  for folder, subfolders, names in tf.io.gfile.walk(class_dir):
    subfolders[:] = [d for d in subfolders if not d.startswith(".")]
    files += [os.path.join(folder, name) for name in names if is_image_name(name)]
  return files


def list_image_folder(root: str) -> ImageFolder:
  """root/<class_name>/…/*.jpg|png; labels follow the sorted class names."""
  if not root or not tf.io.gfile.isdir(root):
    raise UserError(
      f"image folder {root!r} does not exist; set --config.dataset.data_dir to a "
      f"folder holding one subfolder of images per class"
    )
  class_names = sorted(
    name
    for name in (d.rstrip("/") for d in tf.io.gfile.listdir(root))
    if not name.startswith(".") and tf.io.gfile.isdir(os.path.join(root, name))
  )
  flat = not class_names
  if flat:  # images directly in root: one unnamed class (an unconditional model's data)
    class_names = [""]
  paths, labels, passed_over = [], [], {}
  for label, name in enumerate(class_names):
    class_dir = os.path.join(root, name) if name else root
    files = (
      _remote_images(class_dir) if workdir_lib.is_remote(root) else _local_images(class_dir, passed_over)
    )
    if flat and not files:
      raise UserError(
        f"image folder {root!r} holds no class subfolder and no .jpg/.jpeg/.png image; put the images "
        f"of each class into their own subfolder root/<class_name>/ (or, to train without labels, "
        f"the images themselves)"
      )
    if not files:
      raise UserError(
        f"class folder {class_dir!r} holds no .jpg/.jpeg/.png image file; add images or remove the folder"
      )
    paths += sorted(files, key=lambda f: os.path.relpath(f, class_dir))
    labels += [label] * len(files)
  for reason, (count, first) in passed_over.items():
    logging.warning("image folder %r: %d %s passed over (e.g. %s)", root, count, reason, first)
  return ImageFolder(np.asarray(paths), np.asarray(labels, np.int32), class_names)


def decode_check_indices(folder: ImageFolder, per_class: int = DECODE_CHECK_FILES) -> np.ndarray:
  """Up to ``per_class`` file indices of each class, spread evenly over it in sorted order."""
  starts = np.searchsorted(folder.labels, np.arange(len(folder.class_names) + 1))
  picks = [
    np.unique(np.linspace(start, end - 1, min(per_class, end - start)).round().astype(np.int64))
    for start, end in zip(starts[:-1], starts[1:], strict=True)
  ]
  return np.concatenate(picks)


def decodable_counts(folder: ImageFolder, resolution: int, channels: int) -> tuple:
  """(tried, decoded) per class: of each class's decode_check_indices, how many decode into a
  model image."""
  indices = decode_check_indices(folder)
  num_classes = len(folder.class_names)
  tried = np.bincount(folder.labels[indices], minlength=num_classes)
  paths, labels = tf.constant(folder.paths[indices]), tf.constant(folder.labels[indices])

  def attempt(i):
    image = decode_and_preprocess(tf.io.read_file(paths[i]), resolution=resolution, channels=channels)
    return labels[i], tf.reduce_min(image)  # an output of the decode: never pruned

  decoded_labels = (
    tf.data.Dataset.range(len(indices))
    .map(attempt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    .ignore_errors()
    .map(lambda label, _: label)
  )
  decoded = np.bincount(np.fromiter(decoded_labels.as_numpy_iterator(), np.int64), minlength=num_classes)
  return tried, decoded


def check_folder_decodes(
  folder: ImageFolder, root: str, resolution: int, channels: int, min_fraction: float
) -> None:
  """Refuses a folder where no file decodes, or with a class of which fewer than
  ``min_fraction`` of the files tried decode (training would draw its few good files over and
  over, or the next class's, in their place); logs each class's count otherwise."""
  tried, decoded = decodable_counts(folder, resolution, channels)
  if not decoded.any():
    raise UserError(
      f"no file of image folder {root!r} decodes as an image ({int(tried.sum())} tried); check "
      f"that the files are JPEG/PNG images and not truncated"
    )
  counts = np.bincount(folder.labels, minlength=len(folder.class_names))
  bad = [c for c in range(len(counts)) if decoded[c] < min_fraction * tried[c] or not decoded[c]]
  if bad:
    names = ", ".join(
      f"{folder.class_names[c]!r} (label {c}, {counts[c]} files: {decoded[c]} of {tried[c]} tried decode)"
      for c in bad[:5]
    )
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    never = ", so the class would never be trained" if all(not decoded[c] for c in bad) else ""
    raise UserError(
      f"too few files of class folder(s) {names}{more} in {root!r} decode as an image "
      f"(dataset.min_decodable_fraction is {min_fraction}){never}; replace the bad files, remove "
      f"the folder (and lower model.num_classes) or lower dataset.min_decodable_fraction"
    )
  per_class = collections.Counter(zip(decoded.tolist(), tried.tolist(), strict=True))
  logging.info(
    "image folder %r: %d classes, %d–%d files each; decodable at start (decoded/tried: classes) %s",
    root,
    len(counts),
    counts.min(),
    counts.max(),
    ", ".join(f"{d}/{t}: {n}" for (d, t), n in sorted(per_class.items())),
  )


def _first_difference(saved: str, class_names: list) -> str:
  """Where a saved label map and the folders' classes part, in words."""
  lines = saved.splitlines()
  for label, name in enumerate(class_names):
    if label >= len(lines):
      return f"it ends after {len(lines)} of the {len(class_names)} classes"
    if lines[label] != f"{label}\t{name}":
      return f"line {label + 1} reads {lines[label][:60]!r}, the folders give label {label} to {name!r}"
  return f"it lists {len(lines)} classes, the folders {len(class_names)}"


def write_label_map(workdir: str, class_names: list, write: bool = True) -> str:
  """workdir/label_map.txt, '<label>\t<class name>' per line; refuses classes changed since."""
  path = workdir_lib.path(workdir, workdir_lib.LABEL_MAP)
  text = "".join(f"{label}\t{name}\n" for label, name in enumerate(class_names))
  if path.exists():
    saved = path.read_bytes().decode(errors="replace")
    if saved != text:
      raise UserError(
        f"the class folders differ from {path}, the label map this workdir was trained with "
        f"({_first_difference(saved, class_names)}); restore the folders or start a new --workdir "
        f"(or, if the file is what was damaged and the folders are as trained, delete it: it is "
        f"written again)"
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
  if folder.class_names == [""] and model.num_classes:
    raise UserError(
      f"{description} holds images but no class subfolders; put each class into its own "
      f"subfolder root/<class_name>/, or train without labels with --config.model.num_classes=0"
    )
  check_labels(folder.labels, model.num_classes, description)
  check_folder_decodes(
    folder, dataset.data_dir, model.resolution, model.image_channels, dataset.min_decodable_fraction
  )
  built = folder_source(folder, description)
  if folder.class_names == [""]:
    built = built._replace(class_names=())  # no classes: no label map
  if workdir and built.class_names:
    path = write_label_map(workdir, list(built.class_names), write=write)
    logging.info(
      "%s: %d images of %d classes; label map in %s",
      built.description,
      built.num_examples,
      len(built.class_names),
      path,
    )
  return built
