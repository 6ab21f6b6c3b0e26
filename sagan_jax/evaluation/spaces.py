"""The feature spaces metrics are scored in: the FID Inception with the standard weights, and
the project's Fashion-MNIST classifier (offline). Each is a network, its weights, and what
identifies them in reference-cache keys and metrics lines."""

import hashlib
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from sagan_jax import workdir
from sagan_jax.data import fashion_mnist
from sagan_jax.errors import UserError
from sagan_jax.evaluation import fmnist_classifier, inception
from sagan_jax.evaluation.registry import FMNIST_CLASSIFIER, INCEPTION


class FeatureSpace(NamedTuple):
  """A feature extractor and what identifies it in cache keys and metrics lines."""

  name: str  # registry.INCEPTION or registry.FMNIST_CLASSIFIER
  id: str  # identifies the weights; part of the reference cache key
  apply: Callable  # (variables, images NHWC in [-1, 1]) -> (features (N, D), logits (N, K))
  variables: Any
  info: dict  # written to every metrics line


def cache_dir(config) -> pathlib.Path:
  """config.eval.cache_dir, or the package's cache root."""
  return pathlib.Path(config.eval.cache_dir or workdir.cache_root())


def inception_space(config) -> FeatureSpace:
  """The FID Inception with the standard weights (checksum verified, downloaded once if missing)."""
  if config.eval.inception_weights:
    path = pathlib.Path(config.eval.inception_weights)
    if path.name != inception.FID_WEIGHTS_NAME:
      raise UserError(
        f"eval.inception_weights must be the standard FID weights file named "
        f"{inception.FID_WEIGHTS_NAME}, got {path}; FIDs of other weights are not "
        f"comparable"
      )
    weights = inception.fid_weights_file(path.parent, download=False)
  else:
    weights = inception.fid_weights_file(cache_dir(config))
  return FeatureSpace(
    INCEPTION,
    weights.stem,
    lambda v, x: inception.FIDInceptionV3().apply(v, x),
    inception.load_variables(weights),
    {
      "weights": weights.name,
      "input": "bilinear resize to 299x299 without antialiasing",
      "is_softmax_classes": inception.NUM_LOGITS,
    },
  )


def _params_digest(params) -> str:
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:12]


def fmnist_space(config) -> FeatureSpace:
  """The Fashion-MNIST classifier, trained once on the run's data and cached."""
  epochs, num_train = config.eval.fmnist_classifier_epochs, config.eval.fmnist_classifier_num_train
  params, accuracy = fmnist_classifier.get_classifier(
    cache_dir(config),
    epochs=epochs,
    num_train=num_train or None,
    data_dir=fashion_mnist.find_dir(config.dataset.data_dir),
  )
  # Named by its content: reference statistics never outlive the classifier they were made with.
  space_id = f"fmnist_classifier-e{epochs}-n{num_train or 'all'}-{_params_digest(params)}"
  return FeatureSpace(
    FMNIST_CLASSIFIER,
    space_id,
    fmnist_classifier.FMnistClassifier().apply,
    params,
    {"id": space_id, "test_accuracy": accuracy},
  )


def build(name: str, config) -> FeatureSpace:
  """The feature space ``name`` (registry.INCEPTION or registry.FMNIST_CLASSIFIER) of config."""
  return inception_space(config) if name == INCEPTION else fmnist_space(config)
