"""The Fashion-MNIST IDX files: where they are and the one reader of them.

The input pipeline, the Fashion-MNIST classifier and the evaluator all read these
files; they find and decode them here.
"""
import gzip
import os

import numpy as np

from sagan_jax.errors import UserError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
CACHE_DIR = "~/.cache/sagan_jax/fashion-mnist"    # python -m sagan_jax.fetch_fashion_mnist


def find_dir(data_dir: str = "") -> str:
  """data_dir itself, or '' for Debian's folder, then the download cache (the first that
  holds the training images; Debian's when neither does, for the error message)."""
  if data_dir:
    return os.fspath(data_dir)
  candidates = [SYSTEM_DIR, os.path.expanduser(CACHE_DIR)]
  return next((d for d in candidates if os.path.exists(os.path.join(d, FILES["train"][0]))),
              candidates[0])


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
        f"or set --config.dataset.data_dir to the folder holding the four IDX .gz files")
  return found


def read_idx(path: str) -> np.ndarray:
  """gzip IDX file (byte 3 is the rank, then big-endian uint32 dims, then uint8 data)."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  dims = np.frombuffer(data, ">u4", count=data[3], offset=4)
  return np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def load(split: str, data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of a split."""
  images, labels = (read_idx(p) for p in paths(split, data_dir))
  return images[..., None], labels.astype(np.int32)
