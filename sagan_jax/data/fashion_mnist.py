"""The Fashion-MNIST IDX files: where they are, the one reader of them, and the in-memory
source the training reads them through.

The input pipeline, the Fashion-MNIST classifier and the evaluator all read these files;
they find and decode them here.
"""

import gzip
import os
import zlib

import numpy as np

from sagan_jax import workdir
from sagan_jax.data.source import Source, check_labels
from sagan_jax.errors import UserError

FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def cache_dir() -> str:
  """Where python -m sagan_jax.fetch_fashion_mnist puts them: the cache root's fashion-mnist/."""
  return os.fspath(workdir.cache_root() / "fashion-mnist")


def find_dir(data_dir: str = "") -> str:
  """data_dir itself, or '' for Debian's folder, then the download cache (the first that
  holds the training images; Debian's when neither does, for the error message)."""
  if data_dir:
    return os.fspath(data_dir)
  candidates = [SYSTEM_DIR, cache_dir()]
  return next((d for d in candidates if os.path.exists(os.path.join(d, FILES["train"][0]))), candidates[0])


def paths(split: str, data_dir: str = "") -> list:
  """The images and labels files of a split, refusing a missing one with what to do."""
  if split not in FILES:
    raise UserError(f"Fashion-MNIST split {split!r} does not exist; use 'train' or 'test'")
  data_dir = find_dir(data_dir)
  found = [os.path.join(data_dir, name) for name in FILES[split]]
  missing = [p for p in found if not os.path.exists(p)]
  if missing:
    raise UserError(
      f"Fashion-MNIST files not found: {', '.join(missing)}. Install them with "
      f"'apt-get install dataset-fashion-mnist' (or 'python -m sagan_jax.fetch_fashion_mnist'), "
      f"or set --config.dataset.data_dir to the folder holding the four IDX .gz files"
    )
  return found


IDX_UINT8 = 0x08  # byte 2 of an IDX header: the element type (unsigned byte)


def read_idx(path: str) -> np.ndarray:
  """gzip IDX file (bytes 0-1 zero, byte 2 the type, byte 3 the rank, then big-endian uint32
  dims, then uint8 data). A truncated, corrupt or foreign file is refused naming it."""
  redo = (
    "; download it again (python -m sagan_jax.fetch_fashion_mnist DIR) or reinstall dataset-fashion-mnist"
  )
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
    raise UserError(f"{path} is truncated or not a gzip file ({e}){redo}") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UINT8:
    raise UserError(f"{path} is not an IDX file of bytes (its header is {data[:4]!r}){redo}")
  rank = data[3]
  header = 4 + 4 * rank
  if len(data) < header:
    raise UserError(f"{path} ends inside its IDX header{redo}")
  dims = np.frombuffer(data, ">u4", count=rank, offset=4)
  expected = header + int(np.prod(dims, dtype=np.int64))
  if len(data) != expected:
    raise UserError(
      f"{path} holds {len(data) - header} bytes of data but its header "
      f"{tuple(int(d) for d in dims)} needs {expected - header}{redo}"
    )
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def load(split: str, data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of a split."""
  images_path, labels_path = paths(split, data_dir)
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise UserError(
      f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) are not "
      f"the images (N, 28, 28) and labels (N,) of one split; check the files"
    )
  return images[..., None], labels.astype(np.int32)


def in_memory_source(images: np.ndarray, labels: np.ndarray, description: str) -> Source:
  """Images (N, H, W, C) uint8 and labels held in memory, gathered by index."""
  import tensorflow as tf

  from sagan_jax.data.preprocess import flip_seed, preprocess

  def examples(index_batches, config):
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    m = config.model
    return index_batches.unbatch().map(
      lambda e: {
        "image": preprocess(
          tf.gather(images_t, e["index"]),
          resolution=m.resolution,
          channels=m.image_channels,
          flip_seed=flip_seed(config, e["position"]),
        ),
        "label": tf.gather(labels_t, e["index"]),
      },
      num_parallel_calls=tf.data.AUTOTUNE,
    )

  return Source(description, len(labels), examples)


def source(config) -> Source:
  """The split config.dataset names, its labels checked against the model."""
  images, labels = load(config.dataset.split, config.dataset.data_dir)
  description = f"dataset {config.dataset.name!r}"
  check_labels(labels, config.model.num_classes, description)
  return in_memory_source(images, labels, description)
