"""Why layers.conv2d uses XLA's own convolution gradients on every backend: times XLA's
native kernel (filter) gradient against an im2col GEMM form of it, on the shapes of the
32×32 models, on its own and inside a one-step lax.scan (the train step once ran its D
updates in a scan, where XLA:CPU's native gradient was far slower; the step now unrolls them).

  python experiments/conv_grad_benchmark.py

Inputs and cotangents are arguments of the jitted function (not closed over) and the
cotangent is random, so XLA cannot constant-fold either gradient away.
"""
import time

import jax
import jax.numpy as jnp

from sagan_jax.models import layers


def im2col_kernel_grad(x, grad_out, kh, kw):
  """dL/dkernel of a stride-1 SAME conv as one GEMM over explicit patches."""
  b, h, w, cin = x.shape
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  patches = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], axis=-1)
  grad = patches.reshape(-1, kh * kw * cin).T @ grad_out.reshape(-1, grad_out.shape[-1])
  return grad.reshape(kh, kw, cin, -1)


def native_kernel_grad(x, grad_out, kernel):
  _, vjp = jax.vjp(lambda k: layers.conv2d(x, k), kernel)
  return vjp(grad_out)[0]


def in_scan(fn):
  """fn run as the body of a one-step lax.scan."""
  def scanned(*args):
    return jax.lax.scan(lambda carry, _: (carry, fn(*args)), 0, None, length=1)[1][0]
  return scanned


def _time(fn, *args, repeats=10):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / repeats


def main():
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")
  print(f"{'input':>18} {'kernel':>14} {'native s':>9} {'im2col s':>9} "
        f"{'native/scan s':>14} {'im2col/scan s':>14}")
  for x_shape, k_shape in [((64, 32, 32, 16), (3, 3, 16, 16)), ((64, 32, 32, 64), (3, 3, 64, 64)),
                           ((64, 32, 32, 64), (1, 1, 64, 64)), ((64, 16, 16, 64), (3, 3, 64, 64)),
                           ((64, 8, 8, 64), (3, 3, 64, 64))]:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    k = jax.random.normal(keys[1], k_shape)
    g = jax.random.normal(keys[2], x_shape[:3] + k_shape[3:])
    native = lambda x_, g_, k_: native_kernel_grad(x_, g_, k_)
    im2col = lambda x_, g_, k_: im2col_kernel_grad(x_, g_, *k_.shape[:2])
    times = [_time(f, x, g, k) for f in (native, im2col, in_scan(native), in_scan(im2col))]
    print(f"{str(x_shape):>18} {str(k_shape):>14} " + " ".join(
        f"{t:{w}.4f}" for t, w in zip(times, (9, 9, 14, 14))))


if __name__ == "__main__":
  main()
