"""Spectral norm against numpy's SVD; batch norm modes; the CPU conv gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.models import layers


def _sn_apply(kernel_shape, steps, seed=0):
  module = layers.SNDense(kernel_shape[-1], use_bias=False)
  x = jnp.ones((1, kernel_shape[0]))
  variables = module.init({"params": jax.random.key(seed)}, x)
  w = jax.random.normal(jax.random.key(seed + 1), kernel_shape)
  variables["params"]["kernel"] = w
  for _ in range(steps):
    _, updates = module.apply(variables, x, update_stats=True, mutable=[layers.SPECTRAL])
    variables = {**variables, **updates}
  return module, variables, np.asarray(w, np.float64)


def test_sigma_converges_to_largest_singular_value():
  _, variables, w = _sn_apply((24, 16), steps=50)
  sigma = float(variables[layers.SPECTRAL]["sn"]["sigma"])
  top = np.linalg.svd(w, compute_uv=False)[0]
  assert sigma == pytest.approx(top, rel=1e-4)


def test_normalised_weight_has_unit_spectral_norm():
  module, variables, _ = _sn_apply((3 * 3 * 8, 12), steps=50)
  normalised = layers.SpectralWeight().apply(
      {layers.SPECTRAL: variables[layers.SPECTRAL]["sn"]}, variables["params"]["kernel"], False)
  assert np.linalg.svd(np.asarray(normalised, np.float64), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-4)


def test_conv_kernel_is_normalised_as_a_matrix():
  module = layers.SNConv(6, (3, 3))
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
  variables = module.init({"params": jax.random.key(1)}, x)
  for _ in range(60):
    _, updates = module.apply(variables, x, update_stats=True, mutable=[layers.SPECTRAL])
    variables = {**variables, **updates}
  w = np.asarray(variables["params"]["kernel"], np.float64).reshape(-1, 6)
  assert float(variables[layers.SPECTRAL]["sn"]["sigma"]) == pytest.approx(
      np.linalg.svd(w, compute_uv=False)[0], rel=1e-4)


def test_stats_do_not_move_in_eval_mode():
  module, variables, _ = _sn_apply((10, 7), steps=1)
  before = jax.tree.map(np.asarray, variables[layers.SPECTRAL])
  x = jnp.ones((1, 10))
  _, updates = module.apply(variables, x, update_stats=False, mutable=[layers.SPECTRAL])
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, updates[layers.SPECTRAL]))
  _, updates = module.apply(variables, x, update_stats=True, mutable=[layers.SPECTRAL])
  assert not np.array_equal(before["sn"]["u"], np.asarray(updates[layers.SPECTRAL]["sn"]["u"]))


def test_no_gradient_through_power_iteration_vectors():
  module, variables, w = _sn_apply((6, 5), steps=30)
  x = jnp.ones((1, 6))

  def loss(kernel):
    out, _ = module.apply({**variables, "params": {"kernel": kernel}}, x, update_stats=True,
                          mutable=[layers.SPECTRAL])
    return out.sum()

  # d(W/σ)/dW with u, v fixed: (I - σ⁻¹ W... ) — check against finite differences of the
  # same expression with u, v frozen.
  sn = variables[layers.SPECTRAL]["sn"]
  u, v = np.asarray(sn["u"], np.float64), np.asarray(sn["v"], np.float64)
  def frozen(kernel):
    return (np.ones((1, 6)) @ (kernel / (v @ kernel @ u))).sum()
  grad = np.asarray(jax.grad(loss)(jnp.asarray(w, jnp.float32)), np.float64)
  eps, numeric = 1e-6, np.zeros_like(w)
  for idx in np.ndindex(*w.shape):
    d = np.zeros_like(w); d[idx] = eps
    numeric[idx] = (frozen(w + d) - frozen(w - d)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)


def test_conditional_batch_norm_uses_class_gains_and_batch_stats():
  module = layers.BatchNorm(num_classes=3)
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 5)) * 3 + 2
  y = jnp.array([0, 1, 2, 0, 1, 2])
  variables = module.init({"params": jax.random.key(1)}, x, y, train=True)
  variables["params"]["gain"]["embedding"] = jnp.arange(15.0).reshape(3, 5) / 10
  out, updates = module.apply(variables, x, y, train=True, update_stats=True, mutable=["batch_stats"])
  xn = np.asarray(x, np.float64)
  mean, var = xn.mean(axis=(0, 1, 2)), xn.var(axis=(0, 1, 2))
  gain = 1 + np.arange(15.0).reshape(3, 5)[np.asarray(y)] / 10
  expected = (xn - mean) / np.sqrt(var + 1e-5) * gain[:, None, None, :]
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), 0.1 * mean, rtol=1e-5)
  eval_out = module.apply({**variables, **updates}, x, y, train=False)
  assert not np.allclose(np.asarray(eval_out), np.asarray(out))  # running stats differ from batch


def _conv_reference(x, k):
  """Stride-1 SAME NHWC conv in float64 numpy, written out over kernel taps."""
  kh, kw = k.shape[:2]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  h, w = x.shape[1:3]
  return sum(xp[:, i:i + h, j:j + w] @ k[i, j] for i in range(kh) for j in range(kw))


CONV_FORMS = {"conv2d": layers.conv2d, "native": layers._native_conv,
              "tap_kernel_grad": layers.conv2d_tap_kernel_grad}


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
  kh, kw = kernel
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  expected_dk = np.stack([np.stack([np.einsum("bhwc,bhwo->co", xp[:, i:i + 6, j:j + 5], g)
                                    for j in range(kw)]) for i in range(kh)])
  flipped = np.transpose(k[::-1, ::-1], (0, 1, 3, 2))
  gp = np.pad(g, ((0, 0), (kh - 1 - ph, ph), (kw - 1 - pw, pw), (0, 0)))
  expected_dx = sum(gp[:, i:i + 6, j:j + 5] @ flipped[i, j] for i in range(kh) for j in range(kw))
  np.testing.assert_allclose(np.asarray(dk), expected_dk, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dx), expected_dx, rtol=1e-4, atol=1e-4)


def test_tap_kernel_grad_in_bfloat16_keeps_dtypes_and_accumulates_in_float32():
  """bf16 inputs: the taps' gradients come back in bf16, as XLA's own do, and are no further
  from the float64 correlation than XLA's own (both round once to bf16 at the end)."""
  rng = np.random.default_rng(1)
  x, k, g = rng.normal(size=(4, 16, 16, 32)), rng.normal(size=(3, 3, 32, 16)), rng.normal(size=(4, 16, 16, 16))
  bf = lambda a: jnp.asarray(a, jnp.bfloat16)
  xp = np.pad(np.asarray(bf(x), np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  g64 = np.asarray(bf(g), np.float64)
  expected = np.stack([np.stack([np.einsum("bhwc,bhwo->co", xp[:, i:i + 16, j:j + 16], g64)
                                 for j in range(3)]) for i in range(3)])
  errors = {}
  for form in ("native", "tap_kernel_grad"):
    _, vjp = jax.vjp(CONV_FORMS[form], bf(x), bf(k))
    dx, dk = vjp(bf(g))
    assert dx.dtype == dk.dtype == jnp.bfloat16
    errors[form] = np.abs(np.asarray(dk, np.float64) - expected).max() / np.abs(expected).max()
  assert errors["tap_kernel_grad"] < 1e-2
  assert errors["tap_kernel_grad"] <= 1.5 * errors["native"] + 1e-3


@pytest.mark.parametrize("x_shape, kernel_shape, devices, taps", [
    ((64, 32, 32, 64), (3, 3, 64, 64), 2, True),    # D's first block at ch=16: 2^21 values a device
    ((64, 8, 8, 64), (3, 3, 64, 64), 2, False),     # a small map
    ((64, 32, 32, 16), (3, 3, 16, 16), 2, False),   # 16 channels: XLA's own measured faster
    ((32, 32, 32, 64), (3, 3, 64, 1), 2, False),    # G's image conv: one output channel
    ((64, 32, 32, 64), (3, 3, 64, 64), 64, False),  # the same conv, one image a device
    ((8, 4, 4, 16), (1, 1, 16, 2), 8, True),        # 1×1: always one matmul
])
def test_kernel_gradient_form_is_chosen_per_device_share(x_shape, kernel_shape, devices, taps):
  """On x86 without AVX-512 the taps go where they won; with AVX-512 (or off x86) only 1×1."""
  assert layers.taps_kernel_grad_on_cpu(x_shape, kernel_shape, devices, True) is taps
  assert layers.taps_kernel_grad_on_cpu(x_shape, kernel_shape, devices, False) is (kernel_shape[:2] == (1, 1))


@pytest.mark.parametrize("machine, flags, expected", [
    ("x86_64", "fpu sse2 avx2 fma", True),
    ("x86_64", "fpu sse2 avx2 avx512f avx512dq avx512_bf16", False),
    ("x86_64", "fpu sse2 avx2 avx512_fp16_like_but_not_f", True),  # a flag that only starts so
    ("aarch64", "fp asimd", False),
])
def test_cpu_kind_is_read_from_cpuinfo(tmp_path, monkeypatch, machine, flags, expected):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n"
                     f"processor\t: 1\nflags\t\t: {flags}\n")
  monkeypatch.setattr(layers.platform, "machine", lambda: machine)
  assert layers.x86_without_avx512.__wrapped__(str(cpuinfo)) is expected
  assert layers.x86_without_avx512.__wrapped__(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("x86_without_avx512", [True, False])
def test_cpu_conv2d_takes_the_taps_where_chosen_and_xla_elsewhere(monkeypatch, x86_without_avx512):
  """On CPU conv2d traces the custom-VJP form exactly where taps_kernel_grad_on_cpu says so."""
  def traced(x_shape, kernel_shape):
    return str(jax.make_jaxpr(layers.conv2d)(jnp.zeros(x_shape), jnp.zeros(kernel_shape)))
  assert jax.default_backend() == "cpu"
  monkeypatch.setattr(layers, "x86_without_avx512", lambda: x86_without_avx512)
  jax.clear_caches()  # make_jaxpr reuses traces: the rule is read at trace time
  big = ((2 * jax.device_count(), 32, 32, 512), (3, 3, 512, 8))  # 2^22 values a device
  assert "custom_vjp" in traced((2, 4, 4, 8), (1, 1, 8, 8))
  assert "custom_vjp" not in traced((2, 4, 4, 8), (3, 3, 8, 8))
  assert ("custom_vjp" in traced(*big)) is x86_without_avx512


def test_model_gradients_equal_with_xla_and_tap_kernel_gradients(monkeypatch):
  """A whole D (attention, shortcuts, projection) differentiated through both kernel-gradient
  forms gives the same parameter gradients within float32 tolerance."""
  from sagan_jax.models.discriminator import Discriminator
  model = Discriminator(resolution=32, ch=8, num_classes=10, attention_sides=(16,), use_sn=True)
  x = jax.random.normal(jax.random.key(0), (8, 32, 32, 1))
  y = jnp.arange(8) % 10
  params = model.init({"params": jax.random.key(1)}, x, y)

  def grads(conv):
    monkeypatch.setattr(layers, "conv2d", conv)
    return jax.grad(lambda p: jnp.sum(model.apply({**params, "params": p}, x, y) ** 2))(params["params"])

  native, taps = grads(layers._native_conv), grads(layers.conv2d_tap_kernel_grad)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(native), jax.tree.leaves(taps)):
    scale = float(np.abs(np.asarray(a)).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4 * scale, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))
