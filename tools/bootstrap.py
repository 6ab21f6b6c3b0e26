#!/usr/bin/env python3
"""Creates .venv and installs the pinned packages for this host's accelerator (make venv).

cpu:    requirements.txt (jaxlib's CPU build)
cuda12: the same + requirements-cuda12.txt (JAX's CUDA 12 plugin, CUDA libraries as pip wheels)
cuda13: the same + requirements-cuda13.txt (CUDA 13: needs NVIDIA driver 580 or newer)
tpu:    the same + requirements-tpu.txt (libtpu)
plan:   requirements.txt + requirements-plan.txt, for `make plan-venv` (.venv-plan): the TPU and
        CUDA compilers python -m sagan_jax.plan uses on a host without the chips
--tests adds requirements-test.txt to the first four (make test: pytest, ruff, Playwright and
the PyTorch references, ~4 GB with PyPI's torch), so `make train` alone installs none of it.

ACCELERATOR=cpu|cuda|cuda12|cuda13|tpu (or --accelerator) overrides the detection: an NVIDIA
GPU when `nvidia-smi -L` lists one (CUDA 13 where the driver runs it, else 12; `cuda` picks the
same way), a TPU when a TPU chip is on the PCI bus (what JAX checks itself), a /dev/accelN
node exists (TPU v2-v5e) or a TPU launcher's variables are set.

The venv's Python is the first of $PYTHON (or --python), python3.13, python3.12, python3 that
runs and is 3.12 or newer (jax 0.11 and later need it); a pyenv shim of a version that is
not selected is resolved to that version's interpreter. A venv of an older Python is recreated.
DRY_RUN=1 (or --dry-run) prints the commands instead of running them.
Standard library only: it runs before the venv exists, on any python3.
"""

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the detection lives in the package (standard library only)
from sagan_jax.accelerator import ACCELERATORS, choose  # noqa: E402

BASE_REQUIREMENTS = ("requirements.txt",)
TEST_REQUIREMENTS = "requirements-test.txt"
MIN_PYTHON = (3, 12)
PYTHON_CANDIDATES = ("python3.13", "python3.12", "python3")
NO_PYTHON = (
  "no Python 3.12 or newer found (tried {tried}); install one (Debian/Ubuntu: "
  "apt-get install python3.12-venv; pyenv: pyenv install 3.13; uv: uv python install "
  "3.13) and rerun, or name it with PYTHON=/path/to/python3.12"
)


def log(message):
  print(f"bootstrap: {message}", file=sys.stderr)


PLAN = "plan"  # not an accelerator: the compilers for the planner, in a venv of their own


def requirement_files(accelerator, tests=False):
  if accelerator == PLAN:
    return ("requirements.txt", "requirements-plan.txt")
  extra = () if accelerator == "cpu" else (f"requirements-{accelerator}.txt",)
  return BASE_REQUIREMENTS + ((TEST_REQUIREMENTS,) if tests else ()) + extra


def stamps(accelerator, tests=False):
  """The stamp files an install writes: the Makefile's targets `venv` and `test-venv` wait on them."""
  return (f".installed-{accelerator}",) + ((f".installed-{accelerator}-tests",) if tests else ())


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
  if accelerator == PLAN:
    return []  # the planner's venv holds the TPU and CUDA compilers on purpose
  base = set().union(*(_names(p) for p in BASE_REQUIREMENTS + (TEST_REQUIREMENTS,)))
  others = set()
  for other in ACCELERATORS:
    if other not in ("cpu", accelerator):
      others |= _names(f"requirements-{other}.txt") - base
  installed = {
    re.sub(r"[-_.]+", "_", os.path.basename(d).split("-")[0]).lower()
    for d in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.dist-info"))
  }
  return sorted(others & installed)


def python_version(executable):
  """(major, minor) of the Python ``executable`` runs, or None where it does not run."""
  try:
    out = subprocess.run(
      [executable, "-c", "import sys; print(*sys.version_info[:2])"],
      capture_output=True,
      text=True,
      timeout=60,
    )
  except (OSError, subprocess.TimeoutExpired):
    return None
  parts = out.stdout.split()
  return (int(parts[0]), int(parts[1])) if out.returncode == 0 and len(parts) == 2 else None


def pyenv_interpreters(name):
  """Paths of ``name`` in the pyenv versions that have it, newest first: a pyenv shim runs only
  the versions pyenv selects, so python3.13 on PATH may fail although 3.13 is installed."""
  if shutil.which("pyenv") is None:
    return []
  run = lambda *args: subprocess.run(["pyenv", *args], capture_output=True, text=True, timeout=60)
  try:
    versions = run("whence", name).stdout.split()
    prefixes = [run("prefix", v).stdout.strip() for v in reversed(versions)]
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [os.path.join(p, "bin", name) for p in prefixes if p]


