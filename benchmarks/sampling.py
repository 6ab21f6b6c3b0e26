"""Sampling benchmark: images/s of a config's EMA generator through sagan_jax.load's API.

  python benchmarks/sampling.py --config=configs/fashion_mnist.py [--batch=256] [--repeats=5]
      [--config.model.ch=…] [--json_out=benchmarks/results/x.json]

Times ``TrainedModel.generate`` (what python -m sagan_jax.sample runs) on the initial state of
the config (a trained state samples at the same speed: the same program) after one call that
compiles it and measures the standing BN statistics; images/s = batch / median call time. The
standing statistics are measured once per model, so they are not in the per-call time.
"""

import json
import statistics
import time

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_integer("batch", 256, "images per generate call (config.eval.batch_size is set to it)")
flags.DEFINE_integer("repeats", 5, "timed calls after the compiling one")
flags.DEFINE_string("json_out", "", "also write the figures to this JSON file")
config_flags.DEFINE_config_file(
  "config", "configs/fashion_mnist.py", "config to benchmark", lock_config=False
)
FLAGS = flags.FLAGS


def main(_):
  import jax
  import numpy as np

  from sagan_jax import programs, sharding
  from sagan_jax.run import Run
  from sagan_jax.trained import TrainedModel

  config = FLAGS.config
  config.eval.batch_size = FLAGS.batch
  mesh = sharding.create_mesh()
  built = programs.programs(config, mesh)
  model = TrainedModel(Run("", config, 0, built.init(), built, mesh))
  labels = np.arange(FLAGS.batch) % config.model.num_classes
  start = time.perf_counter()
  model.generate(labels, seed=0)
  first = time.perf_counter() - start
  times = []
  for seed in range(1, FLAGS.repeats + 1):
    start = time.perf_counter()
    model.generate(labels, seed=seed)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  figures = {
    "config": f"{config.model.resolution}x{config.model.resolution} ch={config.model.ch}",
    "devices": f"{mesh.size} × {jax.devices()[0].device_kind}",
    "batch": FLAGS.batch,
    "first_call_s": round(first, 2),
    "call_s_median": round(median, 4),
    "call_s_all": [round(t, 4) for t in times],
    "images_per_s": round(FLAGS.batch / median, 1),
  }
  print(json.dumps(figures, indent=1))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  app.run(main)
