"""Evaluation of a run: sample with the EMA generator, extract features on device, score.

An `Evaluator` is built once per run. Each `evaluate(state, step, num_samples)` draws
`num_samples` images in batches sharded over the mesh (fixed noise, labels cycling
through the classes so every class is scored), feeds each batch to the feature
extractors the metrics need, and compares with reference statistics of the real data.
Those are computed once per (dataset, split, resolution, sample count, extractor) and
cached as an .npz named by a hash of that key. One JSON line per evaluation goes to
`workdir/metrics.jsonl`, holding next to the numbers what makes them comparable.

Metrics: 'fid', 'is', 'intra_fid' in the FID Inception's space; in the space of the
project's own Fashion-MNIST classifier (offline; comparable only with the same classifier):
'fid_fmnist', 'class_accuracy' (the fraction of samples it assigns to their conditioning
label; per class and the confusion counts too) and 'prdc' (precision, recall, density and
coverage of the samples against the reference features; k-NN balls with k=5).
"""
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from sagan_jax import checkpointing, fashion_mnist, input_pipeline, sampling, sharding
from sagan_jax import config as config_lib
from sagan_jax.errors import DiskFull, UserError, disk_full
from sagan_jax.evaluation import fmnist_classifier, inception, metrics

METRICS_FILE = "metrics.jsonl"
# The reference subset is drawn with a fixed seed, so runs with any config.seed share the cache.
REFERENCE_SEED = 0
# Offset from config.seed for the evaluation noise: the same z at every evaluation of a run.
NOISE_SEED_OFFSET = 20_180_518
CACHE_FORMAT = 1


class FeatureSpace(NamedTuple):
  """A feature extractor and what identifies it in cache keys and metrics lines."""
  name: str        # 'inception' or 'fmnist_classifier'
  id: str          # identifies the weights; part of the reference cache key
  apply: Callable  # (variables, images NHWC in [-1, 1]) -> (features (N, D), logits (N, K))
  variables: Any
  info: dict       # written to every metrics line


class Reference(NamedTuple):
  """Statistics of the real data in one feature space; per-class ones come from the features."""
  mu: np.ndarray
  sigma: np.ndarray
  features: np.ndarray  # (N, D) float32: per-class covariances of 1000 classes would not fit
  labels: np.ndarray    # (N,) int32
  path: pathlib.Path


def cache_dir(config) -> pathlib.Path:
  if config.eval_cache_dir:
    return pathlib.Path(config.eval_cache_dir)
  return inception.default_cache_dir()


def inception_space(config) -> FeatureSpace:
  """The FID Inception with the standard weights (checksum verified, downloaded once if missing)."""
  if config.inception_weights:
    path = pathlib.Path(config.inception_weights)
    if path.name != inception.FID_WEIGHTS_NAME:
      raise UserError(f"inception_weights must be the standard FID weights file named "
                      f"{inception.FID_WEIGHTS_NAME}, got {path}; FIDs of other weights are not "
                      f"comparable")
    weights = inception.fid_weights_file(path.parent, download=False)
  else:
    weights = inception.fid_weights_file(cache_dir(config))
  return FeatureSpace(
      "inception", weights.stem, lambda v, x: inception.FIDInceptionV3().apply(v, x),
      inception.load_variables(weights),
      {"weights": weights.name, "input": "bilinear resize to 299x299 without antialiasing",
       "is_softmax_classes": inception.NUM_LOGITS})


def _params_digest(params) -> str:
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:12]


def fmnist_space(config) -> FeatureSpace:
  """The Fashion-MNIST classifier, trained once on the run's data and cached."""
  epochs, num_train = config.eval_fmnist_classifier_epochs, config.eval_fmnist_classifier_num_train
  params, accuracy = fmnist_classifier.get_classifier(
      cache_dir(config), epochs=epochs, num_train=num_train or None,
      data_dir=fashion_mnist.find_dir(config.dataset.data_dir))
  # Named by its content: reference statistics never outlive the classifier they were made with.
  space_id = f"fmnist_classifier-e{epochs}-n{num_train or 'all'}-{_params_digest(params)}"
  return FeatureSpace("fmnist_classifier", space_id, fmnist_classifier.FMnistClassifier().apply,
                      params, {"id": space_id, "test_accuracy": accuracy})


