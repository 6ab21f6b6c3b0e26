"""The metrics an evaluation can score: each registered once, under the name configs and
metrics lines use, with the feature space it reads, the protocol its number follows (written
beside it in every metrics line), the fewest samples it needs, and how it is computed from
the samples' features, logits and labels against the real data's reference.

Adding a metric: a function ``score(sample, reference, context) -> (scalars, details)`` and
one ``register(Metric(...))`` call; nothing else of the evaluator changes.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sagan_jax.errors import UserError
from sagan_jax.evaluation import metrics

INCEPTION, FMNIST_CLASSIFIER = "inception", "fmnist_classifier"


class Samples(NamedTuple):
  """What a metric reads of the generated samples, in its feature space."""

  features: np.ndarray  # (N, D)
  logits: np.ndarray  # (N, K)
  labels: np.ndarray  # (N,) the labels the samples were conditioned on


class Context(NamedTuple):
  """What a metric may need beyond the samples and the reference."""

  num_classes: int
  is_splits: int
  cache: dict  # per evaluator and space: values computed once from the reference
  kid_subsets: int = 100
  kid_subset_size: int = 1000
  prdc_k: int = metrics.PRDC_K


class Metric(NamedTuple):
  name: str
  space: str  # INCEPTION or FMNIST_CLASSIFIER
  protocol: str  # what the number is, written in every metrics line
  min_samples: Callable[[Context], int]
  score: Callable  # (Samples, reference, Context) -> (scalars, details)
  needs_labels: bool = False  # reads each sample's class (scoring images needs them given)
  scalars: tuple = ()  # the numbers it writes into a metrics line


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
  if metric.name in REGISTRY:
    raise ValueError(f"metric {metric.name!r} is registered twice")
  REGISTRY[metric.name] = metric
  return metric


def names() -> tuple:
  return tuple(REGISTRY)


def get(name: str) -> Metric:
  if name not in REGISTRY:
    raise UserError(f"metric {name!r} is not one of {names()}")
  return REGISTRY[name]


# The metrics


def _fid(sample, reference, context):
  del context
  return {
    "fid": metrics.frechet_distance(*metrics.gaussian_stats(sample.features), reference.mu, reference.sigma)
  }, {}


def _fid_fmnist(sample, reference, context):
  scalars, details = _fid(sample, reference, context)
  return {"fid_fmnist": scalars["fid"]}, details


def _inception_score(sample, reference, context):
  del reference
  mean, std = metrics.inception_score(sample.logits, context.is_splits)
  return {"is": mean, "is_std": std}, {"is_splits": context.is_splits}


def _intra_fid(sample, reference, context):
  classes = range(context.num_classes)
  counts = np.bincount(reference.labels, minlength=len(classes))
  if counts.min() < 2:
    raise UserError(
      f"the reference set has fewer than 2 images of class(es) "
      f"{np.flatnonzero(counts < 2)[:10].tolist()}; raise eval.reference_samples"
    )
  mean, by_class = metrics.intra_fid(
    {c: sample.features[sample.labels == c] for c in classes},
    {c: metrics.gaussian_stats(reference.features[reference.labels == c]) for c in classes},
  )
  return {"intra_fid": mean}, {"intra_fid_per_class": [by_class[c] for c in sorted(by_class)]}


def _class_accuracy(sample, reference, context):
  del reference
  accuracy, per_class, confusion = metrics.class_accuracy(sample.logits, sample.labels, context.num_classes)
  # confusion: row = conditioning label, column = predicted class
  return (
    {"class_accuracy": accuracy},
    {"class_accuracy_per_class": per_class, "class_confusion": confusion.tolist()},
  )


def _prdc(sample, reference, context, suffix=""):
  k = context.prdc_k
  if len(reference.features) <= k or len(sample.features) <= k:
    raise UserError(
      f"prdc{suffix} needs more than k={k} reference images and samples, got "
      f"{len(reference.features)} and {len(sample.features)}; raise eval.reference_samples or the "
      f"sample count, or lower eval.prdc_k"
    )
  radii = context.cache.get(("knn_sq_radii", k))
  if radii is None:
    radii = context.cache[("knn_sq_radii", k)] = metrics.knn_sq_radii(reference.features, k)
  scores = metrics.prdc(reference.features, sample.features, k, real_sq_radii=radii)
  protocol = {
    "k": k,
    "num_real": len(reference.features),
    "num_fake": len(sample.features),
    "distance": "euclidean, strict < k-NN radius (Naeem et al. 2020)",
    "coverage_if_identical": round(
      metrics.expected_coverage_of_identical(len(reference.features), len(sample.features), k), 4
    ),
  }
  return {f"{name}{suffix}": value for name, value in scores.items()}, {f"prdc{suffix}_protocol": protocol}


def _prdc_inception(sample, reference, context):
  return _prdc(sample, reference, context, suffix="_inception")


def _kid(sample, reference, context):
  size = context.kid_subset_size
  if min(len(sample.features), len(reference.features)) < size:
    raise UserError(
      f"kid draws subsets of eval.kid_subset_size={size} samples, but there are "
      f"{len(sample.features)} samples and {len(reference.features)} reference images; lower "
      f"eval.kid_subset_size or score more"
    )
  mean, std = metrics.kid(sample.features, reference.features, context.kid_subsets, size)
  protocol = {
    "subsets": context.kid_subsets,
    "subset_size": size,
    "kernel": "(x·y/d + 1)^3",
    "estimate": "unbiased MMD², subsets drawn as torch-fidelity draws them",
    "seed": metrics.KID_SEED,
  }
  return {"kid": mean, "kid_std": std}, {"kid_protocol": protocol}


register(
  Metric(
    "fid",
    INCEPTION,
    "Fréchet distance of FID-Inception pool3 features (2048-d) to the reference's",
    lambda c: 2,
    _fid,
    scalars=("fid",),
  )
)
register(
  Metric(
    "is",
    INCEPTION,
    "Inception Score over the FID-Inception's 1008-way softmax, mean and std over "
    "is_splits contiguous splits",
    lambda c: c.is_splits,
    _inception_score,
    scalars=("is", "is_std"),
  )
)
register(
  Metric(
    "intra_fid",
    INCEPTION,
    "mean over classes of the FID between a class's samples and its reference images",
    lambda c: 2 * c.num_classes,
    _intra_fid,
    needs_labels=True,
    scalars=("intra_fid",),
  )
)
register(
  Metric(
    "fid_fmnist",
    FMNIST_CLASSIFIER,
    "Fréchet distance in the project's Fashion-MNIST classifier's feature space "
    "(not an FID: comparable only with the same classifier)",
    lambda c: 2,
    _fid_fmnist,
    scalars=("fid_fmnist",),
  )
)
register(
  Metric(
    "class_accuracy",
    FMNIST_CLASSIFIER,
    "fraction of samples the project's Fashion-MNIST classifier assigns to their conditioning label",
    lambda c: c.num_classes,
    _class_accuracy,
    needs_labels=True,
    scalars=("class_accuracy",),
  )
)
register(
  Metric(
    "prdc",
    FMNIST_CLASSIFIER,
    "precision, recall (Kynkäänniemi et al. 2019), density, coverage (Naeem et al. "
    "2020) with k = eval.prdc_k in the Fashion-MNIST classifier's features",
    lambda c: c.prdc_k + 1,
    _prdc,
    scalars=("precision", "recall", "density", "coverage"),
  )
)
register(
  Metric(
    "prdc_inception",
    INCEPTION,
    "precision, recall, density, coverage (as prdc) in the FID-Inception pool3 features, "
    "reported as precision_inception, …",
    lambda c: c.prdc_k + 1,
    _prdc_inception,
    scalars=("precision_inception", "recall_inception", "density_inception", "coverage_inception"),
  )
)
register(
  Metric(
    "kid",
    INCEPTION,
    "Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial "
    "kernel in FID-Inception pool3 features, mean and std over eval.kid_subsets random subset "
    "pairs of eval.kid_subset_size (torch-fidelity's protocol)",
    lambda c: c.kid_subset_size,
    _kid,
    scalars=("kid", "kid_std"),
  )
)
