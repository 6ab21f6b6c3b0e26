"""What a config may say, which of its fields the compiled programs depend on, and how a
run's saved copy of it (workdir/config.json) reads back. No I/O: sagan_jax.run reads and
writes the file.

``validate_config`` is the one check of a config: every entry point calls it before
anything is traced, so a bad value ends in one line that names the field.
"""

import json

import jax.numpy as jnp
import ml_collections

from sagan_jax import augment, losses
from sagan_jax import kernels as kernels_lib
from sagan_jax.errors import UserError
from sagan_jax.evaluation import registry
from sagan_jax.models.attention import ATTENTION_BLOCKS, ATTENTION_IMPLS
from sagan_jax.models.discriminator import discriminator_sides
from sagan_jax.models.generator import G_ARCH, generator_sides

SAMPLE_BN_STATS = ("standing", "running", "batch")
EMA_SCHEDULES = ("constant", "power")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Fields only the loops (training, evaluation, data) read: the compiled programs do not
# depend on them, so configs that differ only there share one set of programs.
LOOP_FIELDS = (
  "num_train_steps",
  "log_every_steps",
  "sample_every_steps",
  "checkpoint_every_steps",
  "keep_checkpoints",
  "async_checkpoints",
  "max_nonfinite_steps",
  "num_sample_columns",
  "dataset",
  "eval",
  "evals",
  "profile_steps",
  "cpu_devices",
)
# Fields that moved, by their old flat name: runs saved before, and --config.<old name>=…
# on a command line, are read at the new place.
RENAMED_FIELDS = {
  "eval_every_steps": "evals.periodic.every_steps",
  "eval_num_samples": "evals.periodic.num_samples",
  "eval_metrics": "eval.metrics",
  "eval_final_num_samples": "eval.num_samples",
  "eval_batch_size": "eval.batch_size",
  "eval_reference_split": "eval.reference_split",
  "eval_reference_samples": "eval.reference_samples",
  "eval_is_splits": "eval.is_splits",
  "eval_cache_dir": "eval.cache_dir",
  "inception_weights": "eval.inception_weights",
  "eval_fmnist_classifier_epochs": "eval.fmnist_classifier_epochs",
  "eval_fmnist_classifier_num_train": "eval.fmnist_classifier_num_train",
}
# Model fields that change no parameter shape: a run may resume with other values.
RUNTIME_MODEL_FIELDS = ("attention_impl", "attention_query_chunk", "kernels")
# Model fields added after runs were written, with the value that reproduces those runs
# ('auto' kernels: the formulations the code picked by itself before they were fields).
ADDED_MODEL_FIELDS = {
  "attention_block": "self_attention",
  "attention_query_chunk": 256,
  "d_ch": None,
  "bn_eps": 1e-5,
  "d_shortcut_preactivated": False,
  "kernels": {field: kernels_lib.AUTO for field in kernels_lib.FIELDS},
}
# Top-level fields added since, with the values that reproduce runs written before them.
ADDED_FIELDS = {
  "ema_schedule": "constant",
  "ema_power_gamma": 6.94,
  "augment": (),
  "profile_steps": 0,
  "cpu_devices": 0,
}


def attention_sides(model_config, which: str) -> tuple:
  """Feature sides with attention in the generator ('g') or the discriminator ('d')."""
  override = model_config.get(f"{which}_attention_resolutions")
  return tuple(model_config.attention_resolutions if override is None else override)


def d_width(model_config) -> int:
  """The discriminator's width unit: model.d_ch, or model.ch when that is unset."""
  d_ch = model_config.get("d_ch")
  return model_config.ch if d_ch is None else d_ch


