#!/usr/bin/env bash
# sagan128 train-step figures on one GPU (issue 6): bf16, batch 256, attention at feat64 with
# the explicit softmax vs jax.nn.dot_product_attention (cuDNN flash), then feat128 in G with
# cuDNN flash and with query chunks.
# Each JSON names the attention kernel XLA compiled ("attention_kernel": cudnn_flash | xla).
# Needs jax (with CUDA), flax, optax, orbax-checkpoint, pillow, absl-py and ml_collections; the
# benchmark imports no TensorFlow or clu, so a GPU image with JAX needs at most ml_collections added.
# `python experiments/benchmark.py --lower_only …` gives each run's FLOPs beforehand on any CPU.
# Usage: experiments/gpu_benchmarks.sh OUT_DIR [SECONDS_PER_RUN]   (default 300: compiling
# sagan128 takes minutes; a run past its limit is killed and the script goes on)
set -u
out=${1:?output folder}
limit=${2:-300}
mkdir -p "$out"
run() {
  local name=$1; shift
  echo "=== $name"
  timeout "$limit" python3 experiments/benchmark.py --config=configs/sagan128.py --steps=5 \
      --json_out="$out/$name.json" "$@" 2>&1 | grep -v -i "warning" | tail -25
}
common=(--config.batch_size=256 --config.dtype=bfloat16 --config.model.attention_resolutions="(64,)")
run bf16_feat64_dpa "${common[@]}" --config.model.attention_impl=dot_product_attention
run bf16_feat64_xla "${common[@]}" --config.model.attention_impl=xla
run bf16_g128_d64_dpa "${common[@]}" --config.model.attention_impl=dot_product_attention \
    --config.model.g_attention_resolutions="(128,)"
run bf16_g128_d64_chunked "${common[@]}" --config.model.attention_impl=chunked \
    --config.model.g_attention_resolutions="(128,)"
echo "=== attention_memory (compile only: one layer's forward + backward, batch 256, bf16)"
timeout "$limit" python3 experiments/attention_memory.py --batch=256 --sides=64,128 --dtype=bfloat16 \
    --json_out="$out/attention_memory.json" 2>&1 | grep -v -i "warning" | tail -12
