"""SelfAttention against an independent float64 numpy form of the paper's equations (§3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.models.attention import SelfAttention, softmax_attention
from sagan_jax.models.kernels import Kernels


def normalised_kernel(variables, name):
  """The 1×1 conv kernel divided by the SN sigma the module used (eval mode: stored u, v)."""
  w = np.asarray(variables["params"][name]["kernel"], np.float64)[0, 0]  # (C_in, C_out)
  sn = variables["spectral"][name]["sn"]
  sigma = np.asarray(sn["v"], np.float64) @ w @ np.asarray(sn["u"], np.float64)
  return w / sigma


def numpy_attention(x, wf, wg, wh, wv, gamma, pool=False):
  """Paper §3 with explicit loops over query j and key i; x is (H, W, C) float64."""
  h, w, c = x.shape
  f, g, hh = x @ wf, x @ wg, x @ wh
  if pool:
    pool2 = lambda a: a.reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))
    f, hh = pool2(f), pool2(hh)
  f, g, hh = f.reshape(-1, f.shape[-1]), g.reshape(-1, g.shape[-1]), hh.reshape(-1, hh.shape[-1])
  n_q, n_k = g.shape[0], f.shape[0]
  beta = np.zeros((n_q, n_k))
  for j in range(n_q):
    s = np.array([f[i] @ g[j] for i in range(n_k)])  # s_ij = f(x_i)ᵀ g(x_j)
    e = np.exp(s - s.max())
    beta[j] = e / e.sum()  # β_j,i: softmax over i
  o = np.stack([sum(beta[j, i] * hh[i] for i in range(n_k)) for j in range(n_q)])
  o = (o @ wv).reshape(h, w, c)
  return x + gamma * o, beta


@pytest.mark.parametrize(
  "shape,pool,value_ratio", [((2, 4, 4, 16), False, 8), ((1, 4, 6, 16), False, 8), ((2, 4, 4, 16), True, 2)]
)
def test_matches_numpy_paper_equations(shape, pool, value_ratio):
  x = jax.random.normal(jax.random.key(0), shape)
  module = SelfAttention(pool_kv=pool, value_channel_ratio=value_ratio)
  variables = module.init({"params": jax.random.key(1)}, x)
  variables["params"]["gamma"] = jnp.asarray(0.7)
  out, inter = module.apply(variables, x, mutable=["intermediates"])
  weights = [normalised_kernel(variables, n) for n in "fghv"]
  for b in range(shape[0]):
    expected, beta = numpy_attention(np.asarray(x[b], np.float64), *weights, 0.7, pool=pool)
    np.testing.assert_allclose(np.asarray(out[b]), expected, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(
      np.asarray(inter["intermediates"]["attention"][0][b]), beta, rtol=2e-4, atol=1e-6
    )


def test_gamma_zero_is_identity():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  module = SelfAttention()
  variables = module.init({"params": jax.random.key(1)}, x)
  assert float(variables["params"]["gamma"]) == 0.0
  np.testing.assert_array_equal(np.asarray(module.apply(variables, x)), np.asarray(x))


def test_transposed_attention_would_fail():
  """Guard on the guard: the numpy reference tells β from βᵀ for a random input."""
  x = np.random.default_rng(0).standard_normal((4, 4, 16))
  w = [
    np.random.default_rng(i).standard_normal(s) for i, s in enumerate([(16, 2), (16, 2), (16, 2), (2, 16)])
  ]
  _, beta = numpy_attention(x, *w, 1.0)
  _, beta_swapped = numpy_attention(x, w[1], w[0], w[2], w[3], 1.0)
  assert not np.allclose(beta, beta_swapped.T)
  np.testing.assert_allclose(beta.sum(axis=1), 1.0)


def numpy_attention_grads(q, k, v, d_o):
  """Float64 reference for the backward of o = softmax(q kᵀ) v, written out from the chain
  rule: dv = βᵀ dO, dβ = dO vᵀ, ds = β ⊙ (dβ − Σ_i dβ ⊙ β), dq = ds k, dk = dsᵀ q."""
  s = q @ k.T
  e = np.exp(s - s.max(axis=1, keepdims=True))
  beta = e / e.sum(axis=1, keepdims=True)
  d_beta = d_o @ v.T
  ds = beta * (d_beta - (d_beta * beta).sum(axis=1, keepdims=True))
  return beta @ v, ds @ k, ds.T @ q, beta.T @ d_o


@pytest.mark.parametrize("query_sums", ["per_channel", "dot"])
@pytest.mark.parametrize(
  "n_q,n_k,ck,cv,scale",
  [
    (64, 64, 2, 2, 1.0),
    (48, 12, 4, 8, 3.0),
    (256, 256, 1, 1, 5.0),
    (16, 16, 8, 2, 10.0),
    (32, 32, 16, 12, 1.0),
  ],
)
def test_softmax_attention_backward_matches_float64(n_q, n_k, ck, cv, scale, query_sums):
  """The hand-written backward (its row sum taken as dO·o) against the chain rule in float64:
  pooled keys (fewer keys than queries), unequal key/value channels, peaked softmaxes; its sums
  over the query axis both as per-channel column sums (up to 8 channels) and as XLA's dot."""
  kernels = Kernels(attention_backward="hand_written", attention_query_sums=query_sums)
  rng = np.random.default_rng(n_q + ck)
  q, k = (scale * rng.standard_normal((2, n, ck)) for n in (n_q, n_k))
  v, d_o = rng.standard_normal((2, n_k, cv)), rng.standard_normal((2, n_q, cv))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  out, vjp = jax.vjp(lambda *a: softmax_attention(*a, kernels), f32(q), f32(k), f32(v))
  got = (out, *vjp(f32(d_o)))
  for b in range(2):
    expected = numpy_attention_grads(q[b], k[b], v[b], d_o[b])
    for name, a, e in zip(("o", "dq", "dk", "dv"), got, expected, strict=True):
      np.testing.assert_allclose(
        np.asarray(a[b], np.float64),
        e,
        rtol=2e-4,
        atol=2e-5 * scale * max(1.0, np.abs(e).max()),
        err_msg=name,
      )