def _check_model(m) -> None:
  if m.resolution not in G_ARCH:
    raise UserError(f"model.resolution {m.resolution} is not supported; use one of {sorted(G_ARCH)}")
  for which, sides in (("g", generator_sides(m.resolution)), ("d", discriminator_sides(m.resolution))):
    bad = sorted(set(attention_sides(m, which)) - set(sides))
    if bad:
      net = "generator" if which == "g" else "discriminator"
      raise UserError(
        f"attention side(s) {bad} do not exist in the {m.resolution}×{m.resolution} {net}, whose "
        f"feature sides are {sides}; fix model.attention_resolutions "
        f"(or model.{which}_attention_resolutions)"
      )
  d_ch = m.get("d_ch")
  if d_ch is not None and (isinstance(d_ch, bool) or not isinstance(d_ch, int) or d_ch <= 0):
    raise UserError(
      f"model.d_ch must be a positive whole number (or unset: D as wide as G, model.ch), got {d_ch!r}"
    )
  if m.attention_impl not in ATTENTION_IMPLS:
    raise UserError(f"model.attention_impl {m.attention_impl!r} is not one of {ATTENTION_IMPLS}")
  if m.attention_impl == "dot_product_attention" and m.key_channel_ratio != m.value_channel_ratio:
    raise UserError(
      f"model.attention_impl 'dot_product_attention' needs equal key and value widths, but "
      f"key_channel_ratio is {m.key_channel_ratio} and value_channel_ratio {m.value_channel_ratio}; "
      f"use attention_impl 'chunked' or 'xla' for the released code's C/2 values"
    )
  if m.attention_query_chunk <= 0:
    raise UserError(f"model.attention_query_chunk must be positive, got {m.attention_query_chunk}")
  if m.attention_block not in ATTENTION_BLOCKS:
    raise UserError(f"model.attention_block {m.attention_block!r} is not one of {ATTENTION_BLOCKS}")
  wrong = kernels_lib.validate(m.kernels)
  if wrong:
    raise UserError(wrong)


def evaluations(config) -> dict:
  """{name: (every_steps, num_samples, metric names)} of the config.evals entries a training runs."""
  return {
    name: (entry.every_steps, entry.num_samples, tuple(entry.metrics or config.eval.metrics))
    for name, entry in config.evals.items()
    if entry.every_steps > 0
  }


def all_metric_names(config) -> tuple:
  """config.eval.metrics and the metrics of every config.evals entry, each once."""
  names = list(config.eval.metrics)
  for entry in config.evals.values():
    names += list(entry.metrics)
  return tuple(dict.fromkeys(names))


def check_evaluation(config, num_devices: int, metric_names=None) -> None:
  """config.eval (and the metrics named, default all_metric_names) for a run that evaluates,
  periodically or with the evaluate tool."""
  names = tuple(all_metric_names(config) if metric_names is None else metric_names)
  unknown = sorted(set(names) - set(registry.names()))
  if not names or unknown:
    raise UserError(
      f"metrics {names} must be a non-empty tuple of {registry.names()} "
      f"(config.eval.metrics, config.evals.<name>.metrics)"
    )
  if config.eval.batch_size <= 0 or config.eval.batch_size % num_devices:
    raise UserError(
      f"eval.batch_size {config.eval.batch_size} must be a positive multiple of the "
      f"device count {num_devices}"
    )
  m = config.model
  offline = [n for n in names if registry.get(n).space == registry.FMNIST_CLASSIFIER]
  if offline and (config.dataset.name != "fashion_mnist" or m.resolution != 32 or m.image_channels != 1):
    raise UserError(
      f"metrics {tuple(offline)} are scored by the project's Fashion-MNIST "
      f"classifier and need 32x32x1 Fashion-MNIST (dataset.name 'fashion_mnist'); "
      f"use 'fid' for other data"
    )


MAX_SEED = 2**32  # numpy's and JAX's seeds alike take it


def _number(config, name: str, integer: bool = False):
  """config's dotted field ``name``, refused unless a (whole) number."""
  value = config
  for part in name.split("."):
    value = value[part]
  kinds = (int,) if integer else (int, float)
  if isinstance(value, bool) or not isinstance(value, kinds):
    raise UserError(f"{name} must be {'a whole number' if integer else 'a number'}, got {value!r}")
  return value