def find_python(requested=""):
  """(path, (major, minor)) of the Python the venv is made with; ValueError if there is none."""
  if requested:
    version = python_version(requested)
    if version is None:
      raise ValueError(f"PYTHON={requested} does not run; name a Python 3.12 or newer")
    if version < MIN_PYTHON:
      raise ValueError(
        f"PYTHON={requested} is Python {version[0]}.{version[1]}; sagan_jax needs "
        f"3.12 or newer (jax 0.11 and later); name another, or leave PYTHON unset"
      )
    return requested, version
  for name in PYTHON_CANDIDATES:
    found = shutil.which(name)
    for path in ([found] if found else []) + pyenv_interpreters(name):
      version = python_version(path)
      if version is not None and version >= MIN_PYTHON:
        return path, version
  raise ValueError(NO_PYTHON.format(tried=", ".join(PYTHON_CANDIDATES)))


def commands(venv, accelerator, python, tests=False):
  py = os.path.join(venv, "bin", "python")
  cmds = []
  venv_python = os.path.join(ROOT, py)
  if not os.access(venv_python, os.X_OK):
    cmds.append([python, "-m", "venv", venv])
  elif (python_version(venv_python) or (0, 0)) < MIN_PYTHON:
    cmds.append([python, "-m", "venv", "--clear", venv])  # a venv of an older Python: anew
  cmds.append([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
  stale = stale_packages(os.path.join(ROOT, venv), accelerator)
  if stale:
    cmds.append([py, "-m", "pip", "uninstall", "-q", "-y", *stale])
  install = [py, "-m", "pip", "install", "-q"]
  for path in requirement_files(accelerator, tests):
    install += ["-r", path]
  # the package itself, editable: experiments/ and tests import it from the source tree
  editable = [py, "-m", "pip", "install", "-q", "--no-deps", "-e", "."]
  return cmds + [install, editable]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--venv", default=".venv", help="virtualenv path, relative to the repo root")
  parser.add_argument(
    "--python",
    default=os.environ.get("PYTHON", ""),
    help="the Python 3.12+ that creates the venv (default: $PYTHON, else the first "
    "of python3.13, python3.12, python3 that is 3.12 or newer)",
  )
  parser.add_argument(
    "--accelerator",
    default=os.environ.get("ACCELERATOR", ""),
    help="cpu, cuda (the driver's CUDA major), cuda12, cuda13 or tpu (default: $ACCELERATOR, else detected)",
  )
  parser.add_argument(
    "--tests",
    action="store_true",
    help="also install requirements-test.txt (what make test, make lint need)",
  )
  parser.add_argument(
    "--dry-run",
    action="store_true",
    default=bool(os.environ.get("DRY_RUN")),
    help="print the commands instead of running them (also DRY_RUN=1)",
  )
  parser.add_argument(
    "--print-accelerator",
    action="store_true",
    help="print the accelerator chosen and exit (the Makefile names its stamp)",
  )
  parser.add_argument("--root", default="/", help=argparse.SUPPRESS)  # fake /sys, /dev in tests
  args = parser.parse_args(argv)
  try:
    if args.accelerator.strip() == PLAN:
      accelerator, why = PLAN, "the planner's compilers"
    else:
      accelerator, why = choose(args.accelerator.strip(), args.root)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.print_accelerator:
    log(f"accelerator {accelerator} ({why})")
    print(accelerator)
    return 0
  try:
    python, version = find_python(args.python.strip())
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  log(f"accelerator {accelerator} ({why}); Python {version[0]}.{version[1]} ({python})")
  tests = args.tests and accelerator != PLAN
  cmds = commands(args.venv, accelerator, python, tests)
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(cmd))
    return 0
  log(f"installing for {accelerator}" + (" with the test requirements" if tests else ""))
  # A stamp is valid for one accelerator and one set of files: drop them all before the venv changes.
  for stamp in glob.glob(os.path.join(ROOT, args.venv, ".installed*")):
    os.remove(stamp)
  for cmd in cmds:
    subprocess.run(cmd, cwd=ROOT, check=True)
  for stamp in stamps(accelerator, tests):
    open(os.path.join(ROOT, args.venv, stamp), "w").close()
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except subprocess.CalledProcessError as e:
    print(f"error: {shlex.join(e.cmd)} exited {e.returncode}", file=sys.stderr)
    sys.exit(1)
