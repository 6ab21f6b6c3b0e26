"""Timing of the micro-benchmarks: the median milliseconds of a jitted call, and of a conv's
three directions."""

import time

import jax


def median_ms(fn, *args, repeats):
  """Median ms of jit(fn)(*args) over ``repeats`` calls, after one untimed call that compiles it."""
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2] * 1e3


def conv_directions(fn, x, kernel, grad_out, repeats):
  """Median ms of fn(x, kernel)'s forward, input gradient and kernel gradient, each alone (inputs
  and cotangent are arguments of the jitted function, so nothing is constant-folded)."""
  return (
    median_ms(fn, x, kernel, repeats=repeats),
    median_ms(
      lambda x_, k, g: jax.vjp(lambda a: fn(a, k), x_)[1](g)[0], x, kernel, grad_out, repeats=repeats
    ),
    median_ms(
      lambda x_, k, g: jax.vjp(lambda a: fn(x_, a), k)[1](g)[0], x, kernel, grad_out, repeats=repeats
    ),
  )