def test_softmax_attention_backward_in_bfloat16_follows_float64():
  rng = np.random.default_rng(0)
  q, k, v, d_o = (rng.standard_normal((1, 32, 4)) for _ in range(4))
  bf = lambda a: jnp.asarray(a, jnp.bfloat16)
  out, vjp = jax.vjp(softmax_attention, bf(q), bf(k), bf(v))
  got = (out, *vjp(bf(d_o)))
  assert [a.dtype for a in got] == [jnp.bfloat16] * 4
  expected = numpy_attention_grads(q[0], k[0], v[0], d_o[0])
  for name, a, e in zip(("o", "dq", "dk", "dv"), got, expected, strict=True):
    np.testing.assert_allclose(
      np.asarray(a[0], np.float64), e, rtol=0.05, atol=0.05 * np.abs(e).max(), err_msg=name
    )


@pytest.mark.parametrize("shape", [(2, 8, 8, 16), (1, 4, 12, 32), (2, 16, 16, 8)])
@pytest.mark.parametrize(
  "impl,query_chunk", [("dot_product_attention", 1024), ("chunked", 16), ("chunked", 20), ("chunked", 5000)]
)
def test_other_impls_equal_explicit(shape, impl, query_chunk):
  """Forward and gradients (input and every parameter), float32; chunks that divide the
  query count, that do not (padding), and one larger than it."""
  x = jax.random.normal(jax.random.key(2), shape)
  explicit = SelfAttention()
  variables = explicit.init({"params": jax.random.key(3)}, x)
  variables["params"]["gamma"] = jnp.asarray(1.3)
  other = SelfAttention(impl=impl, query_chunk=query_chunk)
  np.testing.assert_allclose(
    np.asarray(other.apply(variables, x)), np.asarray(explicit.apply(variables, x)), rtol=1e-5, atol=1e-5
  )
  weights = jax.random.normal(jax.random.key(4), shape)  # a loss that weighs every output

  def grads(module):
    loss = lambda params, x: jnp.sum(weights * module.apply({**variables, "params": params}, x))
    return jax.grad(loss, argnums=(0, 1))(variables["params"], x)

  if impl == "dot_product_attention" and shape != (1, 4, 12, 32):
    return  # its gradient is jax's own; one shape (the non-square one) checks our wiring of it
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5),
    grads(other),
    grads(explicit),
  )


def test_chunked_attention_keeps_a_chunk_of_scores_alive():
  """XLA's buffer assignment for forward + backward: the explicit form holds the B×N×N
  softmax once, for its hand-written backward (autodiff's held three B×N×N buffers);
  'chunked' only B×chunk×N at a time."""
  x = jnp.zeros((2, 32, 32, 16))  # N = 1024 positions: 8 MiB of float32 scores
  variables = SelfAttention().init({"params": jax.random.key(0)}, x)

  def temp_bytes(module):
    loss = lambda params: jnp.sum(module.apply({**variables, "params": params}, x))
    compiled = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  scores = 2 * 1024 * 1024 * 4
  explicit, chunked = temp_bytes(SelfAttention()), temp_bytes(SelfAttention(impl="chunked", query_chunk=128))
  assert scores <= explicit < 1.5 * scores, explicit
  assert chunked < scores / 2, (explicit, chunked)


def test_dot_product_attention_refuses_unequal_head_sizes():
  x = jnp.ones((1, 8, 8, 16))
  with pytest.raises(ValueError, match="equal key and value channels"):
    SelfAttention(impl="dot_product_attention", value_channel_ratio=2).init({"params": jax.random.key(0)}, x)


@pytest.mark.parametrize(
  "dtype,head_dim,platform,expected",
  [
    (jnp.bfloat16, 16, "cuda", "cudnn"),  # sagan128 G at feat64
    (jnp.float16, 8, "cuda", "cudnn"),
    (jnp.float32, 16, "cuda", "xla"),  # cuDNN flash runs bf16/fp16 only
    (jnp.bfloat16, 12, "cuda", "xla"),  # head dim not a multiple of 8
    (jnp.bfloat16, 256, "cuda", "xla"),  # over the pre-Hopper limit
    (jnp.bfloat16, 16, "rocm", "xla"),  # cuDNN is CUDA's
    (jnp.bfloat16, 16, "cpu", "xla"),
    (jnp.bfloat16, 16, "tpu", "xla"),
  ],
)
def test_flash_kernel_asked_for_by_name_only_where_it_runs(dtype, head_dim, platform, expected):
  from sagan_jax.models.attention import flash_kernel

  implementation, why = flash_kernel(dtype, head_dim, platform)
  assert implementation == expected
  assert (why == "") == (expected == "cudnn")
  if dtype == jnp.float32:
    assert "bfloat16" in why  # the fallback says what to change


def test_dot_product_attention_on_this_backend_takes_a_kernel_that_runs_here():
  """On CPU (the plain kernels' platform) the fused path takes XLA's form explicitly (cuDNN
  raises without a GPU)."""
  x = jax.random.normal(jax.random.key(4), (1, 4, 4, 16), jnp.bfloat16)
  module = SelfAttention(impl="dot_product_attention", dtype=jnp.bfloat16)
  variables = module.init({"params": jax.random.key(5)}, x)
  assert module.apply(variables, x).dtype == jnp.bfloat16
