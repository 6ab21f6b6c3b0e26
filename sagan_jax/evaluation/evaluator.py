"""Evaluation of a run: sample with the EMA generator, extract features on device, score.

An `Evaluator` is built once per run. Each `evaluate(state, step, num_samples, metric_names)`
draws `num_samples` images in batches sharded over the mesh (fixed noise, labels cycling
through the classes so every class is scored), feeds each batch to the feature spaces the
metrics read (evaluation.spaces), and scores every metric of the registry named
(evaluation.registry) against the real data's reference statistics (evaluation.references).
One JSON line per evaluation goes to `workdir/metrics.jsonl`, holding next to the numbers
what makes them comparable: each metric's protocol, the sampling, the reference, the feature
spaces' weights and the kernels G computed in.

How samples are scored is config.eval (metrics, batch size, reference, caches); when a
training evaluates is config.evals (entries, each with its own schedule and sample count).
"""

import logging
import time
from collections.abc import Callable

import jax
import numpy as np

from sagan_jax import config as config_lib
from sagan_jax import sampling, sharding
from sagan_jax import workdir as workdir_lib
from sagan_jax.data.source import label_values
from sagan_jax.errors import UserError
from sagan_jax.evaluation import references, registry, spaces
from sagan_jax.models.kernels import Kernels

# Offset from config.seed for the evaluation noise: the same z at every evaluation of a run.
NOISE_SEED_OFFSET = 20_180_518


