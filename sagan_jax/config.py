"""What a config may say, which of its fields the compiled programs depend on, and the
run's own copy of it (workdir/config.json).

``validate_config`` is the one check of a config: every entry point calls it before
anything is traced, so a bad value ends in one line that names the field.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from sagan_jax import augment, checkpointing, losses
from sagan_jax.errors import UserError
from sagan_jax.models.attention import ATTENTION_BLOCKS, ATTENTION_IMPLS
from sagan_jax.models.discriminator import discriminator_sides
from sagan_jax.models.generator import G_ARCH, generator_sides

SAMPLE_BN_STATS = ("standing", "running", "batch")
EMA_SCHEDULES = ("constant", "power")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
INCEPTION_METRICS = ("fid", "is", "intra_fid")
# In the space of the project's Fashion-MNIST classifier; 'prdc' gives precision, recall,
# density and coverage.
FMNIST_METRICS = ("fid_fmnist", "class_accuracy", "prdc")
METRICS = INCEPTION_METRICS + FMNIST_METRICS

# Fields only the loops (training, evaluation, data) read: the compiled programs do not
# depend on them, so configs that differ only there share one set of programs.
LOOP_FIELDS = ("num_train_steps", "log_every_steps", "sample_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "async_checkpoints", "max_nonfinite_steps", "num_sample_columns",
               "dataset", "inception_weights")
# Model fields that change no parameter shape: a run may resume with other values.
RUNTIME_MODEL_FIELDS = ("attention_impl", "attention_query_chunk")
# Model fields added after runs were written, with the value that reproduces those runs.
ADDED_MODEL_FIELDS = {"attention_block": "self_attention", "attention_query_chunk": 256, "d_ch": None}
# Top-level fields added since, with the values that reproduce runs written before them.
ADDED_FIELDS = {"ema_schedule": "constant", "ema_power_gamma": 6.94, "augment": ()}

RUN_CONFIG = "config.json"


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
          f"(or model.{which}_attention_resolutions)")
  d_ch = m.get("d_ch")
  if d_ch is not None and (isinstance(d_ch, bool) or not isinstance(d_ch, int) or d_ch <= 0):
    raise UserError(f"model.d_ch must be a positive whole number (or unset: D as wide as G, "
                    f"model.ch), got {d_ch!r}")
  if m.attention_impl not in ATTENTION_IMPLS:
    raise UserError(f"model.attention_impl {m.attention_impl!r} is not one of {ATTENTION_IMPLS}")
  if m.attention_impl == "dot_product_attention" and m.key_channel_ratio != m.value_channel_ratio:
    raise UserError(
        f"model.attention_impl 'dot_product_attention' needs equal key and value widths, but "
        f"key_channel_ratio is {m.key_channel_ratio} and value_channel_ratio {m.value_channel_ratio}; "
        f"use attention_impl 'chunked' or 'xla' for the released code's C/2 values")
  if m.attention_query_chunk <= 0:
    raise UserError(f"model.attention_query_chunk must be positive, got {m.attention_query_chunk}")
  if m.attention_block not in ATTENTION_BLOCKS:
    raise UserError(f"model.attention_block {m.attention_block!r} is not one of {ATTENTION_BLOCKS}")


def check_evaluation(config, num_devices: int) -> None:
  """The eval_* fields, for a run that evaluates (periodically or with the evaluate tool)."""
  names = tuple(config.eval_metrics)
  unknown = sorted(set(names) - set(METRICS))
  if not names or unknown:
    raise UserError(f"eval_metrics {names} must be a non-empty tuple of {METRICS}")
  if config.eval_batch_size <= 0 or config.eval_batch_size % num_devices:
    raise UserError(f"eval_batch_size {config.eval_batch_size} must be a positive multiple of the "
                    f"device count {num_devices}")
  m = config.model
  offline = [n for n in names if n in FMNIST_METRICS]
  if offline and (config.dataset.name != "fashion_mnist" or m.resolution != 32
                  or m.image_channels != 1):
    raise UserError(f"eval_metrics {tuple(offline)} are scored by the project's Fashion-MNIST "
                    f"classifier and need 32x32x1 Fashion-MNIST (dataset.name 'fashion_mnist'); "
                    f"use 'fid' for other data")


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
  for name in ("num_train_steps", "batch_size", "d_steps_per_g_step", "log_every_steps",
               "sample_every_steps", "checkpoint_every_steps", "keep_checkpoints",
               "max_nonfinite_steps", "standing_stats_batches", "num_sample_columns",
               "model.num_classes", "model.ch", "model.z_dim", "model.image_channels"):
    if _number(config, name, integer=True) <= 0:
      raise UserError(f"{name} must be positive, got {_number(config, name)}")
  for name in ("ema_start_step", "eval_every_steps"):
    if _number(config, name, integer=True) < 0:
      raise UserError(f"{name} must be 0 or more, got {_number(config, name)}")
  for name in ("optimizer.g_lr", "optimizer.d_lr"):
    if not 0 < _number(config, name) < float("inf"):
      raise UserError(f"{name} must be a positive learning rate, got {_number(config, name)} "
                      f"(the paper: g_lr 1e-4, d_lr 4e-4)")
  for name in ("optimizer.b1", "optimizer.b2"):
    if not 0 <= _number(config, name) < 1:
      raise UserError(f"{name} must lie in [0, 1) (Adam's decay of its moment estimates), got "
                      f"{_number(config, name)} (the paper: b1 0, b2 0.9)")
  if not 0 < _number(config, "optimizer.eps") < float("inf"):
    raise UserError(f"optimizer.eps must be positive (Adam divides by sqrt(v) + eps, and v is 0 "
                    f"for parameters without gradient yet), got {config.optimizer.eps}; e.g. 1e-8")
  if not 0 <= _number(config, "ema_decay") <= 1:
    raise UserError(f"ema_decay must lie in [0, 1], got {config.ema_decay}")
  if config.ema_schedule not in EMA_SCHEDULES:
    raise UserError(f"ema_schedule {config.ema_schedule!r} is not one of {EMA_SCHEDULES}")
  if not 0 <= _number(config, "ema_power_gamma") < float("inf"):
    raise UserError(f"ema_power_gamma must be 0 or more, got {config.ema_power_gamma} (6.94 averages "
                    f"over the last ~10% of training, 16.97 over ~5%)")


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
    raise UserError(f"augment {config.augment!r} must be a tuple of policies among {augment.POLICIES}, "
                    f"e.g. --config.augment=\"('translation', 'cutout')\", or () for none")
  if num_devices is not None:
    if config.batch_size % num_devices:
      raise UserError(f"batch_size {config.batch_size} must be a positive multiple of the device "
                      f"count {num_devices}; set --config.batch_size accordingly")
    if config.eval_every_steps > 0:
      check_evaluation(config, num_devices)


def program_fingerprint(config) -> str:
  """The fields the compiled programs depend on (all but LOOP_FIELDS and eval_*), as JSON."""
  fields = {k: v for k, v in config.to_dict().items()
            if k not in LOOP_FIELDS and not k.startswith("eval_")}
  return json.dumps(fields, sort_keys=True, default=str)


# The run's config.json

def _path(workdir: str, name: str = RUN_CONFIG) -> epath.Path:
  """A file of the workdir through the path layer (local disk, gs://, …)."""
  return epath.Path(workdir) / name


def _read_saved(path: epath.Path) -> dict:
  """The JSON object in a run's config.json, or a UserError saying what to do."""
  try:
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict) or not isinstance(saved.get("model", {}), dict):
      raise ValueError("not a JSON object of config fields")
    return saved
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is not readable as a run's config ({' '.join(str(e).split())}); "
                    f"restore it from a copy of the run, or delete it and rerun the training with "
                    f"the config it was trained with, which records that one") from None


