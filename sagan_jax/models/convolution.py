"""Stride-1 SAME NHWC convolutions, and the formulations they are computed in.

Every conv of G and D goes through ``conv2d`` or ``resampling_conv2d``. The math is always
the conv the model defines; what differs is how it is computed, as ``Kernels`` says
(models/kernels.py; sagan_jax.kernels resolves the config's choice for the target):
- ``conv_kernel_grad``: the kernel gradient of ``conv2d`` as one GEMM per kernel tap
  (``kernel_grad_by_taps``) for 1×1 kernels, or for large 3×3 ones too (``use_taps``);
- ``resampling_conv``: a 3×3 conv after a nearest 2× upsample (G's blocks) or before a 2×2
  mean pool (D's blocks) as a conv at the low resolution: 4 kernel taps per output pixel
  instead of 9, with each direction's gradient taken in whichever of the two resampled forms
  was the cheaper on XLA:CPU. The 3×3 kernel stays the parameter: checkpoints and spectral
  norm are unchanged.
A 1×1 conv commutes with both resamplings, so it always convolves the low-resolution map.
"""

import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax.models.kernels import PLAIN, Kernels

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _native_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_CONV_DIMS)


def kernel_grad_by_taps(x, grad_out, kernel_shape):
  """dL/dkernel of a stride-1 SAME NHWC conv as one GEMM per kernel tap (i, j):
  Σ_{b,y,x} grad_out[b,y,x,:] ⊗ x_padded[b,y+i,x+j,:], contracting K = B·H·W.

  Accumulates in float32 and returns the kernel's layout (kh, kw, in, out); for a 1×1
  kernel it is a single matmul.
  """
  kh, kw, cin, cout = kernel_shape
  _, h, w, _ = x.shape
  ph, pw = (kh - 1) // 2, (kw - 1) // 2  # XLA's SAME: the odd pixel of an even kernel goes last
  xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  g = grad_out.reshape(-1, cout)
  # (out, in) per tap: this operand order ran faster on XLA:CPU than (in, out).
  taps = [
    jax.lax.dot_general(
      g,
      xp[:, i : i + h, j : j + w].reshape(-1, cin),
      (((0,), (0,)), ((), ())),
      preferred_element_type=jnp.float32,
    )
    for i in range(kh)
    for j in range(kw)
  ]
  return jnp.stack(taps).reshape(kh, kw, cout, cin).transpose(0, 1, 3, 2)


@jax.custom_vjp
def conv2d_tap_kernel_grad(x, kernel):
  """_native_conv with XLA's input gradient and kernel_grad_by_taps as the kernel gradient."""
  return _native_conv(x, kernel)


def _tap_fwd(x, kernel):
  return _native_conv(x, kernel), (x, kernel)


def _tap_bwd(residuals, grad_out):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x_: _native_conv(x_, kernel), x)
  return input_vjp(grad_out)[0], kernel_grad_by_taps(x, grad_out, kernel.shape).astype(kernel.dtype)


conv2d_tap_kernel_grad.defvjp(_tap_fwd, _tap_bwd)


# The 'taps' rule for 3×3 kernels, measured on an AVX2 x86 CPU (XLA:CPU's own kernel gradient
# fell off a cliff there once a device's share of the input reached 2^20 values with ≥ 32
# input channels; with fewer than 8 output channels the taps' GEMMs were too thin).
TAPS_3X3_MIN_VALUES_PER_DEVICE = 2**20
TAPS_3X3_MIN_IN_CHANNELS, TAPS_3X3_MIN_OUT_CHANNELS = 32, 8


def use_taps(x_shape, kernel_shape, kernels: Kernels) -> bool:
  """Whether conv2d takes kernel_grad_by_taps for this conv under ``kernels``.

  'taps_1x1': 1×1 kernels (one matmul; XLA's own window-sized convolution was 1.2–2.3×
  slower on an AVX-512 CPU, up to 44× on an AVX2 one). 'taps': also 3×3 kernels with enough
  channels once a device's share of the input (the batch is global under jit) is large.
  """
  kh, kw, cin, cout = kernel_shape
  if kernels.conv_kernel_grad == "xla":
    return False
  if (kh, kw) == (1, 1):
    return True
  if kernels.conv_kernel_grad != "taps":
    return False
  b, h, w, _ = x_shape
  per_device = max(b // kernels.num_devices, 1) * h * w * cin
  return (
    cin >= TAPS_3X3_MIN_IN_CHANNELS
    and cout >= TAPS_3X3_MIN_OUT_CHANNELS
    and per_device >= TAPS_3X3_MIN_VALUES_PER_DEVICE
  )


def conv2d(x, kernel, kernels: Kernels = PLAIN):
  """Stride-1 SAME NHWC conv: XLA's own forward and input gradient; the kernel gradient as
  per-tap GEMMs where ``kernels`` chooses them."""
  if use_taps(x.shape, kernel.shape, kernels):
    return conv2d_tap_kernel_grad(x, kernel)
  return _native_conv(x, kernel)


def upsample_2x(x):
  """Nearest-neighbour 2× upsample of an NHWC map."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool_2x2(x):
  """Mean over non-overlapping 2×2 windows of an NHWC map with even sides."""
  b, h, w, c = x.shape
  return jnp.mean(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


# A 3×3 conv after a nearest 2× upsample, per output phase a (0: even rows of the upsampled
# map, 1: odd rows), reads two low-resolution rows, at offsets {-1, 0} (a = 0) or {0, +1}
# (a = 1): _UP_TAPS[a, t, dy] = 1 where the kernel's row dy lands on the phase's tap t.
_UP_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)
# A 3×3 conv then a 2×2 mean is a 4×4 conv of stride 2: _POOL_TAPS[u, dy] = 1/2 where the
# kernel's row dy lands on that conv's row u (1/2 per axis: the mean's 1/4).
_POOL_TAPS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], np.float32) / 2


def _phase_conv(x, kernel):
  """conv(upsample_2x(x), kernel) for a 3×3 kernel, as one 2×2 VALID conv of x padded by 1
  whose output channels are the four phases' (kernel taps summed per phase), interleaved."""
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  phase_kernel = jnp.einsum("aty,bux,yxio->tuiabo", _UP_TAPS, _UP_TAPS, kernel.astype(jnp.float32))
  phase_kernel = phase_kernel.reshape(2, 2, cin, 4 * cout).astype(x.dtype)
  y = jax.lax.conv_general_dilated(
    jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), phase_kernel, (1, 1), "VALID", dimension_numbers=_CONV_DIMS
  ).reshape(b, h + 1, w + 1, 2, 2, cout)
  # Phase (a, c) of low-resolution pixel (i, j) is output pixel (i + a, j + c) of that conv.
  rows = [jnp.stack([y[:, a : a + h, c : c + w, a, c] for c in (0, 1)], axis=3) for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, cout)