def _check_numbers(config) -> None:
  """Counts, rates and coefficients in the ranges where training means something."""
  for name in (
    "num_train_steps",
    "batch_size",
    "d_steps_per_g_step",
    "log_every_steps",
    "sample_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "max_nonfinite_steps",
    "standing_stats_batches",
    "num_sample_columns",
    "model.num_classes",
    "model.ch",
    "model.z_dim",
    "model.image_channels",
    "model.key_channel_ratio",
    "model.value_channel_ratio",
    "model.attention_query_chunk",
    "eval.num_samples",
    "eval.batch_size",
    "eval.reference_samples",
    "eval.is_splits",
    "eval.fmnist_classifier_epochs",
  ):
    if _number(config, name, integer=True) <= 0:
      raise UserError(f"{name} must be positive, got {_number(config, name)}")
  for name, entry in config.evals.items():
    for field, least in (("every_steps", 0), ("num_samples", 1)):
      if _number(config, f"evals.{name}.{field}", integer=True) < least:
        raise UserError(f"evals.{name}.{field} must be {least} or more, got {entry[field]}")
  for name in ("ema_start_step", "profile_steps", "cpu_devices", "eval.fmnist_classifier_num_train"):
    if _number(config, name, integer=True) < 0:
      raise UserError(f"{name} must be 0 or more, got {_number(config, name)}")
  if not 0 <= _number(config, "seed", integer=True) < MAX_SEED:
    raise UserError(f"seed must lie in [0, 2**32), got {config.seed}")
  if config.model.image_channels not in (1, 3):
    raise UserError(
      f"model.image_channels must be 1 (grayscale) or 3 (RGB), got {config.model.image_channels}"
    )
  if config.dataset.name == "fashion_mnist" and config.model.image_channels != 1:
    raise UserError(
      f"model.image_channels must be 1 for Fashion-MNIST (grayscale), got {config.model.image_channels}"
    )
  if not 0 < _number(config, "model.bn_eps") < float("inf"):
    raise UserError(f"model.bn_eps must be positive (1e-5: PyTorch's default), got {config.model.bn_eps}")
  for name in ("optimizer.g_lr", "optimizer.d_lr"):
    if not 0 < _number(config, name) < float("inf"):
      raise UserError(
        f"{name} must be a positive learning rate, got {_number(config, name)} "
        f"(the paper: g_lr 1e-4, d_lr 4e-4)"
      )
  for name in ("optimizer.b1", "optimizer.b2"):
    if not 0 <= _number(config, name) < 1:
      raise UserError(
        f"{name} must lie in [0, 1) (Adam's decay of its moment estimates), got "
        f"{_number(config, name)} (the paper: b1 0, b2 0.9)"
      )
  if not 0 < _number(config, "optimizer.eps") < float("inf"):
    raise UserError(
      f"optimizer.eps must be positive (Adam divides by sqrt(v) + eps, and v is 0 "
      f"for parameters without gradient yet), got {config.optimizer.eps}; e.g. 1e-8"
    )
  if not 0 <= _number(config, "ema_decay") <= 1:
    raise UserError(f"ema_decay must lie in [0, 1], got {config.ema_decay}")
  if config.ema_schedule not in EMA_SCHEDULES:
    raise UserError(f"ema_schedule {config.ema_schedule!r} is not one of {EMA_SCHEDULES}")
  if not 0 <= _number(config, "ema_power_gamma") < float("inf"):
    raise UserError(
      f"ema_power_gamma must be 0 or more, got {config.ema_power_gamma} (6.94 averages "
      f"over the last ~10% of training, 16.97 over ~5%)"
    )


