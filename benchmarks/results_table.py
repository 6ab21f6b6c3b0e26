"""Markdown table of the benchmark JSONs in experiments/results/ (for README.md).

python benchmarks/results_table.py [experiments/results]
"""

import glob
import json
import os
import sys

COLUMNS = (
  ("file", None),
  ("device", None),
  ("res", "resolution"),
  ("ch", "ch"),
  ("batch", "batch_size"),
  ("dtype", "dtype"),
  ("attention G/D", None),
  ("impl", "attention_impl"),
  ("kernel", "attention_kernel"),
  ("conv grad", "conv_kernel_grad"),
  ("compile s", "compile_s"),
  ("step s", "step_s"),
  ("images/s", "images_per_s"),
  ("GFLOP/step", "gflop_per_step"),
  ("TFLOP/s", "tflops_per_s"),
  ("of bf16 peak", "bf16_peak_fraction"),
  ("peak GiB", "peak_memory_gib"),
)


def cell(result, name, key):
  if name == "file":
    return os.path.basename(result["_path"])
  if name == "device":
    return result["device"]
  if name == "attention G/D":
    return f"{result.get('g_attention')}/{result.get('d_attention')}"
  value = result.get(key)
  if value is None:
    return "–"
  return f"{value:.3g}" if isinstance(value, float) else str(value)


def main():
  folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
  results = []
  for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
    with open(path) as f:
      results.append({**json.load(f), "_path": path})
  print("| " + " | ".join(n for n, _ in COLUMNS) + " |")
  print("|" + "---|" * len(COLUMNS))
  for r in results:
    print("| " + " | ".join(cell(r, n, k) for n, k in COLUMNS) + " |")


if __name__ == "__main__":
  main()