class Evaluator:
  """Scores the EMA generator of a run; see the module docstring."""

  def __init__(self, config, mesh, sampler: Callable, workdir: str):
    """`sampler(state, z, y) -> images`: a sampling.Sampler (EMA weights; z, y batch-sharded)."""
    config_lib.check_evaluation(config, mesh.size)
    self.config, self.sampler = config, sampler
    self.metrics_path = checkpointing.workdir_path(workdir) / METRICS_FILE  # gs:// too
    self._batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    names = set(config.eval_metrics)
    self.spaces = {}
    if names & set(config_lib.INCEPTION_METRICS):
      self.spaces["inception"] = inception_space(config)
    if names & set(config_lib.FMNIST_METRICS):
      self.spaces["fmnist_classifier"] = fmnist_space(config)
    self._variables = {k: jax.device_put(s.variables, replicated) for k, s in self.spaces.items()}
    constrain = lambda x: jax.lax.with_sharding_constraint(x, self._batch_sharding)
    # Images come replicated (sampler) or batch-sharded (real data); each device takes its share.
    self._extract = {k: jax.jit(lambda v, x, apply=s.apply: apply(v, constrain(x)),
                                out_shardings=replicated)
                     for k, s in self.spaces.items()}
    self._references = {}
    self._real_sq_radii = {}  # the reference's k-NN radii, by space: computed once per run

  def _global(self, host_array: np.ndarray) -> jax.Array:
    """A full global batch, identical on every process, as a batch-sharded array."""
    return jax.make_array_from_callback(host_array.shape, self._batch_sharding,
                                        lambda index: host_array[index])

  def _features(self, batches, num: int, spaces) -> dict:
    """{space: (features, logits)} of the first `num` images of full-size batches."""
    out = {k: ([], []) for k in spaces}
    for images in batches:
      for k in spaces:
        features, logits = self._extract[k](self._variables[k], images)
        out[k][0].append(np.asarray(features))
        out[k][1].append(np.asarray(logits))
    return {k: (np.concatenate(f)[:num], np.concatenate(l)[:num]) for k, (f, l) in out.items()}

  def image_features(self, images: np.ndarray) -> dict:
    """{space: (features, logits)} of host images (N, H, W, C) in [-1, 1], extracted by the
    programs that score samples (for reference points of real or altered images)."""
    batch_size, num = self.config.eval_batch_size, len(images)
    pad = sharding.round_up(num, batch_size) - num
    images = np.pad(np.asarray(images, np.float32), ((0, pad),) + ((0, 0),) * 3,
                    constant_values=-1.0)
    batches = (self._global(images[i:i + batch_size]) for i in range(0, len(images), batch_size))
    return self._features(batches, num, self.spaces)

  # Reference statistics

  def _reference_key(self, space: FeatureSpace) -> dict:
    c, d = self.config, self.config.dataset
    return {"format": CACHE_FORMAT, "dataset": d.name,
            "data_dir": os.path.abspath(d.data_dir) if d.data_dir else "", "version": d.version,
            "split": c.eval_reference_split, "resolution": c.model.resolution,
            "channels": c.model.image_channels, "num_samples": c.eval_reference_samples,
            "seed": REFERENCE_SEED, "features": space.id}

  def reference_path(self, space: FeatureSpace) -> pathlib.Path:
    key = self._reference_key(space)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    split = re.sub(r"[^\w.-]+", "_", key["split"])
    name = (f"reference-{key['dataset']}-{split}-{key['resolution']}px-{key['num_samples']}-"
            f"{space.name}-{digest}.npz")
    return cache_dir(self.config) / "reference_stats" / name

  def _real_batches(self, num: int):
    """(host batches of `num` real images, their labels): a fixed random subset of the
    reference split, preprocessed like training images but never flipped."""
    config = self.config.copy_and_resolve_references()
    config.dataset.split = config.eval_reference_split
    config.dataset.random_flip = False
    batch_size = config.eval_batch_size
    source = input_pipeline.load_source(config)
    num = min(num, source.num_examples)
    index_batches = input_pipeline.local_index_batches(
        source.num_examples, global_batch=batch_size, seed=REFERENCE_SEED, start_index=0)
    ds = source.examples(index_batches, config).batch(batch_size)
    batches = list(ds.take(math.ceil(num / batch_size)).as_numpy_iterator())
    labels = np.concatenate([b["label"] for b in batches])[:num]
    return (self._global(b["image"]) for b in batches), labels

  def _compute_reference(self, space: FeatureSpace) -> dict:
    logging.info("computing reference statistics of %s in the %s space (once; cached)",
                 self.config.dataset.name, space.name)
    images, labels = self._real_batches(self.config.eval_reference_samples)
    features = self._features(images, len(labels), [space.name])[space.name][0]
    mu, sigma = metrics.gaussian_stats(features)
    return dict(mu=mu, sigma=sigma, features=features, labels=labels,
                key=json.dumps(self._reference_key(space), sort_keys=True))

  def reference(self, space: FeatureSpace) -> Reference:
    """The cached statistics of the real data, computed (by every process together) if missing."""
    if space.name in self._references:
      return self._references[space.name]
    path = self.reference_path(space)
    if not _on_every_process(path.exists()):
      stats = self._compute_reference(space)
      # Every process writes: on pods, each host's ~/.cache is its own disk.
      tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")  # savez appends .npz otherwise
      try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **stats)
        os.replace(tmp, path)
      except OSError as e:
        tmp.unlink(missing_ok=True)
        if disk_full(e):
          raise DiskFull(f"no space left on the device of {path.parent} while caching the "
                         f"reference statistics ({e.strerror}); free space there or set "
                         f"--config.eval_cache_dir to a folder on another disk") from None
        raise UserError(f"cannot write the reference statistics to {path} ({e.strerror}); set "
                        f"--config.eval_cache_dir to a writable folder") from e
    with np.load(path) as stored:
      reference = Reference(stored["mu"], stored["sigma"], stored["features"], stored["labels"],
                            path)
    self._references[space.name] = reference
    return reference

  # Sampling and scoring

  def noise_seed(self) -> int:
    """The seed of every evaluation's z unless one is named: the same samples at every step."""
    return self.config.seed + NOISE_SEED_OFFSET

  def _noise(self, num: int, seed: int):
    """Fixed z and labels cycling through the classes, padded to whole batches."""
    m, batch_size = self.config.model, self.config.eval_batch_size
    labels = np.arange(sharding.round_up(num, batch_size)) % m.num_classes
    z, y, _ = sampling.fixed_noise(labels, m.z_dim, seed, batch_size)
    return z, y

  def _check_num_samples(self, num: int) -> None:
    c = self.config
    need = {"fid": 2, "fid_fmnist": 2, "is": c.eval_is_splits, "intra_fid": 2 * c.model.num_classes,
            "class_accuracy": c.model.num_classes, "prdc": metrics.PRDC_K + 1}
    least = max(need[name] for name in c.eval_metrics)
    if num < least:
      raise UserError(f"{num} samples are too few for {tuple(c.eval_metrics)}: use at least "
                      f"{least} (intra_fid needs 2 per class, is one per split, class_accuracy one "
                      f"per class, prdc k+1={metrics.PRDC_K + 1} for k-NN radii)")

  def _intra_fid(self, features, labels, reference: Reference):
    classes = range(self.config.model.num_classes)
    counts = np.bincount(reference.labels, minlength=len(classes))
    if counts.min() < 2:
      raise UserError(f"the reference set has fewer than 2 images of class(es) "
                      f"{np.flatnonzero(counts < 2)[:10].tolist()}; raise eval_reference_samples")
    return metrics.intra_fid(
        {c: features[labels == c] for c in classes},
        {c: metrics.gaussian_stats(reference.features[reference.labels == c]) for c in classes})

  def _prdc(self, space: str, features, reference: Reference) -> tuple[dict, dict]:
    """(precision/recall/density/coverage, their protocol) against the reference features."""
    k = metrics.PRDC_K
    if len(reference.features) <= k:
      raise UserError(f"prdc needs more than k={k} reference images, the reference holds "
                      f"{len(reference.features)}; raise eval_reference_samples")
    if space not in self._real_sq_radii:
      self._real_sq_radii[space] = metrics.knn_sq_radii(reference.features, k)
    scores = metrics.prdc(reference.features, features, k, real_sq_radii=self._real_sq_radii[space])
    protocol = {"k": k, "num_real": len(reference.features), "num_fake": len(features),
                "space": space, "distance": "euclidean, strict < k-NN radius (Naeem et al. 2020)",
                "coverage_if_identical": round(metrics.expected_coverage_of_identical(
                    len(reference.features), len(features), k), 4)}
    return scores, protocol

  def score(self, fake: dict, labels) -> tuple[dict, dict]:
    """(scalars, per-class lists and protocols) of samples' {space: (features, logits)} and
    their conditioning labels, for every metric of the config."""
    c = self.config
    scalars, details = {}, {}
    for name in c.eval_metrics:
      space = "fmnist_classifier" if name in config_lib.FMNIST_METRICS else "inception"
      features, logits = fake[space]
      reference = self.reference(self.spaces[space])
      if name in ("fid", "fid_fmnist"):
        scalars[name] = metrics.frechet_distance(*metrics.gaussian_stats(features),
                                                 reference.mu, reference.sigma)
      elif name == "is":
        scalars["is"], scalars["is_std"] = metrics.inception_score(logits, c.eval_is_splits)
      elif name == "intra_fid":
        scalars["intra_fid"], by_class = self._intra_fid(features, labels, reference)
        details["intra_fid_per_class"] = [by_class[k] for k in sorted(by_class)]
      elif name == "class_accuracy":
        scalars["class_accuracy"], per_class, confusion = metrics.class_accuracy(
            logits, labels, c.model.num_classes)
        details["class_accuracy_per_class"] = per_class
        details["class_confusion"] = confusion.tolist()  # row: conditioning label; column: predicted
      else:  # prdc
        scores, details["prdc_protocol"] = self._prdc(space, features, reference)
        scalars.update(scores)
    return scalars, details

  def evaluate(self, state, step: int, num_samples: int, noise_seed: int | None = None,
               record: bool = True) -> dict:
    """Scores `num_samples` EMA samples drawn with ``noise_seed`` (None: the run's fixed one);
    appends a line to metrics.jsonl unless ``record`` is False; returns the scalars."""
    self._check_num_samples(num_samples)
    start = time.time()
    c = self.config
    references = {k: self.reference(space) for k, space in self.spaces.items()}
    noise_seed = self.noise_seed() if noise_seed is None else int(noise_seed)
    z, y = self._noise(num_samples, noise_seed)
    batches = (self.sampler(state, self._global(z[i:i + c.eval_batch_size]),
                            self._global(y[i:i + c.eval_batch_size]))
               for i in range(0, len(z), c.eval_batch_size))
    fake = self._features(batches, num_samples, self.spaces)
    scalars, details = self.score(fake, y[:num_samples])
    line = {"step": int(step), "num_samples": num_samples, "noise_seed": noise_seed, **scalars, **details,
            **self._protocol(references), "seconds": round(time.time() - start, 1)}
    logging.info("evaluation at step %d on %d samples: %s", step, num_samples,
                 ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
    if record and jax.process_index() == 0:
      append_line(self.metrics_path, line, step)
    return scalars

  def _protocol(self, references) -> dict:
    """What makes the numbers comparable (DESIGN.md, known pitfalls)."""
    c = self.config
    reference = next(iter(references.values()))
    out = {
        "metrics": list(c.eval_metrics),
        "sampling": {"weights": "ema", "ema_schedule": c.ema_schedule,
                     **({"ema_power_gamma": c.ema_power_gamma} if c.ema_schedule == "power" else
                        {"ema_decay": c.ema_decay, "ema_start_step": c.ema_start_step}),
                     "sample_bn_stats": c.sample_bn_stats,
                     "class_labels": "balanced (cycling through the classes)"},
        "reference": {"dataset": c.dataset.name, "split": c.eval_reference_split,
                      "num_samples": len(reference.labels), "resolution": c.model.resolution,
                      "random_flip": False,
                      "cache_files": [r.path.name for r in references.values()]},
        "feature_spaces": {k: {"id": s.id, **s.info} for k, s in self.spaces.items()},
    }
    if "is" in c.eval_metrics:
      out["is_splits"] = c.eval_is_splits
    return out


def append_line(path: epath.Path, line: dict, step: int) -> None:
  """Appends one JSON line to ``path`` by writing the whole file anew, so that a reader (or a
  kill, or a full disk) never meets half a line: an object store cannot append, and a local
  file is written beside and renamed over. A full disk leaves the file as it was and is one
  DiskFull line saying what to free."""
  try:
    text = path.read_text() if path.exists() else ""
    if text and not text.endswith("\n"):
      text += "\n"  # a half line an older writer left: our line stays whole after it
    text += json.dumps(line) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpointing.write_whole(path, text)
  except Exception as e:  # pylint: disable=broad-except  (gfile raises its own types for URLs)
    full = disk_full(e)
    if full is None:
      raise
    raise DiskFull(
        f"no space left on the device of {path} while recording the evaluation of step {step} "
        f"({' '.join(str(full).split())[:160]}); {path.name} is as it was before; free space "
        f"there (other runs, or lower keep_checkpoints) and rerun the same command (a training "
        f"resumes from its last checkpoint; python -m sagan_jax.evaluate --workdir=… --step=N "
        f"scores a checkpoint again)") from None


def _on_every_process(flag: bool) -> bool:
  """`flag` of all processes ANDed: they must agree on computing the reference (SPMD)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))
