"""Downloads the Fashion-MNIST IDX files where Debian's dataset-fashion-mnist is unavailable.

  python -m sagan_jax.fetch_fashion_mnist [DIR]   (default: ~/.cache/sagan_jax/fashion-mnist)

Uses TFDS's download manager (retries, checksums recorded) on the files' canonical URLs.
"""
import os
import shutil
import sys

from sagan_jax.fashion_mnist import CACHE_DIR, FILES

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def fetch(target: str) -> None:
  import tensorflow_datasets as tfds
  os.makedirs(target, exist_ok=True)
  names = [n for pair in FILES.values() for n in pair]
  manager = tfds.download.DownloadManager(download_dir=os.path.join(target, "downloads"))
  paths = manager.download({n: URL + n for n in names})
  for name, path in paths.items():
    shutil.copy(os.fspath(path), os.path.join(target, name))
  print(f"Fashion-MNIST IDX files are in {target}")


if __name__ == "__main__":
  fetch(os.path.expanduser(sys.argv[1] if len(sys.argv) > 1 else CACHE_DIR))
