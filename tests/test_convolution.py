"""The convolutions' formulations against float64 numpy: values and both gradients of the plain
conv (XLA's own and the per-tap kernel gradient) and of the resampling convs (upsample + conv,
conv + mean, at the low resolution); which form each backend and shape takes; whole G and D
differentiated through every form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax import kernels as kernels_lib
from sagan_jax.models import convolution
from sagan_jax.models.kernels import Kernels


def _conv_reference(x, k):
  """Stride-1 SAME NHWC conv in float64 numpy, written out over kernel taps."""
  kh, kw = k.shape[:2]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  h, w = x.shape[1:3]
  return sum(xp[:, i : i + h, j : j + w] @ k[i, j] for i in range(kh) for j in range(kw))


def _conv_reference_vjp(x, k, g):
  """(dx, dk) of sum(conv(x, k) * g) in float64: conv with the flipped kernel, patch correlation."""
  kh, kw = k.shape[:2]
  h, w = x.shape[1:3]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  dk = np.stack(
    [
      np.stack([np.einsum("bhwc,bhwo->co", xp[:, i : i + h, j : j + w], g) for j in range(kw)])
      for i in range(kh)
    ]
  )
  flipped = np.transpose(k[::-1, ::-1], (0, 1, 3, 2))
  gp = np.pad(g, ((0, 0), (kh - 1 - ph, ph), (kw - 1 - pw, pw), (0, 0)))
  dx = sum(gp[:, i : i + h, j : j + w] @ flipped[i, j] for i in range(kh) for j in range(kw))
  return dx, dk


CONV_FORMS = {
  "conv2d": lambda x, k: convolution.conv2d(x, k, Kernels(conv_kernel_grad="taps_1x1")),
  "native": convolution._native_conv,
  "tap_kernel_grad": convolution.conv2d_tap_kernel_grad,
}


@pytest.mark.parametrize("form", list(CONV_FORMS))
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (2, 2)])
def test_conv_value_and_gradients_match_float64_reference(kernel, form):
  """conv2d, XLA's own gradients and the per-tap kernel gradient against numpy in float64; the
  gradients of sum(conv * g) are conv with the flipped kernel and a patch correlation (an even
  kernel checks that the taps pad as XLA's SAME does: the odd pixel last)."""
  rng = np.random.default_rng(0)
  x, k = rng.normal(size=(2, 6, 5, 3)), rng.normal(size=(*kernel, 3, 4))
  g = rng.normal(size=(2, 6, 5, 4))
  out, vjp = jax.vjp(CONV_FORMS[form], jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32))
  dx, dk = vjp(jnp.asarray(g, jnp.float32))
  np.testing.assert_allclose(np.asarray(out), _conv_reference(x, k), rtol=1e-4, atol=1e-4)
  expected_dx, expected_dk = _conv_reference_vjp(x, k, g)
  np.testing.assert_allclose(np.asarray(dk), expected_dk, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dx), expected_dx, rtol=1e-4, atol=1e-4)


