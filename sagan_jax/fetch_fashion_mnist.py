"""Downloads the Fashion-MNIST IDX files where Debian's dataset-fashion-mnist is unavailable.

  python -m sagan_jax.fetch_fashion_mnist [DIR]   (default: ~/.cache/sagan_jax/fashion-mnist)

Uses TFDS's download manager (retries, checksums recorded) on the files' canonical URLs.
Offline, it stops at once with one line instead of retrying for minutes.
"""
import os
import shutil
import socket
import sys
from urllib.parse import urlparse

from sagan_jax.errors import UserError
from sagan_jax.fashion_mnist import CACHE_DIR, FILES

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
PROBE_TIMEOUT = 5.0  # seconds to connect to the download host before calling it unreachable


def _instead(target: str) -> str:
  return (f"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or "
          f"copy the four IDX .gz files ({', '.join(n for pair in FILES.values() for n in pair)}) "
          f"into {target}")


def fetch(target: str) -> None:
  names = [n for pair in FILES.values() for n in pair]
  host = urlparse(URL)
  try:
    socket.create_connection((host.hostname, host.port or 80), timeout=PROBE_TIMEOUT).close()
  except OSError as e:
    raise UserError(f"cannot reach {host.hostname} to download Fashion-MNIST "
                    f"({e.strerror or e}); {_instead(target)}") from None
  try:
    os.makedirs(target, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {target} ({e.strerror}); pass another folder") from None
  import tensorflow_datasets as tfds
  manager = tfds.download.DownloadManager(download_dir=os.path.join(target, "downloads"))
  try:
    paths = manager.download({n: URL + n for n in names})
  except (OSError, tfds.download.DownloadError) as e:  # requests' errors are OSErrors
    raise UserError(f"downloading Fashion-MNIST failed ({' '.join(str(e).split())[:300]}); "
                    f"{_instead(target)}") from None
  for name, path in paths.items():
    shutil.copy(os.fspath(path), os.path.join(target, name))
  print(f"Fashion-MNIST IDX files are in {target}")


def main(argv) -> None:
  from sagan_jax import cli
  if len(argv) > 2:
    print(f"error: unexpected arguments: {' '.join(argv[2:])}; usage: python -m "
          f"sagan_jax.fetch_fashion_mnist [DIR]", file=sys.stderr)
    sys.exit(2)
  cli.exit_on_second_signal()
  cli.run(fetch, os.path.expanduser(argv[1] if len(argv) > 1 else CACHE_DIR))


if __name__ == "__main__":
  main(sys.argv)
