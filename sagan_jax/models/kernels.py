"""How the model's convolutions and attention are computed: the formulation choices, as the
config resolves them for the chip the program is built for (sagan_jax.kernels), handed to
every layer. A layer reads only these fields, never the host or the backend at trace time, so
a program compiled for a TPU from a CPU host is the one a TPU host would build.

Every choice computes the same model (equal within float32 rounding, value and gradients;
tests/test_convolution.py and tests/test_attention.py check each against float64 numpy);
what differs is the work and the layout XLA gets.
"""

from typing import NamedTuple

# field -> its choices
CHOICES = {
  # dL/dkernel of a stride-1 conv: XLA's own (a convolution whose window is the whole map),
  # one matmul for 1×1 kernels ('taps_1x1'), or also one GEMM per tap for 3×3 kernels with
  # ≥ 32 input and ≥ 8 output channels once a device's share of the input reaches 2^20
  # values ('taps': where XLA:CPU's own fell off a cliff on an AVX2 CPU).
  "conv_kernel_grad": ("xla", "taps_1x1", "taps"),
  # G's nearest 2× upsample + 3×3 conv and D's 3×3 conv + 2×2 mean: as written ('composed'),
  # or as convs of the low-resolution map ('low_resolution': 2.25× fewer multiplies).
  "resampling_conv": ("composed", "low_resolution"),
  # the explicit attention's backward pass: autodiff of the softmax, or the hand-written one
  # that reduces dO·o instead of a second pass over the N×N scores.
  "attention_backward": ("autodiff", "hand_written"),
  # Σ_j w[b,j,i] x[b,j,c] (a sum over the major axis of the scores): one dot, or one
  # multiply-and-column-sum per channel where there are ≤ 8 channels ('per_channel').
  "attention_query_sums": ("dot", "per_channel"),
  # the train step's optimizer update, its finite check and the EMA: per parameter array, or
  # on each network's arrays as one vector ('flat': one fusion where there were hundreds).
  "parameter_update": ("per_array", "flat"),
}
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
QUERY_SUM_MAX_CHANNELS = 8  # 'per_channel' applies up to this many channels


class Kernels(NamedTuple):
  """The resolved choices (no 'auto'), and the two facts of the target some of them need."""

  platform: str = "cpu"  # where the program runs: one of PLATFORMS
  num_devices: int = 1  # devices the global batch is split over (the 'taps' rule)
  conv_kernel_grad: str = "xla"
  resampling_conv: str = "composed"
  attention_backward: str = "hand_written"
  attention_query_sums: str = "dot"
  parameter_update: str = "per_array"

  def choices(self) -> dict:
    """The formulation fields alone (what a metrics line or config.json records)."""
    return {k: getattr(self, k) for k in CHOICES}


def check(kernels: Kernels) -> Kernels:
  """ValueError naming the field for a choice that does not exist."""
  if kernels.platform not in PLATFORMS:
    raise ValueError(f"kernels.platform {kernels.platform!r} is not one of {PLATFORMS}")
  for field, choices in CHOICES.items():
    if getattr(kernels, field) not in choices:
      raise ValueError(f"kernels.{field} {getattr(kernels, field)!r} is not one of {choices}")
  return kernels


PLAIN = Kernels()  # the model as written: what a layer built without a choice computes
