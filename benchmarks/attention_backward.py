"""The explicit attention's forward + backward with the shipped sum over queries against XLA's dot.

  taskset -c 0 python benchmarks/attention_backward.py [--repeats 30]

``models.attention.softmax_attention`` with the two sums over the query axis of its backward as
one column reduction per channel (kernels.attention_query_sums 'per_channel', the CPU's 'auto',
up to 8 channels) against the same custom VJP with those sums as XLA dots ('dot'), on the
shapes of the 32×32 models' attention at 16×16 (N=256; C/8 = 2, 4, 8 channels at ch 4, 8, 16;
one device's 16 or 32 images) and at 32×32 (N=1024). Prints ms per forward + backward (median)
and the largest difference between the two, relative to the gradients' size.
"""

import argparse

import jax
import jax.numpy as jnp
from microbench import median_ms

from sagan_jax.models import attention
from sagan_jax.models.kernels import QUERY_SUM_MAX_CHANNELS, Kernels


def forward_backward(attend):
  return jax.jit(lambda q, k, v, g: jax.grad(lambda *a: jnp.vdot(attend(*a), g), argnums=(0, 1, 2))(q, k, v))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=30)
  args = p.parse_args()
  per_channel, dot = (Kernels(attention_query_sums=sums) for sums in ("per_channel", "dot"))
  print(f"backend: {jax.default_backend()}; ms per forward + backward (median)")
  for b, n, c in (
    (16, 256, 2),
    (32, 256, 2),
    (16, 256, 4),
    (32, 256, 4),
    (16, 256, 8),
    (32, 256, 8),
    (8, 1024, 4),
    (8, 1024, 16),
  ):
    q, k, v, g = (jax.random.normal(key, (b, n, c)) for key in jax.random.split(jax.random.key(0), 4))
    sums = forward_backward(lambda *a: attention.softmax_attention(*a, per_channel))
    sums_ms, sums_grads = median_ms(sums, q, k, v, g, repeats=args.repeats), sums(q, k, v, g)
    dots = forward_backward(lambda *a: attention.softmax_attention(*a, dot))
    dot_ms, dot_grads = median_ms(dots, q, k, v, g, repeats=args.repeats), dots(q, k, v, g)
    pairs = zip(sums_grads, dot_grads, strict=True)
    diff = max(float(jnp.abs(a - d).max() / jnp.abs(d).max()) for a, d in pairs)
    form = "per channel" if c <= QUERY_SUM_MAX_CHANNELS else "dot (over 8 channels)"
    print(
      f"B={b:>2} N={n:>4} C={c:>2}: 'per_channel' ({form}) {sums_ms:7.2f}  dot {dot_ms:7.2f}  "
      f"dot/per_channel {dot_ms / sums_ms:5.2f}  max rel. diff {diff:.1e}",
      flush=True,
    )


if __name__ == "__main__":
  main()
