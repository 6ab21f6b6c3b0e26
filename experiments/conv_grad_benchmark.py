"""Why layers.conv2d has its own kernel gradient on CPU: times XLA's native conv
filter gradient against the im2col GEMM form, for the shapes of the 32×32 models.

  python experiments/conv_grad_benchmark.py
"""
import time

import jax

from sagan_jax.models import layers


def _time(fn, *args, repeats=5):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / repeats


def main():
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")
  print(f"{'input':>18} {'kernel':>14} {'native dW s':>12} {'im2col dW s':>12} {'speed-up':>9}")
  for x_shape, k_shape in [((64, 32, 32, 64), (3, 3, 64, 64)), ((64, 32, 32, 64), (1, 1, 64, 64)),
                           ((64, 16, 16, 64), (3, 3, 64, 64)), ((64, 8, 8, 64), (3, 3, 64, 64))]:
    x = jax.random.normal(jax.random.key(0), x_shape)
    k = jax.random.normal(jax.random.key(1), k_shape)
    native = _time(jax.grad(lambda k_: layers._native_conv(x, k_).sum()), k)
    ours = _time(jax.grad(lambda k_: layers._cpu_conv(x, k_).sum()), k)
    print(f"{str(x_shape):>18} {str(k_shape):>14} {native:12.4f} {ours:12.4f} {native / ours:8.1f}x")


if __name__ == "__main__":
  main()
