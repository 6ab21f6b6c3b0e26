"""Input benchmark: images/s of the 128×128 ImageNet pipeline, and of sagan128's train step.

  python benchmarks/input.py [--images_per_synset=64] [--batches=10]
      [--batch_size=256] [--train_batch=8] [--train_steps=2] [--skip_train_step]

The pipeline figure: the tests' ImageNet archive writer makes ILSVRC2012_img_train.tar in
the official format with photo-sized JPEGs (about 500×375, ImageNet's typical size), the real
TFDS imagenet2012 builder prepares it, and configs/sagan128.py's training pipeline (random
access, decode, central crop, antialiased resize to 128, flip) reads it epoch after epoch.
The train-step figure: benchmarks/step.py on configs/sagan128.py at a small batch,
since a step at the paper's batch of 256 takes tens of minutes on a 2-core CPU.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNSETS = ("n01440764", "n01530575", "n02085620", "n02123045")


def pipeline_images_per_s(args, tmp: str) -> float:
  from sagan_jax.data import pipeline
  from tests.test_input_pipeline import imagenet_config, write_imagenet_archives

  manual_dir = write_imagenet_archives(
    os.path.join(tmp, "manual"), synsets=SYNSETS, images_per_synset=args.images_per_synset, size=(375, 500)
  )
  config = imagenet_config(os.path.join(tmp, "tfds"), manual_dir)
  config.batch_size = args.batch_size
  batches = pipeline.create_train_iterator(config)  # prepares the dataset on first use
  next(batches)  # warm-up: tracing, thread pools, autotuning
  start = time.perf_counter()
  for _ in range(args.batches):
    next(batches)
  return args.batches * args.batch_size / (time.perf_counter() - start)


def train_step_images_per_s(args) -> float:
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "benchmarks", "step.py"),
      "--config=configs/sagan128.py",
      f"--config.batch_size={args.train_batch}",
      f"--steps={args.train_steps}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
  )
  return float(re.search(r"images_per_s: ([\d.,]+)", proc.stdout).group(1).replace(",", ""))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images_per_synset", type=int, default=64, help="archive size: 4 synsets of these")
  parser.add_argument("--batches", type=int, default=10, help="timed batches after one warm-up batch")
  parser.add_argument("--batch_size", type=int, default=256, help="pipeline batch (sagan128's)")
  parser.add_argument("--train_batch", type=int, default=8, help="train-step batch")
  parser.add_argument("--train_steps", type=int, default=2, help="timed train steps")
  parser.add_argument("--skip_train_step", action="store_true", help="time the pipeline only")
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cores = len(os.sched_getaffinity(0))

  with tempfile.TemporaryDirectory() as tmp:
    rate = pipeline_images_per_s(args, tmp)
  print(
    f"input pipeline (sagan128, 128×128 ImageNet archive format via TFDS array_record, "
    f"{len(SYNSETS) * args.images_per_synset} JPEGs ~500×375 repeated, batch {args.batch_size}, "
    f"{cores} cores): {rate:.1f} images/s"
  )
  if not args.skip_train_step:
    rate = train_step_images_per_s(args)
    print(
      f"train step (sagan128, ch=64, CPU, {cores} cores) at batch {args.train_batch}, not the "
      f"paper's 256 (about {256 / rate / 60:.0f} min per step here): {rate:.2f} images/s"
    )


if __name__ == "__main__":
  main()
