"""Where convolution.conv2d takes the per-tap kernel gradient on CPU: times XLA's own kernel (filter)
gradient against convolution.kernel_grad_by_taps on the shapes of the 32×32 models, one device's
share of the batch each, and prints what this CPU's 'auto' choice (sagan_jax.kernels) takes.

  python benchmarks/conv_grad.py [--batches 16 32] [--sides 32 16 8] [--channels 16 32 64]

Run it pinned to one core (``taskset -c 0``) to see one device's view of a 2-device CPU split.
Inputs and cotangents are arguments of the jitted function (not closed over) and random, so XLA
cannot constant-fold either gradient away. Extra rows: the odd shapes of the models (G's image
conv with one output channel, attention's thin 1×1 projections, D's first conv on one channel).
"""

import argparse
import time

import jax

from sagan_jax import kernels
from sagan_jax.models import convolution


def native_kernel_grad(x, grad_out, kernel):
  _, vjp = jax.vjp(lambda k: convolution._native_conv(x, k), kernel)
  return vjp(grad_out)[0]


def taps_kernel_grad(x, grad_out, kernel):
  return convolution.kernel_grad_by_taps(x, grad_out, kernel.shape)


def _time(fn, *args, repeats=10):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / repeats


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batches", type=int, nargs="+", default=[16, 32])
  p.add_argument("--sides", type=int, nargs="+", default=[32, 16, 8])
  p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args()
  shapes = [
    ((b, s, s, c), (k, k, c, c))
    for k in (3, 1)
    for s in args.sides
    for b in args.batches
    for c in args.channels
  ]
  shapes += [
    ((16, 32, 32, 64), (3, 3, 64, 1)),
    ((32, 16, 16, 32), (1, 1, 32, 4)),
    ((32, 32, 32, 1), (3, 3, 1, 32)),
  ]
  auto = kernels.resolve({"platform": "cpu"}, jax.devices()[:1])
  print(
    f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}; CPU "
    f"{kernels.host_cpu()}: 'auto' is {auto.conv_kernel_grad!r}); one device's share"
  )
  print(f"{'input':>18} {'kernel':>14} {'native ms':>10} {'taps ms':>9} {'native/taps':>12}  chosen")
  for x_shape, k_shape in shapes:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    k = jax.random.normal(keys[1], k_shape)
    g = jax.random.normal(keys[2], x_shape[:3] + k_shape[3:])
    native, taps = (_time(f, x, g, k, repeats=args.repeats) for f in (native_kernel_grad, taps_kernel_grad))
    chosen = "taps" if convolution.use_taps(x_shape, k_shape, auto) else "native"
    print(
      f"{str(x_shape):>18} {str(k_shape):>14} {native * 1e3:10.2f} {taps * 1e3:9.2f} "
      f"{native / taps:12.2f}  {chosen}",
      flush=True,
    )


if __name__ == "__main__":
  main()
