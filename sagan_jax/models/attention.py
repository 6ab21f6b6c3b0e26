"""SAGAN self-attention block (paper §3).

With x_i the feature at position i (N = H·W positions, C channels):
  f(x) = W_f x (keys), g(x) = W_g x (queries), h(x) = W_h x (values), each 1×1 conv,
  s_ij = f(x_i)ᵀ g(x_j),  β_j,i = softmax_i(s_ij)   (query j attends to key i),
  o_j = W_v (Σ_i β_j,i h(x_i)),  y = γ·o + x,  γ initialised to 0.
There is no 1/√d scaling. The paper gives f, g, h C/8 channels. The authors'
released code instead max-pools keys and values 2×2 and gives h C/2 channels:
``pool_kv=True, value_channel_ratio=2``.

``ResidualControl`` is Table 1's control: a residual block with exactly the attention
block's parameter count, put where attention would be.
"""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from sagan_jax.models.kernels import PLAIN, QUERY_SUM_MAX_CHANNELS, Kernels
from sagan_jax.models.layers import SNConv

ATTENTION_IMPLS = ("xla", "dot_product_attention", "chunked")
ATTENTION_BLOCKS = ("self_attention", "residual")


def flash_kernel(dtype, head_dim: int, platform: str) -> tuple:
  """(implementation, why) for ``jax.nn.dot_product_attention`` on ``platform`` (a
  ``Kernels.platform``: the chip the program is built for, not the host tracing it).

  jax's ``implementation=None`` always takes the XLA form, which materialises the N×N
  scores like the explicit einsum, so the fused cuDNN flash kernel must be asked for by
  name — and only where it runs: a CUDA GPU, bf16/fp16 inputs, a head dim that is a
  multiple of 8 and at most 128 (the pre-Hopper limit; Hopper allows 256).
  ``why`` says what ruled cuDNN out ('' when it is chosen).
  """
  if platform != "cuda":
    return "xla", "not a CUDA GPU"
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return (
      "xla",
      f"cuDNN flash attention takes bf16/fp16, got {jnp.dtype(dtype)} (set config.dtype='bfloat16')",
    )
  if head_dim % 8 or head_dim > 128:
    return "xla", f"cuDNN flash attention needs a head dim that is a multiple of 8 and <= 128, got {head_dim}"
  return "cudnn", ""


_warned = set()


def _fused_attention(queries, keys, values, platform: str):
  """jax.nn.dot_product_attention with SAGAN's scale 1, on cuDNN's flash kernel where it can run."""
  implementation, why = flash_kernel(queries.dtype, queries.shape[-1], platform)
  if why and platform in ("cuda", "rocm") and why not in _warned:
    _warned.add(why)  # once per reason: this runs at trace time, once per layer shape
    logging.warning(
      "attention_impl='dot_product_attention' falls back to XLA's form, which "
      "materialises the N×N scores: %s; attention_impl='chunked' keeps only "
      "B×chunk×N of them alive",
      why,
    )
  q, k, v = (a[:, :, None, :] for a in (queries, keys, values))  # one head: (B, N, 1, C)
  return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation=implementation)[:, :, 0, :]