class Evaluator:
  """Scores the EMA generator of a run; see the module docstring."""

  def __init__(
    self, config, mesh, sampler: Callable, workdir: str, kernels: Kernels | None = None, metric_names=None
  ):
    """`sampler(state, z, y) -> images`: a sampling.Sampler (EMA weights; z, y batch-sharded)
    of G computing in ``kernels`` (recorded in every metrics line). ``metric_names``: every
    metric this evaluator may be asked for (default: config.eval.metrics and every
    config.evals entry's); their feature spaces are loaded once, here."""
    names = tuple(metric_names) if metric_names is not None else config_lib.all_metric_names(config)
    config_lib.check_evaluation(config, mesh.size, names)
    self.config, self.sampler, self.workdir, self.kernels = config, sampler, workdir, kernels
    self._batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    self.spaces = {
      name: spaces.build(name, config) for name in dict.fromkeys(registry.get(m).space for m in names)
    }
    self._variables = {k: jax.device_put(s.variables, replicated) for k, s in self.spaces.items()}
    constrain = lambda x: jax.lax.with_sharding_constraint(x, self._batch_sharding)
    # Images come replicated (sampler) or batch-sharded (real data); each device takes its share.
    self._extract = {
      k: jax.jit(lambda v, x, apply=s.apply: apply(v, constrain(x)), out_shardings=replicated)
      for k, s in self.spaces.items()
    }
    self._references = {}
    self._reference_keys = {}  # of references read from a statistics file
    self._caches = {k: {} for k in self.spaces}  # per space: values computed once from its reference

  def _global(self, host_array: np.ndarray) -> jax.Array:
    """A full global batch, identical on every process, as a batch-sharded array."""
    return jax.make_array_from_callback(
      host_array.shape, self._batch_sharding, lambda index: host_array[index]
    )

  def _features(self, batches, num: int, space_names) -> dict:
    """{space: (features, logits)} of the first `num` images of full-size batches."""
    out = {k: ([], []) for k in space_names}
    for images in batches:
      for k in space_names:
        features, logits = self._extract[k](self._variables[k], images)
        out[k][0].append(np.asarray(features))
        out[k][1].append(np.asarray(logits))
    return {k: (np.concatenate(f)[:num], np.concatenate(logit)[:num]) for k, (f, logit) in out.items()}

  def image_features(self, images: np.ndarray) -> dict:
    """{space: (features, logits)} of host images (N, H, W, C) in [-1, 1], extracted by the
    programs that score samples (for reference points of real or altered images)."""
    batch_size, num = self.config.eval.batch_size, len(images)
    pad = sharding.round_up(num, batch_size) - num
    images = np.pad(np.asarray(images, np.float32), ((0, pad),) + ((0, 0),) * 3, constant_values=-1.0)
    batches = (self._global(images[i : i + batch_size]) for i in range(0, len(images), batch_size))
    return self._features(batches, num, self.spaces)

  def reference(self, space_name: str) -> references.Reference:
    """The real data's statistics in a space (cached on disk, computed once if missing)."""
    if space_name not in self._references:
      features_of = lambda batches, num: self._features(
        (self._global(b) for b in batches), num, [space_name]
      )[space_name][0]
      self._references[space_name] = references.load_or_compute(
        self.config, self.spaces[space_name], features_of
      )
    return self._references[space_name]

  def use_reference(self, stored: references.StoredReference) -> None:
    """Scores against a statistics file's reference instead of the config's dataset; refused
    unless it was made in this evaluator's feature space (the same weights)."""
    space = self.spaces[stored.space]
    if stored.key["features"] != space.id:
      raise UserError(
        f"{stored.reference.path} holds statistics of features {stored.key['features']!r}, this "
        f"evaluation extracts {space.id!r}: numbers of two feature extractors do not compare; "
        f"write the statistics again with these weights"
      )
    self._references[stored.space] = stored.reference
    self._reference_keys[stored.space] = stored.key

  def reference_path(self, space_name: str):
    return references.path(self.config, self.spaces[space_name])

  # Sampling and scoring

  def noise_seed(self) -> int:
    """The seed of every evaluation's z unless one is named: the same samples at every step."""
    return self.config.seed + NOISE_SEED_OFFSET

  def _noise(self, num: int, seed: int):
    """Fixed z and labels cycling through the classes, padded to whole batches."""
    m, batch_size = self.config.model, self.config.eval.batch_size
    labels = np.arange(sharding.round_up(num, batch_size)) % label_values(m.num_classes)
    z, y, _ = sampling.fixed_noise(labels, m.z_dim, seed, batch_size)
    return z, y

  def _context(self, space_name: str) -> registry.Context:
    c = self.config
    return registry.Context(
      c.model.num_classes,
      c.eval.is_splits,
      self._caches[space_name],
      c.eval.kid_subsets,
      c.eval.kid_subset_size,
      c.eval.prdc_k,
    )

  def check_num_samples(self, num: int, metric_names) -> None:
    need = {
      name: registry.get(name).min_samples(self._context(registry.get(name).space)) for name in metric_names
    }
    least = max(need.values())
    if num < least:
      raise UserError(
        f"{num} samples are too few for {tuple(metric_names)}: use at least "
        f"{least} ({', '.join(f'{k} {v}' for k, v in need.items())})"
      )

  def score(self, fake: dict, labels, metric_names) -> tuple[dict, dict]:
    """(scalars, per-class lists and protocols) of samples' {space: (features, logits)} and
    their conditioning labels, for each metric named."""
    scalars, details = {}, {}
    for name in metric_names:
      metric = registry.get(name)
      features, logits = fake[metric.space]
      more_scalars, more_details = metric.score(
        registry.Samples(features, logits, np.asarray(labels)),
        self.reference(metric.space),
        self._context(metric.space),
      )
      scalars.update(more_scalars)
      details.update(more_details)
    return scalars, details

  def evaluate(
    self,
    state,
    step: int,
    num_samples: int,
    metric_names=None,
    noise_seed: int | None = None,
    record: bool = True,
    name: str = "",
  ) -> dict:
    """Scores `num_samples` EMA samples drawn with ``noise_seed`` (None: the run's fixed one)
    on ``metric_names`` (default config.eval.metrics); appends a line (naming the config.evals
    entry ``name``, if any) to metrics.jsonl unless ``record`` is False; returns the scalars."""
    c = self.config
    metric_names = tuple(metric_names or c.eval.metrics)
    self.check_num_samples(num_samples, metric_names)
    start = time.time()
    used = list(dict.fromkeys(registry.get(m).space for m in metric_names))
    for space_name in used:
      self.reference(space_name)
    noise_seed = self.noise_seed() if noise_seed is None else int(noise_seed)
    z, y = self._noise(num_samples, noise_seed)
    batch_size = c.eval.batch_size
    batches = (
      self.sampler(state, self._global(z[i : i + batch_size]), self._global(y[i : i + batch_size]))
      for i in range(0, len(z), batch_size)
    )
    fake = self._features(batches, num_samples, used)
    scalars, details = self.score(fake, y[:num_samples], metric_names)
    line = {
      "step": int(step),
      "num_samples": num_samples,
      "noise_seed": noise_seed,
      **({"evaluation": name} if name else {}),
      **scalars,
      **details,
      **self._protocol(metric_names, used),
      "seconds": round(time.time() - start, 1),
    }
    logging.info(
      "evaluation at step %d on %d samples: %s",
      step,
      num_samples,
      ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()),
    )
    if record and jax.process_index() == 0:
      workdir_lib.append_metrics_line(self.workdir, line, step)
    return scalars

  def data_protocol(self, metric_names, used_spaces) -> dict:
    """What makes numbers of these metrics comparable: their protocols, the reference and the
    feature spaces."""
    c = self.config
    first = self._references[used_spaces[0]]
    reference = {
      "dataset": c.dataset.name,
      "split": c.eval.reference_split,
      "num_samples": len(first.labels),
      "resolution": c.model.resolution,
      "random_flip": False,
      "cache_files": [self._references[s].path.name for s in used_spaces],
    }
    stored = self._reference_keys.get(used_spaces[0])
    if stored:  # a statistics file: its own key says what it holds
      reference = {**stored, "num_samples": len(first.labels), "file": str(first.path)}
    return {
      "metrics": list(metric_names),
      "protocols": {m: registry.get(m).protocol for m in metric_names},
      "reference": reference,
      "feature_spaces": {k: {"id": self.spaces[k].id, **self.spaces[k].info} for k in used_spaces},
    }

  def _protocol(self, metric_names, used_spaces) -> dict:
    """What makes the numbers comparable (DESIGN.md, known pitfalls)."""
    c = self.config
    data = self.data_protocol(metric_names, used_spaces)
    return {
      "metrics": data["metrics"],
      "protocols": data["protocols"],
      "sampling": {
        "weights": "ema",
        "ema_schedule": c.ema_schedule,
        **(
          {"ema_power_gamma": c.ema_power_gamma}
          if c.ema_schedule == "power"
          else {"ema_decay": c.ema_decay, "ema_start_step": c.ema_start_step}
        ),
        "sample_bn_stats": c.sample_bn_stats,
        "class_labels": "balanced (cycling through the classes)",
      },
      "reference": data["reference"],
      "feature_spaces": data["feature_spaces"],
      "kernels": self.kernels.choices() if self.kernels else None,
    }