def test_tap_kernel_grad_in_bfloat16_keeps_dtypes_and_accumulates_in_float32():
  """bf16 inputs: the taps' gradients come back in bf16, as XLA's own do, and are no further
  from the float64 correlation than XLA's own (both round once to bf16 at the end)."""
  rng = np.random.default_rng(1)
  x, k, g = (
    rng.normal(size=(4, 16, 16, 32)),
    rng.normal(size=(3, 3, 32, 16)),
    rng.normal(size=(4, 16, 16, 16)),
  )
  bf = lambda a: jnp.asarray(a, jnp.bfloat16)
  xp = np.pad(np.asarray(bf(x), np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  g64 = np.asarray(bf(g), np.float64)
  expected = np.stack(
    [
      np.stack([np.einsum("bhwc,bhwo->co", xp[:, i : i + 16, j : j + 16], g64) for j in range(3)])
      for i in range(3)
    ]
  )
  errors = {}
  for form in ("native", "tap_kernel_grad"):
    _, vjp = jax.vjp(CONV_FORMS[form], bf(x), bf(k))
    dx, dk = vjp(bf(g))
    assert dx.dtype == dk.dtype == jnp.bfloat16
    errors[form] = np.abs(np.asarray(dk, np.float64) - expected).max() / np.abs(expected).max()
  assert errors["tap_kernel_grad"] < 1e-2
  assert errors["tap_kernel_grad"] <= 1.5 * errors["native"] + 1e-3


@pytest.mark.parametrize(
  "x_shape, kernel_shape, devices, taps",
  [
    ((64, 32, 32, 64), (3, 3, 64, 64), 2, True),  # D's first block at ch=16: 2^21 values a device
    ((64, 8, 8, 64), (3, 3, 64, 64), 2, False),  # a small map
    ((64, 32, 32, 16), (3, 3, 16, 16), 2, False),  # 16 channels: XLA's own measured faster
    ((32, 32, 32, 64), (3, 3, 64, 1), 2, False),  # G's image conv: one output channel
    ((64, 32, 32, 64), (3, 3, 64, 64), 64, False),  # the same conv, one image a device
    ((8, 4, 4, 16), (1, 1, 16, 2), 8, True),  # 1×1: always one matmul
  ],
)
def test_kernel_gradient_form_is_chosen_per_device_share(x_shape, kernel_shape, devices, taps):
  """'taps' (x86 without AVX-512) puts the taps where they won; 'taps_1x1' only on 1×1; 'xla' nowhere."""
  choose = lambda grad: convolution.use_taps(
    x_shape, kernel_shape, Kernels(num_devices=devices, conv_kernel_grad=grad)
  )
  assert choose("taps") is taps
  assert choose("taps_1x1") is (kernel_shape[:2] == (1, 1))
  assert choose("xla") is False


@pytest.mark.parametrize("grad", ["xla", "taps_1x1", "taps"])
def test_conv2d_takes_the_taps_where_the_kernels_choose_them(grad):
  """conv2d traces the custom-VJP form exactly where use_taps says so, on any host."""
  kernels = Kernels(num_devices=2, conv_kernel_grad=grad)
  traced = lambda xs, ks: str(
    jax.make_jaxpr(lambda x, k: convolution.conv2d(x, k, kernels))(jnp.zeros(xs), jnp.zeros(ks))
  )
  big = ((4, 32, 32, 512), (3, 3, 512, 8))  # 2^22 values a device
  assert ("custom_vjp" in traced((2, 4, 4, 8), (1, 1, 8, 8))) is (grad != "xla")
  assert "custom_vjp" not in traced((2, 4, 4, 8), (3, 3, 8, 8))
  assert ("custom_vjp" in traced(*big)) is (grad == "taps")


def test_model_gradients_equal_with_xla_and_tap_kernel_gradients():
  """A whole D (attention, shortcuts, projection) differentiated through both kernel-gradient
  forms gives the same parameter gradients within float32 tolerance."""
  from sagan_jax.models.discriminator import Discriminator

  x = jax.random.normal(jax.random.key(0), (8, 32, 32, 1))
  y = jnp.arange(8) % 10

  def grads(choice):
    model = Discriminator(
      resolution=32,
      ch=8,
      num_classes=10,
      attention_sides=(16,),
      use_sn=True,
      kernels=Kernels(conv_kernel_grad=choice),
    )
    params = model.init({"params": jax.random.key(1)}, x, y)
    return jax.grad(lambda p: jnp.sum(model.apply({**params, "params": p}, x, y) ** 2))(params["params"])

  native, taps = grads("xla"), grads("taps_1x1")
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(native), jax.tree.leaves(taps), strict=True):
    scale = float(np.abs(np.asarray(a)).max()) + 1e-12
    np.testing.assert_allclose(
      np.asarray(b), np.asarray(a), atol=1e-4 * scale, rtol=1e-4, err_msg=jax.tree_util.keystr(path)
    )


def _upsample(x):
  return x.repeat(2, axis=1).repeat(2, axis=2)


def _mean_2x2(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _resampling_reference(x, k, g, resample):
  """Value and (dx, dk) of sum(resampled conv * g) in float64, by the chain rule: upsample's
  transpose sums each 2×2 window, the mean's spreads a quarter of g to each pixel."""
  if resample == "up":
    dx_up, dk = _conv_reference_vjp(_upsample(x), k, g)
    return _conv_reference(_upsample(x), k), _mean_2x2(dx_up) * 4, dk
  dx, dk = _conv_reference_vjp(x, k, _upsample(g) / 4)
  return _mean_2x2(_conv_reference(x, k)), dx, dk


RESAMPLING_FORMS = {
  "resampling_conv2d": lambda x, k, r: convolution.resampling_conv2d(
    x, k, r, Kernels(resampling_conv="low_resolution", conv_kernel_grad="taps_1x1")
  ),
  "composed": lambda x, k, r: convolution.resampling_conv2d(x, k, r, Kernels()),
  "low_resolution": lambda x, k, r: (
    convolution.upsample_conv3x3 if r == "up" else convolution.conv3x3_avg_pool
  )(x, k),
}


@pytest.mark.parametrize(
  "form, kernel",
  [(f, k) for f in RESAMPLING_FORMS for k in ((3, 3), (1, 1)) if f != "low_resolution" or k == (3, 3)],
)  # those: 3×3 only
@pytest.mark.parametrize(
  "resample, x_shape",
  [("up", (2, 5, 4, 3)), ("up", (2, 1, 1, 3)), ("down", (2, 6, 4, 3)), ("down", (2, 2, 2, 3))],
)
def test_resampling_conv_value_and_gradients_match_float64_reference(resample, x_shape, kernel, form):
  """Upsample + conv and conv + 2×2 mean in every form, odd and 1-pixel sides included (the
  phases' padding), against the float64 composition and its chain rule."""
  rng = np.random.default_rng(0)
  x, k = rng.normal(size=x_shape), rng.normal(size=(*kernel, 3, 4))
  b, h, w, _ = x_shape
  out_side = (2 * h, 2 * w) if resample == "up" else (h // 2, w // 2)
  g = rng.normal(size=(b, *out_side, 4))
  fn = lambda x_, k_: RESAMPLING_FORMS[form](x_, k_, resample)
  out, vjp = jax.vjp(fn, jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32))
  dx, dk = vjp(jnp.asarray(g, jnp.float32))
  expected, expected_dx, expected_dk = _resampling_reference(x, k, g, resample)
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dx), expected_dx, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dk), expected_dk, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resample", ["up", "down"])
def test_low_resolution_forms_in_bfloat16_keep_dtypes(resample):
  """bf16 in, bf16 out and bf16 gradients, within bf16 rounding of the float64 composition (the
  kernel's taps are summed in float32 before the cast)."""
  rng = np.random.default_rng(1)
  x, k = rng.normal(size=(2, 8, 8, 16)), rng.normal(size=(3, 3, 16, 8))
  g = rng.normal(size=(2, *((16, 16) if resample == "up" else (4, 4)), 8))
  bf = lambda a: jnp.asarray(a, jnp.bfloat16)
  fn = convolution.upsample_conv3x3 if resample == "up" else convolution.conv3x3_avg_pool
  out, vjp = jax.vjp(fn, bf(x), bf(k))
  dx, dk = vjp(bf(g))
  assert out.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  f64 = lambda a: np.asarray(a, np.float64)
  reference = _resampling_reference(f64(bf(x)), f64(bf(k)), f64(bf(g)), resample)
  for got, want in zip((out, dx, dk), reference, strict=True):
    assert np.abs(f64(got) - want).max() <= 2e-2 * np.abs(want).max()