def with_added_fields(saved: dict) -> dict:
  """A saved config (a dict with a 'model' dict) completed with the fields added to the code
  since it was written, at the values that reproduce the run."""
  return {**ADDED_FIELDS, **saved, "model": {**ADDED_MODEL_FIELDS, **saved["model"]}}


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with, completed with the fields added since."""
  path = _path(workdir)
  if not path.exists():
    raise UserError(f"{path} does not exist; pass the --workdir of a training run "
                    f"(python -m sagan_jax.main writes it when a run starts)")
  saved = _read_saved(path)
  if not isinstance(saved.get("model"), dict):
    raise UserError(f"{path} holds no model fields; restore it from a copy of the run or pass "
                    f"--config")
  return ml_collections.ConfigDict(with_added_fields(saved))


def _shape_fields(model_dict: dict) -> dict:
  """The model fields that decide parameter shapes, as they read back from JSON."""
  kept = {k: v for k, v in model_dict.items() if k not in RUNTIME_MODEL_FIELDS}
  return json.loads(json.dumps(kept))  # tuples -> lists


def check_config_compatible(config, workdir: str, resuming: bool, write: bool = True) -> None:
  """On resume, refuses a model that differs from workdir/config.json; then (``write``) records
  the config there when the workdir has none yet."""
  path = _path(workdir)
  if resuming and path.exists():
    saved = _read_saved(path)
    # A field the saved config lacks was added to the code later: it has the value that
    # reproduces the old run, which the config now must match as well.
    saved = _shape_fields(with_added_fields({"model": {}, **saved})["model"])
    model = _shape_fields(config.model.to_dict())
    differing = sorted(k for k in set(saved) & set(model) if saved[k] != model[k])
    if differing:
      fields = ", ".join(f"model.{k} ({saved.get(k)!r} in the workdir, {model.get(k)!r} now)"
                         for k in differing)
      raise UserError(f"{workdir} holds a run of another model: {fields}; use a new --workdir "
                      f"or the workdir's config")
    return
  if write and jax.process_index() == 0:
    write_run_config(config, workdir)


def write_run_config(config, workdir: str) -> None:
  """Atomically: a reader never sees half a file, a crash never leaves one."""
  checkpointing.write_whole(_path(workdir), config.to_json(indent=1))
