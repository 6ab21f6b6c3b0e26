"""G's upsample + 3×3 conv and D's 3×3 conv + 2×2 mean, per direction, in each formulation.

  taskset -c 0 python benchmarks/resampling_conv.py [--channels 16 32 64] [--repeats 20]

For the shapes of the 32×32 models (one device's share of the batch of a 2-device split: G's
16 images, D's 32 real + fake), times the forward, the input gradient and the kernel gradient of
- the composition as the model writes it (``resampling_conv2d`` with the plain kernels, XLA's own
  gradients): a 3×3 conv on the upsampled map, or on the full map before the mean;
- the phase form (``_phase_conv``): one 2×2 conv of the low-resolution map with the four output
  phases as channels, and its autodiff;
- the strided form (``_strided_pool_conv``): one 4×4 conv of stride 2, and its autodiff;
and what ``upsample_conv3x3`` / ``conv3x3_avg_pool`` ('low_resolution') take for each direction (the
input gradient
of one form is the other form with the adjoint kernel). Inputs and cotangents are arguments of
the jitted functions, so nothing is constant-folded. Run it pinned to one core to see one
device's view.
"""

import argparse

import jax
from microbench import conv_directions

from sagan_jax.models import convolution as conv


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
  p.add_argument("--repeats", type=int, default=20)
  args = p.parse_args()
  print(f"backend: {jax.default_backend()}; ms per call (median): forward / input grad / kernel grad")
  for c in args.channels:
    for resample, x_shape in (
      ("up", (16, 8, 8, c)),
      ("up", (16, 16, 16, c)),
      ("down", (32, 16, 16, c)),
      ("down", (32, 32, 32, c)),
    ):
      keys = jax.random.split(jax.random.key(0), 3)
      x = jax.random.normal(keys[0], x_shape)
      kernel = jax.random.normal(keys[1], (3, 3, c, c))
      b, h, w, _ = x_shape
      out = (b, 2 * h, 2 * w, c) if resample == "up" else (b, h // 2, w // 2, c)
      grad_out = jax.random.normal(keys[2], out)
      forms = {
        "composed": lambda x_, k_, r=resample: conv.resampling_conv2d(x_, k_, r),
        "phase": conv._phase_conv if resample == "up" else None,
        "strided": conv._strided_pool_conv if resample == "down" else None,
        "low_resolution": conv.upsample_conv3x3 if resample == "up" else conv.conv3x3_avg_pool,
      }
      print(
        f"{resample:>4} {str(x_shape):>18}  "
        + "   ".join(
          f"{name} " + " / ".join(f"{t:.2f}" for t in conv_directions(fn, x, kernel, grad_out, args.repeats))
          for name, fn in forms.items()
          if fn is not None
        ),
        flush=True,
      )


if __name__ == "__main__":
  main()
