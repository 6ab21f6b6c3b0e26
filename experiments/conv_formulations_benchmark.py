"""Stride-1 SAME 3×3 convs in four formulations, per direction: the ones the CPU step does not take.

  taskset -c 0 python experiments/conv_formulations_benchmark.py [--shapes 16,32,64 32,16,64 ...]
      [--repeats 20]

A shape ``B,S,C`` is B images of S×S×C into C channels (one device's share of a 2-device split:
G's 16 images, D's 32 real + fake). For each it times the forward, the input gradient and the
kernel gradient (each alone, inputs and cotangents as arguments so nothing is constant-folded) of
- ``native``: XLA's own convolution and gradients (what the model's ``conv2d`` runs for 3×3);
- ``im2col``: the 9 shifted maps concatenated on the channel axis, one GEMM (K = 9·C);
- ``taps``: one GEMM per kernel tap, summed;
- ``winograd``: F(2×2, 3×3) (Lavin & Gray 2016): 4×4 input tiles of stride 2 transformed by Bᵀ·B,
  16 batched GEMMs against the transformed kernel G·g·Gᵀ (2.25× fewer multiplies than direct),
  2×2 outputs per tile by Aᵀ·A; its input gradient is the same with the adjoint kernel and its
  kernel gradient is taken in the transformed domain (Vᵀ·dM per tile position, then Gᵀ·dU·G).
Before timing, each formulation's value and both gradients are checked against XLA's conv in
float64 on a small odd-channel case. Prints ms per direction and the speed relative to native
(> 1: faster than native). Run it pinned to one core to see one device's view.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from microbench import conv_directions
from sagan_jax.models.convolution import _native_conv as native

# Winograd F(2×2, 3×3) matrices: kernel transform G (4×3); Bᵀ and Aᵀ are applied as the sums below.
_WINOGRAD_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])


def _shifted(x):
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]


def im2col(x, kernel):
  b, h, w, cin = x.shape
  patches = jnp.concatenate(_shifted(x), axis=-1).reshape(-1, 9 * cin)
  return (patches @ kernel.reshape(9 * cin, -1)).reshape(b, h, w, -1)


def taps(x, kernel):
  b, h, w, cin = x.shape
  flat = kernel.reshape(9, cin, -1)
  return sum(s.reshape(-1, cin) @ flat[t] for t, s in enumerate(_shifted(x))).reshape(b, h, w, -1)


def _input_transform(r0, r1, r2, r3):  # Bᵀ along one axis
  return r0 - r2, r1 + r2, r2 - r1, r1 - r3


def _winograd_tiles(x):
  """Bᵀ·d·B of every 4×4 tile (stride 2) of x padded by 1: (16, tiles, C)."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = _input_transform(*[xp[:, i:i + h:2] for i in range(4)])
  tiles = [col for r in rows for col in _input_transform(*[r[:, :, j:j + w:2] for j in range(4)])]
  return jnp.stack(tiles).reshape(16, -1, c)


def _output_transform(m0, m1, m2, m3):  # Aᵀ along one axis
  return m0 + m1 + m2, m1 - m2 - m3


