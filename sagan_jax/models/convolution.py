"""Stride-1 SAME NHWC convolutions, and the formulation each backend computes them in.

Every conv of G and D goes through ``conv2d`` or ``resampling_conv2d``. The math is always
the conv the model defines; what differs is how it is computed:
- the kernel gradient of ``conv2d`` as one GEMM per kernel tap on CPU where that measured
  faster than XLA's own (``taps_kernel_grad_on_cpu``);
- a 3×3 conv after a nearest 2× upsample (G's blocks) or before a 2×2 mean pool (D's blocks)
  as a conv at the low resolution (``resampling_conv2d``): 4 kernel taps per output pixel
  instead of 9, with each direction's gradient taken in whichever of the two resampled forms
  is the cheaper on XLA:CPU. The 3×3 kernel stays the parameter: checkpoints and spectral
  norm are unchanged.
"""
import functools
import platform

import jax
import jax.numpy as jnp
import numpy as np

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
  taps = [jax.lax.dot_general(g, xp[:, i:i + h, j:j + w].reshape(-1, cin), (((0,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
          for i in range(kh) for j in range(kw)]
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


@functools.cache
def x86_without_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
  """Whether this host is an x86 CPU whose flags (Linux's cpuinfo) lack AVX-512 Foundation;
  False where that cannot be read (not Linux, not x86)."""
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False
  try:
    with open(cpuinfo) as f:
      flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
  except OSError:
    return False
  return flags is not None and "avx512f" not in flags


def taps_kernel_grad_on_cpu(x_shape, kernel_shape, num_devices: int, x86_without_avx512: bool) -> bool:
  """Whether conv2d takes kernel_grad_by_taps on CPU: where it measured faster than XLA's own.

  XLA:CPU computes the kernel gradient as a convolution whose window is the whole feature map.
  Timed on one core against the taps (experiments/conv_grad_benchmark.py) on two x86 CPUs:
  - 1×1 kernels (one matmul): XLA's own was 1.2–2.3× slower on an AVX-512 EPYC and 1.2–44×
    on an AVX2 EPYC, so every CPU takes the taps.
  - 3×3 kernels: on the AVX-512 CPU XLA's own was faster on every model shape (the taps ran
    0.12–0.9× its speed), so it is kept there and on CPUs never measured (ARM). On the AVX2
    CPU it fell off a cliff for ≥ 32 input channels once a device's share of the input
    reached 2^20 values (1.1–5.2× slower than the taps; below that, or with 16 channels,
    0.6–1.5×); with fewer than 8 output channels (G's image conv) the taps' GEMMs are too
    thin there (0.1–0.7×).
  The batch is global under jit, so a device's share is the batch over ``num_devices``.
  """
  kh, kw, cin, cout = kernel_shape
  if (kh, kw) == (1, 1):
    return True
  b, h, w, _ = x_shape
  per_device = max(b // num_devices, 1) * h * w * cin
  return x86_without_avx512 and cin >= 32 and cout >= 8 and per_device >= 2 ** 20


def conv2d(x, kernel):
  """Stride-1 SAME NHWC conv: XLA's own forward and input gradient everywhere; on CPU the
  kernel gradient as per-tap GEMMs where XLA:CPU's own was measured slower."""
  if jax.default_backend() == "cpu" and taps_kernel_grad_on_cpu(
      x.shape, kernel.shape, jax.device_count(), x86_without_avx512()):
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
  y = jax.lax.conv_general_dilated(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), phase_kernel, (1, 1),
                                   "VALID", dimension_numbers=_CONV_DIMS).reshape(b, h + 1, w + 1, 2, 2, cout)
  # Phase (a, c) of low-resolution pixel (i, j) is output pixel (i + a, j + c) of that conv.
  rows = [jnp.stack([y[:, a:a + h, c:c + w, a, c] for c in (0, 1)], axis=3) for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, cout)


def _strided_pool_conv(x, kernel):
  """avg_pool_2x2(conv(x, kernel)) for a 3×3 kernel, as one 4×4 conv of stride 2."""
  pool_kernel = jnp.einsum("uy,vx,yxio->uvio", _POOL_TAPS, _POOL_TAPS, kernel.astype(jnp.float32))
  return jax.lax.conv_general_dilated(x, pool_kernel.astype(x.dtype), (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=_CONV_DIMS)


def _adjoint_kernel(kernel):
  """The 3×3 kernel whose SAME conv is the transpose of ``kernel``'s: flipped, in and out swapped."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


# The two resampled forms are each other's transposes: the input gradient of one is the other
# with the adjoint kernel (upsample's transpose is a 2×2 sum, the mean's is upsample / 4). Each
# direction takes the form that measured faster (experiments/resampling_conv_benchmark.py).
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
# Backends whose 3×3 resampling convs run at the low resolution: measured on CPU only. A GPU
# benchmark can add its own (experiments/benchmark.py --low_resolution_resampling).
LOW_RESOLUTION_BACKENDS = ("cpu",)


def composed_resampling_conv2d(x, kernel, resample: str):
  """conv2d after a nearest 2× upsample ('up') or before a 2×2 mean ('down'), as written."""
  if resample == "up":
    return conv2d(upsample_2x(x), kernel)
  if resample == "down":
    return avg_pool_2x2(conv2d(x, kernel))
  return conv2d(x, kernel)


def resampling_conv2d(x, kernel, resample: str = "none"):
  """conv2d after a nearest 2× upsample ('up'), before a 2×2 mean ('down') or alone ('none').

  A 1×1 kernel commutes with both, so it convolves the low-resolution map on every backend.
  On the LOW_RESOLUTION_BACKENDS (CPU) a 3×3 kernel takes upsample_conv3x3 / conv3x3_avg_pool
  (2.25× fewer multiplies); GPU and TPU keep the composition as written (not measured there yet).
  """
  if resample not in RESAMPLE:
    raise ValueError(f"resample {resample!r} is not one of {RESAMPLE}")
  if resample == "down" and (x.shape[1] % 2 or x.shape[2] % 2):
    raise ValueError(f"a 2×2 mean needs even sides, got {x.shape[1]}×{x.shape[2]}")
  if resample == "none":
    return conv2d(x, kernel)
  if kernel.shape[:2] == (1, 1):
    return upsample_2x(conv2d(x, kernel)) if resample == "up" else conv2d(avg_pool_2x2(x), kernel)
  if kernel.shape[:2] == (3, 3) and jax.default_backend() in LOW_RESOLUTION_BACKENDS:
    return upsample_conv3x3(x, kernel) if resample == "up" else conv3x3_avg_pool(x, kernel)
  return composed_resampling_conv2d(x, kernel, resample)
