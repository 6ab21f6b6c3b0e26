"""Fashion-MNIST classifier features for `fid_fmnist`, the offline metric of the default config.

The standard FID needs the Inception weights and 299x299 inputs; for the embedded
Fashion-MNIST default a small CNN trained here (shipped for the standard data, otherwise
trained once and cached) gives a feature space instead. `fid_fmnist` is the Fréchet
distance in that space: comparable only with itself (same classifier file), never with FID.
"""

import contextlib
import hashlib
import logging
import os
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from sagan_jax.data import fashion_mnist
from sagan_jax.errors import UserError
from sagan_jax.evaluation import metrics

FEATURE_DIM = 128
# The default classifier (get_classifier's defaults) as this code trains it on the Fashion-MNIST
# data's content named in its file name (Debian's dataset-fashion-mnist files): every machine
# scores in the same features, and no run trains it.
SHIPPED = pathlib.Path(__file__).parent / "classifiers"


def _data_digest(data_dir) -> str:
  """Names the images and labels a classifier is trained and tested on, by their decoded
  content: the same data gzipped by another tool (Debian's files, Zalando's) names the same."""
  digest = hashlib.sha256()
  for split in ("train", "test"):
    for array in fashion_mnist.load(split, data_dir):
      digest.update(f"{array.dtype}{array.shape}".encode())
      digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:12]


def load_fashion_mnist(split: str, data_dir="") -> tuple[np.ndarray, np.ndarray]:
  """(images float32 (N, 32, 32, 1) in [-1, 1], labels int32 (N,)) like the generator's output.

  The 28x28 images are padded with their background (-1) to 32x32, as the input pipeline does.
  """
  images, labels = fashion_mnist.load(split, data_dir)
  images = np.pad(
    images.astype(np.float32) / 127.5 - 1.0, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0
  )
  return images, labels


def _space_to_depth(x):
  """(N, H, W, C) -> (N, H/2, W/2, 4C): each 2x2 block becomes one pixel."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


class FMnistClassifier(nn.Module):
  """Two stride-2 convs and a 128-d penultimate layer: (N, 32, 32, 1) -> (features, logits).

  Both convs are written as matmuls (5x5 patches of the input; 2x2 blocks of the first
  conv's output), which trains several times faster than XLA's CPU convolutions.
  The features are the penultimate layer before its ReLU: a unit that is dead on every
  image would make the feature covariance singular.
  """

  @nn.compact
  def __call__(self, images):
    patches = jax.lax.conv_general_dilated_patches(
      images, (5, 5), (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    x = nn.relu(nn.Dense(32, name="conv1")(patches))  # (N, 16, 16, 32)
    x = nn.relu(nn.Dense(64, name="conv2")(_space_to_depth(x)))  # (N, 8, 8, 64)
    features = nn.Dense(FEATURE_DIM, name="penultimate")(x.reshape(len(x), -1))
    logits = nn.Dense(10, name="head")(nn.relu(features))
    return features, logits


@jax.jit
def _apply(params, images):
  return FMnistClassifier().apply(params, images)


def _batched(params, images, batch_size=1000):
  """(features, logits) of many images, in fixed-size batches (one compiled program)."""
  images = np.asarray(images, np.float32)
  feats, logits = [], []
  for start in range(0, len(images), batch_size):
    batch = images[start : start + batch_size]
    n = len(batch)
    batch = np.pad(batch, ((0, batch_size - n), (0, 0), (0, 0), (0, 0)), constant_values=-1.0)
    features, batch_logits = _apply(params, batch)
    feats.append(np.asarray(features[:n]))
    logits.append(np.asarray(batch_logits[:n]))
  return np.concatenate(feats), np.concatenate(logits)


def classifier_features(params, images) -> np.ndarray:
  """Penultimate features (N, 128) float32 of (N, 32, 32, 1) images in [-1, 1]."""
  return _batched(params, images)[0]


def accuracy_of(params, images, labels) -> float:
  """Fraction of `images` whose argmax logit is their label."""
  return float(np.mean(np.argmax(_batched(params, images)[1], axis=1) == labels))


def train_classifier(
  epochs: int = 4,
  num_train: int | None = None,
  seed: int = 0,
  batch_size: int = 128,
  learning_rate: float = 3e-3,
  data_dir="",
):
  """Trains on the first `num_train` (default all) training images; returns (params, test accuracy).

  Adam with a cosine-decayed learning rate; the accuracy is on the full 10k test split.
  """
  train_x, train_y = load_fashion_mnist("train", data_dir)
  train_x, train_y = train_x[:num_train], train_y[:num_train]
  steps_per_epoch = len(train_x) // batch_size
  model = FMnistClassifier()
  params = model.init(jax.random.key(seed), train_x[:1])
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = model.apply(p, images)[1]
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(train_x))
    for i in range(steps_per_epoch):
      batch = order[i * batch_size : (i + 1) * batch_size]
      params, opt_state = step(params, opt_state, train_x[batch], train_y[batch])
  test_x, test_y = load_fashion_mnist("test", data_dir)
  return params, accuracy_of(params, test_x, test_y)


def _cache_path(cache_dir, epochs, num_train, seed, data_dir) -> pathlib.Path:
  size = "all" if num_train is None else num_train
  # The version changes with the architecture, so an old file is never loaded into a new
  # model; the data digest, so a classifier of other data is never loaded for these.
  return pathlib.Path(cache_dir) / (
    f"fmnist_classifier-v1-e{epochs}-n{size}-s{seed}-d{_data_digest(data_dir)}.npz"
  )


def _load(path: pathlib.Path) -> tuple:
  with np.load(path) as stored:
    test_accuracy = float(stored["test_accuracy"])
    flat = {tuple(k.split("/")): jnp.asarray(v) for k, v in stored.items() if k != "test_accuracy"}
  logging.info("Loaded the Fashion-MNIST classifier from %s (test accuracy %.4f)", path, test_accuracy)
  return traverse_util.unflatten_dict(flat), test_accuracy


def get_classifier(cache_dir, epochs: int = 4, num_train: int | None = None, seed: int = 0, data_dir=""):
  """(params, test accuracy) of the classifier: the package's own file for these settings and
  data (SHIPPED), else trained once and cached as an .npz in cache_dir.

  The file name holds the training settings and a digest of the data, so a different budget
  or other data trains anew.
  """
  path = _cache_path(cache_dir, epochs, num_train, seed, data_dir)
  for stored in (SHIPPED / path.name, path):
    if stored.exists():
      return _load(stored)
  start = time.time()
  params, test_accuracy = train_classifier(epochs, num_train, seed, data_dir=data_dir)
  logging.info(
    "Trained the Fashion-MNIST classifier in %.0f s: test accuracy %.4f", time.time() - start, test_accuracy
  )
  # The process's own temporary name: runs started together (a sweep's) train and write the
  # same classifier at once, and a shared name let one rename the other's file away.
  tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")  # np.savez appends .npz to other names
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = traverse_util.flatten_dict(params, sep="/")
    np.savez(tmp, test_accuracy=test_accuracy, **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):  # where the folder cannot be made, there is no file either
      tmp.unlink(missing_ok=True)
    raise UserError(
      f"cannot write the Fashion-MNIST classifier to {path} ({e}): pass a writable cache directory."
    ) from e
  return params, test_accuracy


def fid_fmnist(params, images, reference_stats) -> float:
  """Fréchet distance of `images` to reference (mu, sigma) in the classifier's feature space."""
  return metrics.frechet_distance(
    *metrics.gaussian_stats(classifier_features(params, images)), *reference_stats
  )
