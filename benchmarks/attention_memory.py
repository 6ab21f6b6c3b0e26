"""Memory of one attention layer's forward + backward, by implementation (issue 6).

  python benchmarks/attention_memory.py [--batch=16] [--sides=32,64] [--channels=128]
      [--chunk=256] [--dtype=float32] [--json_out=…]

Compiles (never runs) d/dparams of sum(SelfAttention(x)) for x of shape (B, side, side, C)
and prints the temporaries of XLA's buffer assignment, next to the
size of the B×N×N float32 scores. On a CPU this is XLA's CPU plan — the N² buffers dominate
on every backend, so it shows what each implementation keeps alive; on a GPU it is the plan
the GPU would run. 'dot_product_attention' is XLA's form except on CUDA with bf16/fp16.
"""

import argparse
import json


def layer_memory(impl, batch, side, channels, chunk, dtype):
  import jax
  import jax.numpy as jnp

  from sagan_jax.models.attention import SelfAttention

  module = SelfAttention(impl=impl, query_chunk=chunk, dtype=jnp.dtype(dtype))
  x = jax.ShapeDtypeStruct((batch, side, side, channels), jnp.dtype(dtype))
  variables = jax.eval_shape(
    lambda: SelfAttention().init({"params": jax.random.key(0)}, jnp.zeros(x.shape, x.dtype))
  )

  def grad(params, rest, x):
    loss = lambda p: jnp.sum(module.apply({**rest, "params": p}, x).astype(jnp.float32))
    return jax.grad(loss)(params)

  rest = {k: v for k, v in variables.items() if k != "params"}
  analysis = jax.jit(grad).lower(variables["params"], rest, x).compile().memory_analysis()
  return analysis.temp_size_in_bytes


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--sides", default="32,64")
  p.add_argument("--channels", type=int, default=128, help="sagan128's G has 128 channels at 64×64")
  p.add_argument("--chunk", type=int, default=256)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--json_out", default="")
  args = p.parse_args()
  import jax

  rows = []
  print(f"device: {jax.devices()[0].device_kind}, batch {args.batch}, C={args.channels}, {args.dtype}")
  print("| side | N | B×N×N f32 scores MiB | impl | temporaries MiB |")
  print("|---|---|---|---|---|")
  for side in (int(s) for s in args.sides.split(",")):
    n = side * side
    scores = args.batch * n * n * 4 / 2**20
    for impl in ("xla", "dot_product_attention", "chunked"):
      temp = layer_memory(impl, args.batch, side, args.channels, args.chunk, args.dtype) / 2**20
      name = f"chunked ({args.chunk})" if impl == "chunked" else impl
      rows.append({"side": side, "impl": name, "scores_mib": scores, "temp_mib": temp})
      print(f"| {side} | {n} | {scores:,.0f} | {name} | {temp:,.1f} |", flush=True)
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(
        {
          "device": jax.devices()[0].device_kind,
          "batch": args.batch,
          "channels": args.channels,
          "dtype": args.dtype,
          "rows": rows,
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
