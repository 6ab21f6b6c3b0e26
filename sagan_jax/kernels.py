"""Resolves ``config.model.kernels`` (the formulation choices, 'auto' or named) for the chip a
program is built for: one function of (platform, CPU features, device count), called once when
a config's programs are built. The model then reads only the resolved ``Kernels``.

'auto' picks what was measured faster on each platform (README, Performance):
- conv_kernel_grad: on CPUs one matmul for 1×1 kernels ('taps_1x1'), and also per-tap GEMMs
  for large 3×3 kernels on x86 CPUs without AVX-512 ('taps'); XLA's own on GPU and TPU;
- resampling_conv: 'low_resolution' on CPUs, 'composed' on GPU and TPU (not measured there);
- attention_backward: 'hand_written' everywhere;
- attention_query_sums: 'per_channel' on CPUs, 'dot' elsewhere;
- parameter_update: 'flat' on CPUs (XLA:CPU compiles the default's step in half the time; the
  step's speed the same), 'per_array' on GPU and TPU (not measured there).
``platform`` 'auto' is the platform of the mesh's devices (a topology's for a deviceless
compile): a CPU host tracing for a TPU resolves for the TPU.
"""

import functools
import platform as platform_module

from sagan_jax.models.kernels import CHOICES, PLATFORMS, Kernels, check

AUTO = "auto"
FIELDS = ("platform",) + tuple(CHOICES)


@functools.cache
def host_cpu(cpuinfo: str = "/proc/cpuinfo") -> tuple:
  """(machine, has AVX-512 Foundation or None where unknown) of this host's CPU."""
  machine = platform_module.machine().lower()
  if machine not in ("x86_64", "amd64"):
    return machine, None
  try:
    with open(cpuinfo) as f:
      flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
  except OSError:
    return machine, None
  return machine, None if flags is None else "avx512f" in flags


def platform_of(devices) -> str:
  """'cpu', 'cuda', 'rocm' or 'tpu': the platform of ``devices`` (a mesh's, or a topology's)."""
  device = next(iter(devices))
  if device.platform in ("gpu", "cuda", "rocm"):
    version = getattr(getattr(device, "client", None), "platform_version", "") or ""
    return "rocm" if "rocm" in version.lower() or device.platform == "rocm" else "cuda"
  return device.platform


def auto_choices(platform: str, cpu: tuple) -> dict:
  """What 'auto' means on ``platform``; ``cpu`` is host_cpu()'s answer (read only for 'cpu')."""
  if platform != "cpu":
    return {
      "conv_kernel_grad": "xla",
      "resampling_conv": "composed",
      "attention_backward": "hand_written",
      "attention_query_sums": "dot",
      "parameter_update": "per_array",
    }
  machine, avx512 = cpu
  x86_without_avx512 = machine in ("x86_64", "amd64") and avx512 is False
  return {
    "conv_kernel_grad": "taps" if x86_without_avx512 else "taps_1x1",
    "resampling_conv": "low_resolution",
    "attention_backward": "hand_written",
    "attention_query_sums": "per_channel",
    "parameter_update": "flat",
  }


def resolve(requested, devices, cpu: tuple | None = None) -> Kernels:
  """The Kernels of ``requested`` (config.model.kernels: a mapping of FIELDS to 'auto' or a
  choice) for a program over ``devices``; ``cpu`` overrides host_cpu() (tests, plans)."""
  requested = dict(requested)
  platform = requested.get("platform", AUTO)
  if platform == AUTO:
    platform = platform_of(devices)
  auto = {}
  if any(requested.get(k, AUTO) == AUTO for k in CHOICES):
    auto = auto_choices(
      platform, cpu if cpu is not None else (host_cpu() if platform == "cpu" else ("", None))
    )
  choices = {k: auto[k] if requested.get(k, AUTO) == AUTO else requested[k] for k in CHOICES}
  return check(Kernels(platform=platform, num_devices=len(list(devices)), **choices))


def validate(requested) -> str | None:
  """What is wrong with config.model.kernels, in one phrase, or None."""
  requested = dict(requested)
  unknown = sorted(set(requested) - set(FIELDS))
  if unknown:
    return f"model.kernels has no field(s) {unknown}; its fields are {FIELDS}"
  if requested.get("platform", AUTO) not in (AUTO,) + PLATFORMS:
    return f"model.kernels.platform {requested['platform']!r} is not one of {(AUTO,) + PLATFORMS}"
  for field, choices in CHOICES.items():
    if requested.get(field, AUTO) not in (AUTO,) + choices:
      return f"model.kernels.{field} {requested[field]!r} is not one of {(AUTO,) + choices}"
  return None
