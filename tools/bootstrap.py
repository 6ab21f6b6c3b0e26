#!/usr/bin/env python3
"""Creates .venv and installs the pinned packages for this host's accelerator (make venv).

cpu:  requirements.txt + requirements-test.txt (jaxlib's CPU build)
cuda: the same + requirements-cuda.txt (JAX's CUDA plugin, CUDA libraries from pip wheels)
tpu:  the same + requirements-tpu.txt (libtpu)

ACCELERATOR=cpu|cuda|tpu (or --accelerator) overrides the detection: an NVIDIA GPU when
`nvidia-smi -L` lists one, a TPU when a TPU chip is on the PCI bus (what JAX checks itself),
a /dev/accelN node exists (TPU v2-v5e) or a TPU launcher's variables are set.
DRY_RUN=1 (or --dry-run) prints the commands instead of running them.
Standard library only: it runs before the venv exists.
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the detection lives in the package (standard library only)
from sagan_jax.accelerator import ACCELERATORS, choose  # noqa: E402

BASE_REQUIREMENTS = ("requirements.txt", "requirements-test.txt")


def log(message):
  print(f"bootstrap: {message}", file=sys.stderr)


def requirement_files(accelerator):
  extra = () if accelerator == "cpu" else (f"requirements-{accelerator}.txt",)
  return BASE_REQUIREMENTS + extra


def _names(path):
  """Normalised project names in a requirements file."""
  names = set()
  with open(os.path.join(ROOT, path)) as f:
    for line in f:
      match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0])
      if match:
        names.add(re.sub(r"[-_.]+", "_", match.group(1)).lower())
  return names


def stale_packages(venv, accelerator):
  """Packages of another accelerator installed in venv: left there, JAX would still load them."""
  base = set().union(*(_names(p) for p in BASE_REQUIREMENTS))
  others = set()
  for other in ACCELERATORS:
    if other not in ("cpu", accelerator):
      others |= _names(f"requirements-{other}.txt") - base
  installed = {
      re.sub(r"[-_.]+", "_", os.path.basename(d).split("-")[0]).lower()
      for d in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.dist-info"))}
  return sorted(others & installed)


def commands(venv, accelerator, python):
  py = os.path.join(venv, "bin", "python")
  cmds = []
  if not os.access(os.path.join(ROOT, py), os.X_OK):
    cmds.append([python, "-m", "venv", venv])
  cmds.append([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
  stale = stale_packages(os.path.join(ROOT, venv), accelerator)
  if stale:
    cmds.append([py, "-m", "pip", "uninstall", "-q", "-y", *stale])
  install = [py, "-m", "pip", "install", "-q"]
  for path in requirement_files(accelerator):
    install += ["-r", path]
  # the package itself, editable: experiments/ and tests import it from the source tree
  editable = [py, "-m", "pip", "install", "-q", "--no-deps", "-e", "."]
  return cmds + [install, editable]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--venv", default=".venv", help="virtualenv path, relative to the repo root")
  parser.add_argument("--python", default=sys.executable, help="the python that creates the venv")
  parser.add_argument("--accelerator", default=os.environ.get("ACCELERATOR", ""),
                      help="cpu, cuda or tpu (default: $ACCELERATOR, else detected)")
  parser.add_argument("--dry-run", action="store_true", default=bool(os.environ.get("DRY_RUN")),
                      help="print the commands instead of running them (also DRY_RUN=1)")
  parser.add_argument("--print-accelerator", action="store_true",
                      help="print the accelerator chosen and exit (the Makefile names its stamp)")
  parser.add_argument("--root", default="/", help=argparse.SUPPRESS)  # fake /sys, /dev in tests
  args = parser.parse_args(argv)
  try:
    accelerator, why = choose(args.accelerator.strip(), args.root)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.print_accelerator:
    log(f"accelerator {accelerator} ({why})")
    print(accelerator)
    return 0
  cmds = commands(args.venv, accelerator, args.python)
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(cmd))
    return 0
  log(f"installing for {accelerator}")
  # A stamp is valid for one accelerator: drop them all before the venv changes.
  for stamp in glob.glob(os.path.join(ROOT, args.venv, ".installed*")):
    os.remove(stamp)
  for cmd in cmds:
    subprocess.run(cmd, cwd=ROOT, check=True)
  open(os.path.join(ROOT, args.venv, f".installed-{accelerator}"), "w").close()
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except subprocess.CalledProcessError as e:
    print(f"error: {shlex.join(e.cmd)} exited {e.returncode}", file=sys.stderr)
    sys.exit(1)