def _conv_input_sides(fn, x_shape, kernel_shape):
  """The spatial sides of every conv's input in fn's forward jaxpr."""
  jaxpr = jax.make_jaxpr(lambda x, k: fn(x, k))(jnp.zeros(x_shape), jnp.zeros(kernel_shape))
  sides = []

  def walk(jpr):
    for eqn in jpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        sides.append(tuple(eqn.invars[0].aval.shape[1:3]))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)

  walk(jaxpr.jaxpr)
  return sides


@pytest.mark.parametrize("platform, low_resolution_3x3", [("cpu", True), ("cuda", False), ("tpu", False)])
def test_resampling_conv_runs_at_the_low_resolution_where_auto_chooses_it(platform, low_resolution_3x3):
  """A 1×1 kernel convolves the 8×8 map on every platform; a 3×3 one does where 'auto'
  resolves to 'low_resolution' (CPU; GPU and TPU keep the composition: its conv sees the 16×16
  map), whatever host traces it."""
  kernels = kernels_lib.resolve({"platform": platform}, jax.devices(), cpu=("x86_64", True))
  up = lambda x, k: convolution.resampling_conv2d(x, k, "up", kernels)
  down = lambda x, k: convolution.resampling_conv2d(x, k, "down", kernels)
  assert _conv_input_sides(up, (2, 8, 8, 4), (1, 1, 4, 4)) in ([(8, 8)], [])  # [] : the taps' matmul
  assert _conv_input_sides(down, (2, 16, 16, 4), (1, 1, 4, 4)) in ([(8, 8)], [])
  if low_resolution_3x3:
    assert _conv_input_sides(up, (2, 8, 8, 4), (3, 3, 4, 4)) == [(10, 10)]  # padded by 1
    assert _conv_input_sides(down, (2, 16, 16, 4), (3, 3, 4, 4)) == [(16, 16)]  # one stride-2 conv
  else:
    assert _conv_input_sides(up, (2, 8, 8, 4), (3, 3, 4, 4)) == [(16, 16)]
    assert _conv_input_sides(down, (2, 16, 16, 4), (3, 3, 4, 4)) == [(16, 16)]