def _strided_pool_conv(x, kernel):
  """avg_pool_2x2(conv(x, kernel)) for a 3×3 kernel, as one 4×4 conv of stride 2."""
  pool_kernel = jnp.einsum("uy,vx,yxio->uvio", _POOL_TAPS, _POOL_TAPS, kernel.astype(jnp.float32))
  return jax.lax.conv_general_dilated(
    x, pool_kernel.astype(x.dtype), (2, 2), ((1, 1), (1, 1)), dimension_numbers=_CONV_DIMS
  )


def _adjoint_kernel(kernel):
  """The 3×3 kernel whose SAME conv is the transpose of ``kernel``'s: flipped, in and out swapped."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


# The two resampled forms are each other's transposes: the input gradient of one is the other
# with the adjoint kernel (upsample's transpose is a 2×2 sum, the mean's is upsample / 4). Each
# direction takes the form that measured faster (benchmarks/resampling_conv.py).
@jax.custom_vjp
def upsample_conv3x3(x, kernel):
  """conv(upsample_2x(x), kernel), 3×3 kernel: phase conv forward, strided conv input gradient."""
  return _phase_conv(x, kernel)


def _upsample_conv3x3_fwd(x, kernel):
  return _phase_conv(x, kernel), (x, kernel)


def _upsample_conv3x3_bwd(residuals, grad_out):
  x, kernel = residuals
  dx = _strided_pool_conv(grad_out, 4 * _adjoint_kernel(kernel))
  dkernel = jax.vjp(lambda k: _phase_conv(x, k), kernel)[1](grad_out)[0]
  return dx, dkernel


upsample_conv3x3.defvjp(_upsample_conv3x3_fwd, _upsample_conv3x3_bwd)


@jax.custom_vjp
def conv3x3_avg_pool(x, kernel):
  """avg_pool_2x2(conv(x, kernel)), 3×3 kernel: strided conv forward, phase conv input gradient."""
  return _strided_pool_conv(x, kernel)


def _conv3x3_avg_pool_fwd(x, kernel):
  return _strided_pool_conv(x, kernel), (x, kernel)


def _conv3x3_avg_pool_bwd(residuals, grad_out):
  x, kernel = residuals
  dx = _phase_conv(grad_out, _adjoint_kernel(kernel) / 4)
  dkernel = jax.vjp(lambda k: _strided_pool_conv(x, k), kernel)[1](grad_out)[0]
  return dx, dkernel


conv3x3_avg_pool.defvjp(_conv3x3_avg_pool_fwd, _conv3x3_avg_pool_bwd)

RESAMPLE = ("none", "up", "down")


def resampling_conv2d(x, kernel, resample: str = "none", kernels: Kernels = PLAIN):
  """conv2d after a nearest 2× upsample ('up'), before a 2×2 mean ('down') or alone ('none').

  A 1×1 kernel commutes with both, so it always convolves the low-resolution map. A 3×3
  kernel takes upsample_conv3x3 / conv3x3_avg_pool (2.25× fewer multiplies) where
  ``kernels.resampling_conv`` is 'low_resolution', the composition as written otherwise.
  """
  if resample not in RESAMPLE:
    raise ValueError(f"resample {resample!r} is not one of {RESAMPLE}")
  if resample == "down" and (x.shape[1] % 2 or x.shape[2] % 2):
    raise ValueError(f"a 2×2 mean needs even sides, got {x.shape[1]}×{x.shape[2]}")
  if resample == "none":
    return conv2d(x, kernel, kernels)
  if kernel.shape[:2] == (1, 1):
    if resample == "up":
      return upsample_2x(conv2d(x, kernel, kernels))
    return conv2d(avg_pool_2x2(x), kernel, kernels)
  if kernel.shape[:2] == (3, 3) and kernels.resampling_conv == "low_resolution":
    return upsample_conv3x3(x, kernel) if resample == "up" else conv3x3_avg_pool(x, kernel)
  if resample == "up":
    return conv2d(upsample_2x(x), kernel, kernels)
  return avg_pool_2x2(conv2d(x, kernel, kernels))
