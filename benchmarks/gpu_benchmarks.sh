#!/usr/bin/env bash
# sagan128 train-step figures on one GPU (issue 6): bf16, batch 256, attention at feat64 with
# the explicit softmax vs jax.nn.dot_product_attention (cuDNN flash), then feat128 in G with
# cuDNN flash and with query chunks, then one attention layer's memory by implementation.
# Each JSON names the attention kernel XLA compiled ("attention_kernel": cudnn_flash | xla).
# Needs jax (with CUDA), flax, optax, orbax-checkpoint, pillow, absl-py and ml_collections; the
# benchmark imports no TensorFlow or clu, so a GPU image with JAX needs at most ml_collections added.
# `python benchmarks/step.py --lower_only …` gives each run's FLOPs beforehand on any CPU.
#
# Usage: benchmarks/gpu_benchmarks.sh OUT_DIR [RUN ...]
#   RUN: any of bf16_feat64_dpa bf16_feat64_xla bf16_g128_d64_dpa bf16_g128_d64_chunked
#        attention_memory bf16_feat64_dpa_lowres (default: all, in that order; the last is
#        bf16_feat64_dpa with the resampling convs at the low resolution, which only CPUs use
#        today: compare its images/s with bf16_feat64_dpa's). Each is bounded by SECONDS_PER_RUN
#        (env, default 300: compiling sagan128 takes minutes); split the list over several
#        calls where one call is limited (e.g. 10 minutes).
set -u
out=${1:?output folder}
shift
limit=${SECONDS_PER_RUN:-300}
runs=("$@")
[ ${#runs[@]} -eq 0 ] && runs=(bf16_feat64_dpa bf16_feat64_xla bf16_g128_d64_dpa bf16_g128_d64_chunked attention_memory bf16_feat64_dpa_lowres)
mkdir -p "$out"
common=(--config=configs/sagan128.py --steps=5 --config.batch_size=256 --config.dtype=bfloat16
        --config.model.attention_resolutions="(64,)")
g128=(--config.model.g_attention_resolutions="(128,)")
for name in "${runs[@]}"; do
  echo "=== $name"
  case $name in
    bf16_feat64_dpa) args=("${common[@]}" --config.model.attention_impl=dot_product_attention) ;;
    bf16_feat64_xla) args=("${common[@]}" --config.model.attention_impl=xla) ;;
    bf16_feat64_dpa_lowres) args=("${common[@]}" --config.model.attention_impl=dot_product_attention
                                  --low_resolution_resampling) ;;
    bf16_g128_d64_dpa) args=("${common[@]}" "${g128[@]}" --config.model.attention_impl=dot_product_attention) ;;
    bf16_g128_d64_chunked) args=("${common[@]}" "${g128[@]}" --config.model.attention_impl=chunked) ;;
    attention_memory)  # compile only: one layer's forward + backward
      timeout "$limit" python3 benchmarks/attention_memory.py --batch=256 --sides=64,128 \
          --dtype=bfloat16 --json_out="$out/attention_memory.json" 2>&1 | grep -v -i "warning" | tail -12
      continue ;;
    *) echo "unknown run $name"; exit 2 ;;
  esac
  timeout "$limit" python3 benchmarks/step.py "${args[@]}" --json_out="$out/$name.json" 2>&1 \
      | grep -v -i "warning" | tail -25
done