def test_resampling_conv_rejects_odd_sides_for_the_mean_and_unknown_modes():
  with pytest.raises(ValueError, match="even sides"):
    convolution.resampling_conv2d(jnp.zeros((1, 5, 4, 2)), jnp.zeros((3, 3, 2, 2)), "down")
  with pytest.raises(ValueError, match="not one of"):
    convolution.resampling_conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), "sideways")


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_model_outputs_and_gradients_equal_with_composed_and_low_resolution_convs(net):
  """Whole G (conditional BN, shortcuts, attention) and D (attention, projection) in the CPU's
  forms against the composition with XLA's own gradients: same outputs and parameter gradients
  within float32 tolerance."""
  from sagan_jax.models.discriminator import Discriminator
  from sagan_jax.models.generator import Generator

  y = jnp.arange(8) % 10

  def run(kernels):
    if net == "generator":
      model = Generator(
        resolution=32,
        ch=4,
        z_dim=16,
        num_classes=10,
        image_channels=1,
        attention_sides=(16,),
        kernels=kernels,
      )
      inputs = (jax.random.normal(jax.random.key(0), (8, 16)), y)
      kwargs = {"train": True}
    else:
      model = Discriminator(resolution=32, ch=4, num_classes=10, attention_sides=(16,), kernels=kernels)
      inputs = (jax.random.normal(jax.random.key(0), (8, 32, 32, 1)), y)
      kwargs = {}
    variables = model.init({"params": jax.random.key(1)}, *inputs, **kwargs)
    apply = lambda p: model.apply({**variables, "params": p}, *inputs, **kwargs)
    return apply(variables["params"]), jax.grad(lambda p: jnp.sum(apply(p) ** 2))(variables["params"])

  shipped = run(kernels_lib.resolve({"platform": "cpu"}, jax.devices(), cpu=("x86_64", True)))
  reference = run(Kernels())
  grads = jax.tree.leaves(reference[1])
  floor = 1e-4 * max(float(np.abs(np.asarray(a)).max()) for a in grads)  # G's pre-BN biases: ~0
  np.testing.assert_allclose(np.asarray(shipped[0]), np.asarray(reference[0]), rtol=1e-4, atol=1e-5)
  pairs = zip(jax.tree_util.tree_leaves_with_path(reference[1]), jax.tree.leaves(shipped[1]), strict=True)
  for (path, a), b in pairs:
    scale = float(np.abs(np.asarray(a)).max())
    np.testing.assert_allclose(
      np.asarray(b),
      np.asarray(a),
      atol=max(1e-4 * scale, floor),
      rtol=1e-4,
      err_msg=jax.tree_util.keystr(path),
    )
