"""The train step compiled two ways and timed interleaved: one implementation choice A/B'd.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python experiments/step_ab.py
      --compare {attention_backward,attention_query_sums,conv_kernel_grad,resampling_conv} [--models torch4 default feat32 torch16]
      [--rounds 5] [--steps 8]

Comparisons (the shipped side first):
  attention_backward  ``models.attention.softmax_attention`` (hand-written backward) against
                      autodiff of the same explicit form.
  conv_kernel_grad    ``models.convolution.conv2d`` (on CPU the per-tap kernel gradient where
                      ``taps_kernel_grad_on_cpu`` chooses it) against XLA's own convolution
                      gradients everywhere.
  resampling_conv     ``models.convolution.resampling_conv2d`` (on CPU G's upsample + 3×3 conv
                      and D's 3×3 conv + 2×2 mean as convs at the low resolution) against the
                      composition as the model writes it (``composed_resampling_conv2d``).
  attention_query_sums  the attention backward's sums over the query axis as one column
                      reduction per channel (``models.attention._sum_over_queries``, on CPU
                      with ≤ 8 channels) against XLA's dot.
Models: ``torchN`` is experiments/torch_sagan.py's config at ch=N (the PyTorch comparison's),
``default`` configs/fashion_mnist.py, ``feat32`` the default with attention at 32×32 in G only
(Table 1's feat32). Each model's step is compiled once per side with the module function put in
its place (jax's caches and the programs cache cleared in between: jit's trace cache keys on the
function and its static config, so without that the second side reuses the first's program).
Printed per model: XLA's temporaries for each step, then per round each side's seconds per step
over ``--steps`` steps, sides alternating in order, and the median of the per-round ratios
other / shipped (> 1: the shipped side is faster).
"""
import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_sagan  # noqa: E402
from sweep import load_base_config  # noqa: E402
from sagan_jax import programs, sharding  # noqa: E402
from sagan_jax.models import attention, convolution, layers  # noqa: E402


def autodiff_attention(queries, keys, values):
  beta = attention._scores_softmax(queries, keys)
  return jnp.einsum("bji,bic->bjc", beta.astype(values.dtype), values)


# name -> (module, attribute, shipped side's name, other side's name, other side's function)
COMPARISONS = {
    "attention_backward": (attention, "softmax_attention", "hand_written", "autodiff", autodiff_attention),
    "conv_kernel_grad": (convolution, "conv2d", "taps_where_chosen", "xla_everywhere", convolution._native_conv),
    "resampling_conv": (layers, "resampling_conv2d", "low_resolution", "composed",
                        convolution.composed_resampling_conv2d),
    "attention_query_sums": (attention, "_sum_over_queries", "per_channel_sums", "dot",
                             lambda weights, x: jnp.einsum("bji,bjc->bic", weights, x)),
}


def model_config(name):
  if name.startswith("torch"):
    config = torch_sagan.make_config(int(name[len("torch"):]), 32)
    config.d_steps_per_g_step = 1
    return config
  if name == "default":
    return load_base_config("configs/fashion_mnist.py")
  if name == "feat32":  # Table 1's variant (experiments/attention_placement.py)
    return load_base_config("configs/fashion_mnist.py", ["model.attention_resolutions=(32,)",
                                                         "model.d_attention_resolutions=()"])
  raise SystemExit(f"error: model {name!r} is not torchN, default or feat32")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--compare", required=True, choices=sorted(COMPARISONS))
  p.add_argument("--models", nargs="+", default=["torch4", "default", "feat32", "torch16"])
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=8)
  args = p.parse_args()
  module, attribute, shipped_name, other_name, other = COMPARISONS[args.compare]
  shipped = getattr(module, attribute)
  mesh = sharding.create_mesh()
  for name in args.models:
    config = model_config(name)
    m = config.model
    rng = np.random.default_rng(0)
    shape = (1, config.batch_size, m.resolution, m.resolution, m.image_channels)
    batch = sharding.global_batch({"image": rng.uniform(-1, 1, shape).astype(np.float32),
                                   "label": rng.integers(0, m.num_classes, shape[:2]).astype(np.int32)}, mesh)
    sides = {}
    try:
      for side, fn in ((shipped_name, shipped), (other_name, other)):
        setattr(module, attribute, fn)
        jax.clear_caches()
        programs._PROGRAMS.clear()
        built = programs.programs(config, mesh)
        state = built.init()
        sides[side] = [built.train_step.lower(state, batch).compile(), state]
    finally:
      setattr(module, attribute, shipped)
      programs._PROGRAMS.clear()
    temps = {s: c.memory_analysis().temp_size_in_bytes / 2 ** 20 for s, (c, _) in sides.items()}
    print(f"{name}: step temporaries " + ", ".join(f"{s} {t:.1f} MiB" for s, t in temps.items()), flush=True)

    def block(side):
      compiled, state = sides[side]
      for _ in range(2):  # warm-up
        state, metrics = compiled(state, batch)
      jax.block_until_ready(state)
      t0 = time.perf_counter()
      for _ in range(args.steps):
        state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      sides[side][1] = state
      return (time.perf_counter() - t0) / args.steps

    ratios = []
    for r in range(args.rounds):
      order = [shipped_name, other_name][::1 if r % 2 == 0 else -1]
      t = {side: block(side) for side in order}
      ratios.append(t[other_name] / t[shipped_name])
      print(f"  round {r + 1}: {shipped_name} {t[shipped_name]:.4f}, {other_name} {t[other_name]:.4f} s/step, "
            f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"{name}: {other_name} / {shipped_name}, median of per-round ratios {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}–{max(ratios):.3f}; load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
  main()
