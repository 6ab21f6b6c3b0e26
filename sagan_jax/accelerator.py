"""Which accelerator this host has, as the OS shows it (nvidia-smi, a TPU chip), whatever
JAX was installed with. Standard library only: tools/bootstrap.py uses it before the venv
exists, to pick the JAX build; training uses it to warn when JAX is on the CPU although
the host has a GPU or TPU."""

import glob
import logging
import os
import re
import subprocess

ACCELERATORS = ("cpu", "cuda12", "cuda13", "tpu")
# ACCELERATOR=cuda: the CUDA major this host's driver runs (cuda_major_for_driver).
CUDA_ALIAS = "cuda"
# CUDA 13 needs driver 580 or newer; CUDA 12 runs on older drivers as well.
FIRST_CUDA13_DRIVER_CUDA = (13, 0)
# Google's PCI vendor and its TPU chips' device ids (jax/_src/hardware_utils.py): v2/v3,
# v4, v5p, v5e, v6e, tpu7x. v5p and later appear as /dev/vfio/N, which is no TPU sign by itself.
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}
# Set by GKE's TPU pods and multi-host launchers (libtpu reads them instead of the metadata server).
TPU_ENV_VARS = ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES")


def nvidia_gpus():
  """(lines of `nvidia-smi -L` naming a GPU, or [], why not)."""
  try:
    # A wedged driver can hang nvidia-smi: give up after a while rather than block make.
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
  except FileNotFoundError:
    return [], "no nvidia-smi"
  except (OSError, subprocess.TimeoutExpired) as e:
    return [], f"nvidia-smi did not run ({e})"
  gpus = [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]
  if out.returncode != 0 or not gpus:
    first = (out.stdout + out.stderr).strip().splitlines()[:1]
    return [], f"nvidia-smi -L exited {out.returncode}: {first[0] if first else 'no GPU listed'}"
  return gpus, ""


def driver_cuda_version():
  """(major, minor) of the newest CUDA the driver runs, from `nvidia-smi`'s header
  ("CUDA Version: 13.0"), or None where it does not say."""
  try:
    out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return None
  match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out.stdout)
  return (int(match.group(1)), int(match.group(2))) if match else None


def cuda_major_for_driver():
  """(accelerator, why): cuda13 where the driver runs CUDA 13, else cuda12 (which older
  drivers run too)."""
  version = driver_cuda_version()
  if version is None:
    return "cuda12", "the driver's CUDA version is unknown; CUDA 12 runs on older drivers too"
  chosen = "cuda13" if version >= FIRST_CUDA13_DRIVER_CUDA else "cuda12"
  return chosen, f"the driver runs CUDA {version[0]}.{version[1]}"


def tpu_sign(root="/"):
  """What shows a TPU on this host, or ''. root prefixes /sys and /dev (tests fake them)."""
  for vendor_file in sorted(glob.glob(os.path.join(root, "sys/bus/pci/devices/*/vendor"))):
    try:
      with open(vendor_file) as f:
        vendor = f.read().strip()
      with open(os.path.join(os.path.dirname(vendor_file), "device")) as f:
        device = f.read().strip()
    except OSError:
      continue
    if vendor == GOOGLE_PCI_VENDOR and device in TPU_PCI_DEVICES:
      return f"TPU chip {device} on the PCI bus"
  accel = sorted(glob.glob(os.path.join(root, "dev/accel[0-9]*")))
  if accel:
    return f"{os.path.basename(accel[0])} device"
  for name in TPU_ENV_VARS:
    if os.environ.get(name):
      return f"{name} is set"
  return ""


def choose(requested, root="/"):
  """(accelerator, why). requested: the override, '' to detect. ValueError if not valid."""
  if requested:
    if requested == CUDA_ALIAS:
      chosen, why = cuda_major_for_driver()
      return chosen, f"ACCELERATOR override ({why})"
    if requested not in ACCELERATORS:
      raise ValueError(f"ACCELERATOR={requested!r} is not one of {', '.join((CUDA_ALIAS,) + ACCELERATORS)}")
    return requested, "ACCELERATOR override"
  gpus, why_not = nvidia_gpus()
  if gpus:
    chosen, why = cuda_major_for_driver()
    return chosen, f"nvidia-smi lists {len(gpus)} GPU(s): {gpus[0]}; {why}"
  sign = tpu_sign(root)
  if sign:
    return "tpu", sign
  if why_not and why_not != "no nvidia-smi":  # a GPU may be there with a broken driver
    return "cpu", f"{why_not}; ACCELERATOR=cuda installs the CUDA build anyway"
  return "cpu", "no NVIDIA GPU or TPU found"


def warn_if_jax_misses_it(backend: str, root="/") -> str:
  """The one-line warning (also logged) when JAX runs on the CPU of a GPU or TPU host, or ''."""
  if backend != "cpu":
    return ""
  found, why = choose("", root)
  if found == "cpu":
    return ""
  kind = "GPU" if found.startswith("cuda") else found.upper()
  message = (
    f"JAX runs on the CPU, but this host has a {kind} ({why}); install JAX's "
    f"{found} build with: ACCELERATOR={found} make venv"
  )
  logging.warning(message)
  return message
