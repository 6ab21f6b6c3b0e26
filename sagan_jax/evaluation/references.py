"""Statistics of the real data in a feature space, computed once and cached as an .npz named
by a hash of everything they depend on (dataset, split, resolution, sample count, the feature
space's weights): a fixed random subset of the reference split, preprocessed like training
images but never flipped."""

import hashlib
import json
import logging
import math
import os
import pathlib
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from sagan_jax.errors import DiskFull, UserError, disk_full
from sagan_jax.evaluation import metrics
from sagan_jax.evaluation.spaces import FeatureSpace, cache_dir

# The reference subset is drawn with a fixed seed, so runs with any config.seed share the cache.
REFERENCE_SEED = 0
CACHE_FORMAT = 1


class Reference(NamedTuple):
  """Statistics of the real data in one feature space; per-class ones come from the features."""

  mu: np.ndarray
  sigma: np.ndarray
  features: np.ndarray  # (N, D) float32: per-class covariances of 1000 classes would not fit
  labels: np.ndarray  # (N,) int32
  path: pathlib.Path


def key(config, space: FeatureSpace) -> dict:
  d, e = config.dataset, config.eval
  return {
    "format": CACHE_FORMAT,
    "dataset": d.name,
    "data_dir": os.path.abspath(d.data_dir) if d.data_dir else "",
    "version": d.version,
    "split": e.reference_split,
    "resolution": config.model.resolution,
    "channels": config.model.image_channels,
    "num_samples": e.reference_samples,
    "seed": REFERENCE_SEED,
    "features": space.id,
  }


def path(config, space: FeatureSpace) -> pathlib.Path:
  k = key(config, space)
  digest = hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:16]
  split = re.sub(r"[^\w.-]+", "_", k["split"])
  name = f"reference-{k['dataset']}-{split}-{k['resolution']}px-{k['num_samples']}-{space.name}-{digest}.npz"
  return cache_dir(config) / "reference_stats" / name


def real_batches(config, num: int):
  """(host batches of ``num`` real images, their labels) of the reference split."""
  from sagan_jax.data import order, pipeline  # tf.data: only the reference statistics read data

  config = config.copy_and_resolve_references()
  config.dataset.split = config.eval.reference_split
  config.dataset.random_flip = False
  batch_size = config.eval.batch_size
  source = pipeline.load_source(config)
  num = min(num, source.num_examples)
  index_batches = order.local_index_batches(
    source.num_examples, global_batch=batch_size, seed=REFERENCE_SEED, start_index=0
  )
  ds = source.examples(index_batches, config).batch(batch_size)
  batches = list(ds.take(math.ceil(num / batch_size)).as_numpy_iterator())
  labels = np.concatenate([b["label"] for b in batches])[:num]
  return [b["image"] for b in batches], labels


def _on_every_process(flag: bool) -> bool:
  """`flag` of all processes ANDed: they must agree on computing the reference (SPMD)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))


def load_or_compute(config, space: FeatureSpace, features_of: Callable) -> Reference:
  """The cached statistics of the real data, computed (by every process together) if missing.
  ``features_of(host_batches, num)`` extracts the space's features on the devices."""
  target = path(config, space)
  if not _on_every_process(target.exists()):
    logging.info(
      "computing reference statistics of %s in the %s space (once; cached)", config.dataset.name, space.name
    )
    images, labels = real_batches(config, config.eval.reference_samples)
    features = features_of(images, len(labels))
    mu, sigma = metrics.gaussian_stats(features)
    stats = dict(
      mu=mu, sigma=sigma, features=features, labels=labels, key=json.dumps(key(config, space), sort_keys=True)
    )
    # Every process writes: on pods, each host's cache is its own disk.
    tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.npz")  # savez appends .npz otherwise
    try:
      target.parent.mkdir(parents=True, exist_ok=True)
      np.savez(tmp, **stats)
      os.replace(tmp, target)
    except OSError as e:
      tmp.unlink(missing_ok=True)
      if disk_full(e):
        raise DiskFull(
          f"no space left on the device of {target.parent} while caching the "
          f"reference statistics ({e.strerror}); free space there or set "
          f"--config.eval.cache_dir to a folder on another disk"
        ) from None
      raise UserError(
        f"cannot write the reference statistics to {target} ({e.strerror}); set "
        f"--config.eval.cache_dir to a writable folder"
      ) from e
  with np.load(target) as stored:
    return Reference(stored["mu"], stored["sigma"], stored["features"], stored["labels"], target)


class StoredReference(NamedTuple):
  """A statistics file another machine wrote (``write_file``): the reference and its key."""

  reference: Reference
  key: dict  # what the statistics depend on (``key``): dataset, split, size, feature space
  space: str  # the feature space's name (registry.INCEPTION or registry.FMNIST_CLASSIFIER)


def write_file(reference: Reference, target: str) -> None:
  """A copy of a cached reference's file at ``target`` (whole or not at all)."""
  from sagan_jax import workdir as workdir_lib

  workdir_lib.write_atomic(workdir_lib.path(target), reference.path.read_bytes())


def read_file(source: str) -> StoredReference:
  """The statistics file at ``source``, or one UserError saying what is wrong with it."""
  from sagan_jax.evaluation.registry import FMNIST_CLASSIFIER, INCEPTION

  try:
    with np.load(source) as stored:
      missing = sorted({"mu", "sigma", "features", "labels", "key"} - set(stored.files))
      if missing:
        raise UserError(
          f"{source} is not a reference statistics file (no {missing}); write one with python -m "
          f"sagan_jax.evaluate --config=<dataset config> --save_reference={source}"
        )
      key_dict = json.loads(str(stored["key"]))
      reference = Reference(
        stored["mu"], stored["sigma"], stored["features"], stored["labels"], pathlib.Path(source)
      )
  except (OSError, ValueError) as e:
    raise UserError(f"{source} is not a readable reference statistics file ({e})") from None
  if key_dict.get("format") != CACHE_FORMAT:
    raise UserError(
      f"{source} holds statistics of format {key_dict.get('format')}, this version reads "
      f"{CACHE_FORMAT}; write it again with this version's --save_reference"
    )
  space = FMNIST_CLASSIFIER if str(key_dict["features"]).startswith(FMNIST_CLASSIFIER) else INCEPTION
  return StoredReference(reference, key_dict, space)