def _winograd_forward(x, kernel):
  b, h, w, _ = x.shape
  cout = kernel.shape[-1]
  u = jnp.einsum("xi,ijco,yj->xyco", _WINOGRAD_G, kernel, _WINOGRAD_G).reshape(16, *kernel.shape[2:])
  m = jax.lax.dot_general(_winograd_tiles(x), u.astype(x.dtype), (((2,), (1,)), ((0,), (0,))))
  m = m.reshape(4, 4, b, h // 2, w // 2, cout)
  rows = _output_transform(*m)
  y = jnp.stack([jnp.stack(_output_transform(*r)) for r in rows])  # (2, 2, b, h/2, w/2, cout)
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(b, h, w, cout)


def _output_transform_adjoint(grad_out):
  """The transpose of the output transform: (16, tiles, C') from dL/dy."""
  b, h, w, cout = grad_out.shape
  g = grad_out.reshape(b, h // 2, 2, w // 2, 2, cout)
  adjoint = lambda g0, g1: (g0, g0 + g1, g0 - g1, -g1)
  rows = adjoint(g[:, :, 0], g[:, :, 1])
  return jnp.stack([c for r in rows for c in adjoint(r[..., 0, :], r[..., 1, :])]).reshape(16, -1, cout)


@jax.custom_vjp
def winograd(x, kernel):
  return _winograd_forward(x, kernel)


def _winograd_fwd(x, kernel):
  return _winograd_forward(x, kernel), (x, kernel)


def _winograd_bwd(residuals, grad_out):
  x, kernel = residuals
  dx = _winograd_forward(grad_out, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  du = jax.lax.dot_general(_winograd_tiles(x), _output_transform_adjoint(grad_out),
                           (((1,), (1,)), ((0,), (0,))))
  dkernel = jnp.einsum("xi,xyco,yj->ijco", _WINOGRAD_G, du.reshape(4, 4, *du.shape[1:]), _WINOGRAD_G)
  return dx, dkernel.astype(kernel.dtype)


winograd.defvjp(_winograd_fwd, _winograd_bwd)
FORMULATIONS = {"native": native, "im2col": im2col, "taps": taps, "winograd": winograd}


def check_against_float64(fn):
  """fn's value and gradients equal XLA's float64 conv's within float32 rounding (even sides)."""
  rng = np.random.default_rng(0)
  x, kernel, grad_out = (rng.normal(size=s) for s in ((2, 8, 6, 5), (3, 3, 5, 7), (2, 8, 6, 7)))
  with jax.enable_x64(True):
    ref = [native(jnp.asarray(x), jnp.asarray(kernel))]
    ref += jax.vjp(native, jnp.asarray(x), jnp.asarray(kernel))[1](jnp.asarray(grad_out))
    ref = [np.asarray(r) for r in ref]
  args32 = [jnp.asarray(a, jnp.float32) for a in (x, kernel)]
  out, vjp = jax.vjp(fn, *args32)
  got = [out, *vjp(jnp.asarray(grad_out, jnp.float32))]
  for name, g, r in zip(("value", "input gradient", "kernel gradient"), got, ref):
    np.testing.assert_allclose(np.asarray(g, np.float64), r, rtol=1e-5, atol=1e-5 * np.abs(r).max(),
                               err_msg=f"{fn.__name__}: {name}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", nargs="+", default=["16,32,64", "32,16,64", "16,16,64", "32,8,64",
                                                 "16,32,32", "32,16,32", "32,8,32", "16,32,16"],
                 help="B,S,C: B images S×S×C into C channels")
  p.add_argument("--repeats", type=int, default=20)
  args = p.parse_args(argv)
  for name, fn in FORMULATIONS.items():
    check_against_float64(fn)
  print("value and gradients of every formulation equal XLA's float64 conv", flush=True)
  rng = np.random.default_rng(0)
  for shape in args.shapes:
    b, side, c = (int(v) for v in shape.split(","))
    x, grad_out = (jnp.asarray(rng.normal(size=(b, side, side, c)), jnp.float32) for _ in range(2))
    kernel = jnp.asarray(rng.normal(size=(3, 3, c, c)), jnp.float32)
    times = {name: conv_directions(fn, x, kernel, grad_out, args.repeats) for name, fn in FORMULATIONS.items()}
    gflop = 2 * b * side * side * c * c * 9 / 1e9
    base = times["native"]
    print(f"{b}×{side}×{side}×{c} → {c} ({gflop:.2f} GFLOP as a direct conv): "
          f"native fwd / input grad / kernel grad {base[0]:.2f} / {base[1]:.2f} / {base[2]:.2f} ms", flush=True)
    for name, t in times.items():
      if name != "native":
        print(f"  {name:9s} {t[0]:7.2f} / {t[1]:7.2f} / {t[2]:7.2f} ms, speed vs native "
              + " / ".join(f"{n / m:.2f}" for n, m in zip(base, t)), flush=True)


if __name__ == "__main__":
  main()
