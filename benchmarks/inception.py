"""Feature-extraction throughput of the Flax FID Inception (pool features + logits).

Runs with random weights (speed does not depend on them), on whatever backend JAX
picks. Images are generated at --image_size and resized to 299x299 inside the network,
as for generator samples. Example:

  python benchmarks/inception.py --batch_sizes=8,32 --iterations=3
"""

import time

import jax
import numpy as np
from absl import app, flags

from sagan_jax.evaluation import inception  # noqa: E402

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["8", "32"], "Batch sizes to time.")
_ITERATIONS = flags.DEFINE_integer("iterations", 3, "Timed calls per batch size, after a warm-up.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Side of the square input images.")
_PRECISION = flags.DEFINE_string("precision", "highest", "Matmul/conv precision of the network.")


def main(argv):
  del argv
  variables = inception.random_variables()
  print(
    f"backend: {jax.default_backend()} ({jax.device_count()} device(s)); RANDOM weights "
    f"(throughput only); inputs {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x3 -> 299x299; "
    f"precision {_PRECISION.value}"
  )
  rng = np.random.default_rng(0)
  for batch_size in map(int, _BATCH_SIZES.value):
    images = rng.uniform(-1, 1, (batch_size, _IMAGE_SIZE.value, _IMAGE_SIZE.value, 3))
    images = images.astype(np.float32)
    start = time.perf_counter()
    jax.block_until_ready(inception.inception_apply(variables, images, precision=_PRECISION.value))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_ITERATIONS.value):
      jax.block_until_ready(inception.inception_apply(variables, images, precision=_PRECISION.value))
    seconds = (time.perf_counter() - start) / _ITERATIONS.value
    print(
      f"batch {batch_size:4d}: {batch_size / seconds:8.1f} images/s "
      f"({seconds:.2f} s/batch; first call incl. compile {compile_s:.1f} s)"
    )


if __name__ == "__main__":
  app.run(main)
