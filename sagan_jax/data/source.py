"""What a data source is: a checked number of examples and a function that turns this
process's index batches (sagan_jax.data.order) into a stream of single examples
{'image' float32 (H, W, C) in [-1, 1], 'label' int32}. One module per kind of source
(fashion_mnist, folder, tfds_source) builds them; sagan_jax.data.pipeline picks by
``config.dataset.name``."""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sagan_jax.errors import UserError


class Source(NamedTuple):
  description: str  # for messages, e.g. "TFDS imagenet2012/5.1.0 split 'train'"
  num_examples: int
  examples: Callable  # (local index batches, config) -> dataset of {'image', 'label'[, skip info]}
  class_names: tuple = ()  # an image folder's classes (its label map)


def label_values(num_classes: int) -> int:
  """How many label values the data and the samplers use: the classes, or 1 for an
  unconditional model (model.num_classes 0: every label is 0, and the models ignore it)."""
  return max(num_classes, 1)


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
  """A wrong folder or label offset silently collapses a conditional GAN: refuse it. An
  unconditional model (num_classes 0) reads no label."""
  if num_classes == 0:
    return
  lo, hi = int(labels.min()), int(labels.max())
  if lo < 0 or hi >= num_classes:
    raise UserError(
      f"{source} has labels in [{lo}, {hi}] but model.num_classes is "
      f"{num_classes}; labels must lie in [0, num_classes)"
    )
  present = np.unique(labels).size
  if present < num_classes:
    raise UserError(
      f"{source} has {present} classes but model.num_classes is {num_classes}; "
      f"set --config.model.num_classes={present} or fix the data"
    )
