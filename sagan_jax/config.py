"""What a config may say, which of its fields the compiled programs depend on, and how a
run's saved copy of it (workdir/config.json) reads back. No I/O: sagan_jax.run reads and
writes the file.

``validate_config`` is the one check of a config: every entry point calls it before
anything is traced, so a bad value ends in one line that names the field.
"""

import dataclasses
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
  "best_metric",
  "best_mode",
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
# model.kernels fields added since, likewise (a saved run's 'auto' resolved to these then).
ADDED_KERNEL_FIELDS = {"parameter_update": "per_array"}
# Fields of the dataset and eval sections added since, likewise.
ADDED_SECTION_FIELDS = {
  "dataset": {"min_decodable_fraction": 0.5},
  "eval": {"kid_subsets": 100, "kid_subset_size": 1000, "prdc_k": 5},
}
# Top-level fields added since, with the values that reproduce runs written before them.
ADDED_FIELDS = {
  "ema_schedule": "constant",
  "ema_power_gamma": 6.94,
  "augment": (),
  "profile_steps": 0,
  "cpu_devices": 0,
  "best_metric": "",
  "best_mode": "min",
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
  """What the model's fields say together (each alone: RULES)."""
  for which, sides in (("g", generator_sides(m.resolution)), ("d", discriminator_sides(m.resolution))):
    chosen = attention_sides(m, which)
    if isinstance(chosen, str) or not all(isinstance(side, int) for side in chosen):
      raise UserError(
        f"model.{which}_attention_resolutions / attention_resolutions must be a tuple of sides, "
        f"got {chosen!r}"
      )
    bad = sorted(set(chosen) - set(sides))
    if bad:
      net = "generator" if which == "g" else "discriminator"
      raise UserError(
        f"attention side(s) {bad} do not exist in the {m.resolution}×{m.resolution} {net}, whose "
        f"feature sides are {sides}; fix model.attention_resolutions "
        f"(or model.{which}_attention_resolutions)"
      )
  if m.attention_impl == "dot_product_attention" and m.key_channel_ratio != m.value_channel_ratio:
    raise UserError(
      f"model.attention_impl 'dot_product_attention' needs equal key and value widths, but "
      f"key_channel_ratio is {m.key_channel_ratio} and value_channel_ratio {m.value_channel_ratio}; "
      f"use attention_impl 'chunked' or 'xla' for the released code's C/2 values"
    )
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
INF = float("inf")


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one config field may hold: a whole number, a number, a flag, one of some choices or
  text; numbers within [least, below) (``open_low``: above ``least``, not at it)."""

  kind: str  # 'whole', 'number', 'flag', 'choice' or 'text'
  least: float = -INF
  below: float = INF
  open_low: bool = False
  choices: tuple = ()
  optional: bool = False  # None (unset) allowed
  hint: str = ""  # what a sensible value is, after the message

  def accepts(self, value) -> bool:
    if value is None:
      return self.optional
    if self.kind == "flag":
      return isinstance(value, bool)
    if self.kind == "text":
      return isinstance(value, str)
    if self.kind == "choice":
      return not isinstance(value, bool) and value in self.choices
    kinds = (int,) if self.kind == "whole" else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
      return False
    low_ok = value > self.least if self.open_low else value >= self.least
    return low_ok and value < self.below  # NaN fails both

  def describe(self) -> str:
    if self.kind == "flag":
      return "True or False"
    if self.kind == "text":
      return "text"
    if self.kind == "choice":
      return f"one of {self.choices}"
    what = "a whole number" if self.kind == "whole" else "a number"
    if self.below == INF:
      bound = f" above {self.least:g}" if self.open_low else f" of {self.least:g} or more"
      if self.least == -INF:
        bound = ""
    else:
      bound = f" in {'(' if self.open_low else '['}{self.least:g}, {self.below:g})"
    return what + bound + (" (or unset)" if self.optional else "")

  def bad_values(self) -> list:
    """Values outside the rule (tests walk every field with them)."""
    wrong_type = {"flag": "yes", "text": 3}.get(self.kind, "12")
    if self.kind in ("flag", "text"):
      return [wrong_type]
    if self.kind == "choice":
      return [wrong_type, "no such choice"]
    bad = [wrong_type, float("nan")]
    if self.least > -INF:
      bad.append(self.least if self.open_low else self.least - 1)
    if self.below < INF:
      bad.append(self.below)
    if self.kind == "whole":
      bad.append(self.least + 1.5 if self.least > -INF else 1.5)
    return bad


def _whole(least=1, below=INF, **kw) -> Rule:
  return Rule("whole", least, below, **kw)


def _positive(hint="") -> Rule:
  return Rule("number", 0, INF, open_low=True, hint=hint)


def _fraction(below=1.0, hint="") -> Rule:
  return Rule("number", 0, below, hint=hint)


def _choice(*choices) -> Rule:
  return Rule("choice", choices=tuple(choices))


FLAG, TEXT = Rule("flag"), Rule("text")
_LR_HINT = " (the paper: g_lr 1e-4, d_lr 4e-4)"
_ADAM_HINT = " (Adam's decay of its moment estimates; the paper: b1 0, b2 0.9)"
# Every scalar field of a config and what it may hold; validate_config checks them all, and the
# tests walk each with values outside its rule. Fields with structure (tuples of sides, policies
# or metrics, model.kernels, the config.evals entries) have their own checks below.
RULES = {
  "seed": _whole(0, MAX_SEED),
  "num_train_steps": _whole(),
  "batch_size": _whole(),
  "d_steps_per_g_step": _whole(),
  "log_every_steps": _whole(),
  "sample_every_steps": _whole(),
  "checkpoint_every_steps": _whole(),
  "keep_checkpoints": _whole(),
  "async_checkpoints": FLAG,
  "best_metric": TEXT,
  "best_mode": _choice("min", "max"),
  "max_nonfinite_steps": _whole(),
  "standing_stats_batches": _whole(),
  "num_sample_columns": _whole(),
  "profile_steps": _whole(0),
  "cpu_devices": _whole(0),
  "sample_bn_stats": _choice(*SAMPLE_BN_STATS),
  "dtype": _choice(*sorted(DTYPES)),
  "loss": _choice(*sorted(losses.LOSSES)),
  "ema_decay": Rule("number", 0, 1.0 + 1e-12, hint=" (0.999 or 0.9999 are usual)"),
  "ema_start_step": _whole(0),
  "ema_schedule": _choice(*EMA_SCHEDULES),
  "ema_power_gamma": Rule(
    "number", 0, INF, hint=" (6.94 averages over the last ~10% of training, 16.97 over ~5%)"
  ),
  "optimizer.g_lr": _positive(_LR_HINT),
  "optimizer.d_lr": _positive(_LR_HINT),
  "optimizer.b1": _fraction(hint=_ADAM_HINT),
  "optimizer.b2": _fraction(hint=_ADAM_HINT),
  "optimizer.eps": _positive(
    " (Adam divides by sqrt(v) + eps, and v is 0 for parameters without gradient yet); e.g. 1e-8"
  ),
  "dataset.name": TEXT,
  "dataset.data_dir": TEXT,
  "dataset.version": TEXT,
  "dataset.manual_dir": TEXT,
  "dataset.split": TEXT,
  "dataset.random_flip": FLAG,
  "dataset.min_decodable_fraction": Rule("number", 0, 1.0 + 1e-12),
  "model.resolution": _choice(*sorted(G_ARCH)),
  "model.image_channels": _choice(1, 3),
  "model.num_classes": _whole(0, hint=" (0: unconditional, no labels)"),
  "model.ch": _whole(),
  "model.d_ch": _whole(optional=True, hint=" (unset: D as wide as G, model.ch)"),
  "model.z_dim": _whole(),
  "model.key_channel_ratio": _whole(),
  "model.value_channel_ratio": _whole(),
  "model.attention_impl": _choice(*ATTENTION_IMPLS),
  "model.attention_query_chunk": _whole(),
  "model.attention_block": _choice(*ATTENTION_BLOCKS),
  "model.pool_kv": FLAG,
  "model.g_spectral_norm": FLAG,
  "model.d_spectral_norm": FLAG,
  "model.sn_cbn_gains": FLAG,
  "model.bn_eps": _positive(" (1e-5: PyTorch's default)"),
  "model.d_shortcut_preactivated": FLAG,
  "eval.num_samples": _whole(),
  "eval.batch_size": _whole(),
  "eval.reference_split": TEXT,
  "eval.reference_samples": _whole(),
  "eval.is_splits": _whole(),
  "eval.kid_subsets": _whole(),
  "eval.kid_subset_size": _whole(2),
  "eval.prdc_k": _whole(),
  "eval.cache_dir": TEXT,
  "eval.inception_weights": TEXT,
  "eval.fmnist_classifier_epochs": _whole(),
  "eval.fmnist_classifier_num_train": _whole(0),
}
# Each config.evals.<name> entry's numbers (its metrics are checked with the others).
EVALS_RULES = {"every_steps": _whole(0), "num_samples": _whole()}
# Fields with structure, checked by their own code: tuples, and model.kernels.<choice>.
STRUCTURED_FIELDS = (
  "augment",
  "model.attention_resolutions",
  "model.g_attention_resolutions",
  "model.d_attention_resolutions",
  "model.kernels",
  "eval.metrics",
  "evals",
)


def field_value(config, name: str):
  """config's dotted field ``name``."""
  value = config
  for part in name.split("."):
    value = value[part]
  return value


def check_rule(name: str, rule: Rule, value) -> None:
  if not rule.accepts(value):
    raise UserError(f"{name} must be {rule.describe()}, got {value!r}{rule.hint}")


def _check_rules(config) -> None:
  for name, rule in RULES.items():
    check_rule(name, rule, field_value(config, name))
  for entry_name, entry in config.evals.items():
    for field, rule in EVALS_RULES.items():
      check_rule(f"evals.{entry_name}.{field}", rule, entry[field])
  if config.dataset.name == "fashion_mnist" and config.model.image_channels != 1:
    raise UserError(
      f"model.image_channels must be 1 for Fashion-MNIST (grayscale), got {config.model.image_channels}"
    )
  unknown = sorted(set(all_metric_names(config)) - set(registry.names()))
  if isinstance(config.eval.metrics, str) or unknown:
    raise UserError(
      f"metrics {unknown or config.eval.metrics!r} are not among {registry.names()} "
      f"(config.eval.metrics, config.evals.<name>.metrics)"
    )
  by_class = [n for n in all_metric_names(config) if registry.get(n).needs_labels]
  if config.model.num_classes == 0 and by_class:
    raise UserError(
      f"metrics {by_class} score classes, which an unconditional model (model.num_classes 0) has not; "
      f"drop them from config.eval.metrics / config.evals.<name>.metrics"
    )
  if config.best_metric:
    produced = {
      scalar
      for _, _, names in evaluations(config).values()
      for n in names
      for scalar in registry.get(n).scalars
    }
    if config.best_metric not in produced:
      raise UserError(
        f"best_metric {config.best_metric!r} is not a number the periodic evaluations write "
        f"({sorted(produced) or 'none: set evals.periodic.every_steps'}); name one of them or '' for none"
      )
  if isinstance(config.augment, str) or any(p not in augment.POLICIES for p in config.augment):
    raise UserError(
      f"augment {config.augment!r} must be a tuple of policies among {augment.POLICIES}, "
      f"e.g. --config.augment=\"('translation', 'cutout')\", or () for none"
    )


def validate_config(config, num_devices: int | None = None) -> None:
  """Raises UserError, naming the field, for a config that cannot train on ``num_devices``
  devices (None: the batch size is not checked against a device count)."""
  _check_rules(config)
  _check_model(config.model)
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
  completed = {**ADDED_FIELDS, **saved, "model": {**ADDED_MODEL_FIELDS, **saved["model"]}}
  if "kernels" in saved["model"]:
    completed["model"]["kernels"] = {**ADDED_KERNEL_FIELDS, **saved["model"]["kernels"]}
  for section, added in ADDED_SECTION_FIELDS.items():
    if section in saved:
      completed[section] = {**added, **saved[section]}
  return completed


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