def validate_config(config, num_devices: int | None = None) -> None:
  """Raises UserError, naming the field, for a config that cannot train on ``num_devices``
  devices (None: the batch size is not checked against a device count)."""
  _check_model(config.model)
  _check_numbers(config)
  if config.sample_bn_stats not in SAMPLE_BN_STATS:
    raise UserError(f"sample_bn_stats {config.sample_bn_stats!r} is not one of {SAMPLE_BN_STATS}")
  if config.dtype not in DTYPES:
    raise UserError(f"dtype {config.dtype!r} is not one of {sorted(DTYPES)}")
  if config.loss not in losses.LOSSES:
    raise UserError(f"loss {config.loss!r} is not one of {sorted(losses.LOSSES)}")
  if isinstance(config.augment, str) or any(p not in augment.POLICIES for p in config.augment):
    raise UserError(
      f"augment {config.augment!r} must be a tuple of policies among {augment.POLICIES}, "
      f"e.g. --config.augment=\"('translation', 'cutout')\", or () for none"
    )
  if num_devices is not None:
    if config.batch_size % num_devices:
      raise UserError(
        f"batch_size {config.batch_size} must be a positive multiple of the device "
        f"count {num_devices}; set --config.batch_size accordingly"
      )
    if evaluations(config):
      check_evaluation(config, num_devices)


def program_fingerprint(config) -> str:
  """The fields the compiled programs depend on, as JSON: all but LOOP_FIELDS, the seed (the
  programs take the key as an argument) and model.kernels (they depend on its resolved values,
  which the programs' cache keys hold instead)."""
  fields = {k: v for k, v in config.to_dict().items() if k not in LOOP_FIELDS and k != "seed"}
  fields["model"] = {k: v for k, v in fields["model"].items() if k != "kernels"}
  return json.dumps(fields, sort_keys=True, default=str)


# A run's saved config (config.json; sagan_jax.run reads and writes it)

RESOLVED_KERNELS = "resolved_kernels"  # config.json's record of model.kernels as resolved


def with_added_fields(saved: dict) -> dict:
  """A saved config (a dict with a 'model' dict) completed with the fields added to the code
  since it was written, at the values that reproduce the run."""
  return {**ADDED_FIELDS, **saved, "model": {**ADDED_MODEL_FIELDS, **saved["model"]}}


def renamed(saved: dict) -> dict:
  """A saved config with its fields of RENAMED_FIELDS at their new places."""
  saved = json.loads(json.dumps(saved))
  for old, new in RENAMED_FIELDS.items():
    if old in saved:
      value = saved.pop(old)
      *parents, name = new.split(".")
      node = saved
      for parent in parents:
        node = node.setdefault(parent, {})
      node[name] = value
  if "evals" in saved:
    saved["evals"].setdefault("periodic", {}).setdefault("metrics", ())
  return saved


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The config of a saved config.json's object, completed with the fields added since."""
  saved = {k: v for k, v in renamed(saved).items() if k != RESOLVED_KERNELS}
  config = with_added_fields(saved)
  config["eval"]["metrics"] = tuple(config["eval"]["metrics"])
  for entry in config.get("evals", {}).values():
    entry["metrics"] = tuple(entry.get("metrics", ()))
  return ml_collections.ConfigDict(config)


def _shape_fields(model_dict: dict) -> dict:
  """The model fields that decide parameter shapes, as they read back from JSON."""
  kept = {k: v for k, v in model_dict.items() if k not in RUNTIME_MODEL_FIELDS}
  return json.loads(json.dumps(kept))  # tuples -> lists


def differing_model_fields(saved: dict, config) -> str | None:
  """The model fields that decide parameter shapes and differ between a saved config's object
  and ``config``, as one phrase; None when there are none."""
  # A field the saved config lacks was added to the code later: it has the value that
  # reproduces the old run, which the config now must match as well.
  saved = _shape_fields(with_added_fields({"model": {}, **saved})["model"])
  model = _shape_fields(config.model.to_dict())
  differing = sorted(k for k in set(saved) & set(model) if saved[k] != model[k])
  if not differing:
    return None
  return ", ".join(f"model.{k} ({saved.get(k)!r} in the workdir, {model.get(k)!r} now)" for k in differing)


def to_json(config, resolved_kernels: dict | None = None) -> str:
  """config.json's text: the config, and what its 'auto' kernels resolved to."""
  saved = json.loads(config.to_json())
  if resolved_kernels is not None:
    saved[RESOLVED_KERNELS] = resolved_kernels
  return json.dumps(saved, indent=1)