def _chunked_attention(queries, keys, values, chunk: int):
  """The explicit softmax, ``chunk`` queries at a time: exact (each query's softmax spans all
  keys), with at most B×chunk×N scores alive, forward and backward — each chunk is recomputed
  in the backward pass instead of stored. Works on every backend and dtype (TPU, float32 GPU)."""
  b, n, _ = queries.shape
  chunk = min(chunk, n)
  padded = -(-n // chunk) * chunk  # pad the query axis to whole chunks; the extra rows are dropped
  q = jnp.pad(queries, ((0, 0), (0, padded - n), (0, 0)))
  q = q.reshape(b, padded // chunk, chunk, -1).swapaxes(0, 1)  # (chunks, B, chunk, C)

  @jax.checkpoint
  def attend(q_chunk):
    logits = jnp.einsum("bjc,bic->bji", q_chunk, keys).astype(jnp.float32)
    beta = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bji,bic->bjc", beta.astype(values.dtype), values)

  o = jax.lax.map(attend, q)  # one chunk after another
  return o.swapaxes(0, 1).reshape(b, padded, -1)[:, :n]


def _scores_softmax(queries, keys):
  """β[b, j, i] = softmax_i(g(x_j) · f(x_i)) in float32: query position j, key position i."""
  return jax.nn.softmax(jnp.einsum("bjc,bic->bji", queries, keys).astype(jnp.float32), axis=-1)


def _attention_fwd(query_sums, queries, keys, values):
  del query_sums
  beta = _scores_softmax(queries, keys)
  o = jnp.einsum("bji,bic->bjc", beta.astype(values.dtype), values)
  return o, (queries, keys, values, beta, o)


def _sum_over_queries(weights, x, query_sums: str):
  """Σ_j weights[b, j, i] x[b, j, c] -> [b, i, c], a sum over the major axis of the B×N×N matrix.

  'per_channel' (up to QUERY_SUM_MAX_CHANNELS channels): one multiply-and-column-sum per
  channel. XLA:CPU's dot runs such a contraction ~10× slower than one over the minor axis;
  with few channels (the paper's C/8: 2–8 in the 32×32 models) that made the attention's
  forward and backward alone 1.2–2.5× faster at N=256 (benchmarks/attention_backward.py).
  """
  if query_sums == "per_channel" and x.shape[-1] <= QUERY_SUM_MAX_CHANNELS:
    return jnp.stack(
      [jnp.sum(weights * x[:, :, None, c], axis=1, dtype=jnp.float32) for c in range(x.shape[-1])], axis=-1
    ).astype(x.dtype)
  return jnp.einsum("bji,bjc->bic", weights, x)


def _attention_bwd(query_sums, residuals, d_o):
  queries, keys, values, beta, o = residuals
  d_values = _sum_over_queries(beta.astype(values.dtype), d_o, query_sums)
  d_beta = jnp.einsum("bjc,bic->bji", d_o, values).astype(jnp.float32)
  row_sum = jnp.sum(d_o.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)
  d_logits = (beta * (d_beta - row_sum)).astype(queries.dtype)
  d_queries = jnp.einsum("bji,bic->bjc", d_logits, keys)
  d_keys = _sum_over_queries(d_logits, queries, query_sums)
  return d_queries.astype(queries.dtype), d_keys.astype(keys.dtype), d_values.astype(values.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _hand_written_attention(query_sums, queries, keys, values):
  return _attention_fwd(query_sums, queries, keys, values)[0]


_hand_written_attention.defvjp(_attention_fwd, _attention_bwd)


def softmax_attention(queries, keys, values, kernels: Kernels = PLAIN):
  """o_j = Σ_i β_j,i h(x_i), the explicit form; its backward as ``kernels`` says.

  'hand_written': autodiff of the softmax gives dlogits = β ⊙ (dβ − Σ_i dβ_j,i β_j,i), one
  more pass over the B×N×N scores to reduce; the same row sum is dO_j · o_j
  (Σ_i β_j,i (dO_j · h_i)), which costs B×N×C. It keeps autodiff's dtypes: the weighted sums
  in the values' dtype, the softmax in float32. tests/test_attention.py checks it against the
  chain rule in float64 numpy. 'autodiff': jax's own derivative of the same forward.
  """
  if kernels.attention_backward == "autodiff":
    return _attention_fwd(None, queries, keys, values)[0]
  return _hand_written_attention(kernels.attention_query_sums, queries, keys, values)


def _max_pool_2x2(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class SelfAttention(nn.Module):
  key_channel_ratio: int = 8  # f, g have C / key_channel_ratio channels.
  value_channel_ratio: int = 8  # h has C / value_channel_ratio channels (paper 8, released code 2).
  pool_kv: bool = False  # released code: 2×2 max-pool keys and values.
  use_sn: bool = True
  impl: str = "xla"  # 'xla' explicit softmax, 'dot_product_attention' (cuDNN flash
  # attention on CUDA GPUs, see flash_kernel), or 'chunked'.
  query_chunk: int = 256  # 'chunked': queries per chunk.
  dtype: Any | None = None
  kernels: Kernels = PLAIN  # formulations (models/kernels.py)

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    b, height, width, c = x.shape
    # At least one channel, so tiny smoke-test widths still build.
    ck, cv = max(1, c // self.key_channel_ratio), max(1, c // self.value_channel_ratio)
    conv = lambda feats, name: SNConv(
      feats, (1, 1), use_bias=False, use_sn=self.use_sn, dtype=self.dtype, kernels=self.kernels, name=name
    )
    f = conv(ck, "f")(x, update_stats)  # keys
    g = conv(ck, "g")(x, update_stats)  # queries
    h = conv(cv, "h")(x, update_stats)  # values
    if self.pool_kv:
      f, h = _max_pool_2x2(f), _max_pool_2x2(h)
    queries = g.reshape(b, height * width, ck)
    keys = f.reshape(b, -1, ck)
    values = h.reshape(b, -1, cv)
    if self.impl == "xla":
      o = softmax_attention(queries, keys, values, self.kernels)
      if self.is_mutable_collection("intermediates"):  # the maps, for figures: computed again
        self.sow("intermediates", "attention", _scores_softmax(queries, keys))
    elif self.impl == "dot_product_attention":
      if ck != cv:
        raise ValueError(
          "attention_impl='dot_product_attention' needs equal key and value channels "
          f"(got {ck} and {cv}); use value_channel_ratio == key_channel_ratio or impl 'xla'"
        )
      o = _fused_attention(queries, keys, values, self.kernels.platform)
    elif self.impl == "chunked":
      o = _chunked_attention(queries, keys, values, self.query_chunk)
    else:
      raise ValueError(f"attention impl {self.impl!r} is not one of {ATTENTION_IMPLS}")
    o = conv(c, "v")(o.reshape(b, height, width, cv), update_stats)
    gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32)
    return (x + gamma.astype(o.dtype) * o).astype(x.dtype)


class ResidualControl(nn.Module):
  """y = x + γ·W_b relu(W_a x), 1×1 convs C → m → C with m = C/k + C/v (no biases).

  2·C·m + 1 parameters: exactly the attention block's (f, g: C·C/k each; h, v: C·C/v
  each; γ), so Table 1's comparison isolates attention from the extra parameters.
  γ starts at 0 as in the attention block: both begin as the identity.
  """

  key_channel_ratio: int = 8
  value_channel_ratio: int = 8
  pool_kv: bool = False  # accepted for a uniform signature; nothing to pool here.
  use_sn: bool = True
  impl: str = "xla"  # accepted for a uniform signature.
  query_chunk: int = 256  # accepted for a uniform signature.
  dtype: Any | None = None
  kernels: Kernels = PLAIN

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    c = x.shape[-1]
    hidden = max(1, c // self.key_channel_ratio) + max(1, c // self.value_channel_ratio)
    conv = lambda feats, name: SNConv(
      feats, (1, 1), use_bias=False, use_sn=self.use_sn, dtype=self.dtype, kernels=self.kernels, name=name
    )
    h = conv(c, "b")(nn.relu(conv(hidden, "a")(x, update_stats)), update_stats)
    gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32)
    return (x + gamma.astype(h.dtype) * h).astype(x.dtype)


def sown_attention(intermediates) -> dict:
  """{layer path: β} from a model's 'intermediates' collection (each layer sows its β once)."""
  flat = flax.traverse_util.flatten_dict(intermediates.get("intermediates", {}), sep="/")
  return {k[: -len("/attention")]: v[0] for k, v in flat.items() if k.endswith("/attention")}


def explicit_attention(model: nn.Module) -> nn.Module:
  """G or D with its attention in the explicit-softmax form, the only one that materialises
  (and sows) β; same parameters and outputs, whatever ``attention_impl`` trains."""
  return model.clone(attention_kwargs={**(model.attention_kwargs or {}), "impl": "xla"})


def attention_block(block: str = "self_attention", **kwargs) -> nn.Module:
  """The module placed at an attention side: 'self_attention' or the 'residual' control."""
  if block == "self_attention":
    return SelfAttention(**kwargs)
  if block == "residual":
    return ResidualControl(**kwargs)
  raise ValueError(f"attention block {block!r} is not one of {ATTENTION_BLOCKS}")
