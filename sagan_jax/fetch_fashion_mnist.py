"""Downloads the Fashion-MNIST IDX files where Debian's dataset-fashion-mnist is unavailable.

  python -m sagan_jax.fetch_fashion_mnist [--dir=DIR]   (default: the cache root's fashion-mnist/,
      $XDG_CACHE_HOME/sagan_jax/fashion-mnist or ~/.cache/sagan_jax/fashion-mnist, where the
      package looks after Debian's folder)

Uses TFDS's download manager (retries, checksums recorded) on the files' canonical URLs.
Offline, it stops at once with one line instead of retrying for minutes.
"""

import os
import shutil
import socket
import sys
from urllib.parse import urlparse

from sagan_jax.data.fashion_mnist import FILES, cache_dir
from sagan_jax.errors import UserError

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
PROBE_TIMEOUT = 5.0  # seconds to connect to the download host before calling it unreachable


def _instead(target: str) -> str:
  return (
    f"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or "
    f"copy the four IDX .gz files ({', '.join(n for pair in FILES.values() for n in pair)}) "
    f"into {target}"
  )


def fetch(target: str) -> None:
  names = [n for pair in FILES.values() for n in pair]
  host = urlparse(URL)
  try:
    socket.create_connection((host.hostname, host.port or 80), timeout=PROBE_TIMEOUT).close()
  except OSError as e:
    raise UserError(
      f"cannot reach {host.hostname} to download Fashion-MNIST ({e.strerror or e}); {_instead(target)}"
    ) from None
  try:
    os.makedirs(target, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {target} ({e.strerror}); pass another folder") from None
  import tensorflow_datasets as tfds

  manager = tfds.download.DownloadManager(download_dir=os.path.join(target, "downloads"))
  try:
    paths = manager.download({n: URL + n for n in names})
  except (OSError, tfds.download.DownloadError) as e:  # requests' errors are OSErrors
    raise UserError(
      f"downloading Fashion-MNIST failed ({' '.join(str(e).split())[:300]}); {_instead(target)}"
    ) from None
  for name, path in paths.items():
    shutil.copy(os.fspath(path), os.path.join(target, name))
  print(f"Fashion-MNIST IDX files are in {target}")


def _main(argv) -> None:
  del argv  # cli.parse_flags refuses positional arguments
  from absl import flags

  from sagan_jax import cli

  cli.run(fetch, os.path.expanduser(flags.FLAGS.dir or cache_dir()))


def main(argv) -> None:
  """The tool's entry point; ``python -m sagan_jax.fetch_fashion_mnist DIR``, the old spelling,
  is read as --dir=DIR."""
  from absl import app, flags

  from sagan_jax import cli

  flags.DEFINE_string("dir", "", "folder to put the four IDX .gz files in (default: the cache)")
  if len(argv) == 2 and not argv[1].startswith("-"):
    argv = [argv[0], f"--dir={argv[1]}"]
  app.run(_main, argv=argv, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  main(sys.argv)
