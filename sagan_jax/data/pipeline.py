"""The training input: the source ``config.dataset.name`` names (checked against the model),
then endless host-local batches of it from any example index on.

Sources (one module each): 'fashion_mnist' (the IDX files, in memory), 'folder' (an image
folder), any other name a TFDS dataset. Every one yields a deterministic, resumable stream
(sagan_jax.data.order); a training checks its source once at start-up, before it writes or
compiles anything, and hands the checked source to its loop.
"""

import logging
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from sagan_jax.data import fashion_mnist, folder, order, tfds_source
from sagan_jax.data.source import Source
from sagan_jax.errors import UserError


def load_source(
  config, *, process_index: int = 0, process_count: int = 1, workdir: str | None = None, write: bool = True
) -> Source:
  """The source ``config.dataset`` names, checked against the model (labels, classes,
  decodable files). ``workdir`` receives (write, on process 0) or is checked against
  (write=False) an image folder's label map."""
  dataset, model = config.dataset, config.model
  if dataset.name == "fashion_mnist":
    return fashion_mnist.source(config)
  if model.image_channels not in (1, 3):
    raise UserError(
      f"model.image_channels is {model.image_channels}; image files decode to 1 or 3 "
      f"channels, so set it to 1 or 3"
    )
  if dataset.name == "folder":
    return folder.source(config, workdir, write=write and process_index == 0)
  return tfds_source.source(config, process_count)


def train_dataset(
  config, source: Source, *, start_index: int = 0, process_index: int = 0, process_count: int = 1
) -> tf.data.Dataset:
  """Host-local batches as a tf.data.Dataset (a folder source adds 'skipped', 'skipped_file')."""
  index_batches = order.local_index_batches(
    source.num_examples,
    global_batch=config.batch_size,
    seed=config.seed,
    start_index=start_index,
    process_index=process_index,
    process_count=process_count,
  )
  ds = source.examples(index_batches, config)
  ds = ds.batch(config.batch_size // process_count, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1  # parallel across examples, not inside one op
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _log_skipped(batches: Iterator[dict], num_files: int, description: str) -> Iterator[dict]:
  """Drops the folder source's skip fields after logging each skipped file and the running
  count; refuses a source none of whose files decodes any more."""
  total = 0
  for batch in batches:
    skipped, files = batch.pop("skipped", ()), batch.pop("skipped_file", ())
    for count, name in zip(skipped, files, strict=True):
      if count >= num_files:
        raise UserError(
          f"no file of {description} decodes as an image any more ({num_files} tried); check the files"
        )
      if count:
        total += int(count)
        logging.warning(
          "skipped %d undecodable image(s) from %s on; %d skipped so far", count, name.decode(), total
        )
    yield batch


def _check_label_range(batches: Iterator[dict], num_classes: int, description: str) -> Iterator[dict]:
  """Refuses labels outside [0, num_classes), e.g. the unlabelled (-1) ImageNet test split; an
  unconditional model (num_classes 0) gets label 0 everywhere."""
  for batch in batches:
    if num_classes == 0:
      batch["label"] = np.zeros_like(batch["label"])
      yield batch
      continue
    labels = batch["label"]
    if labels.min() < 0 or labels.max() >= num_classes:
      raise UserError(
        f"{description} has labels in [{labels.min()}, {labels.max()}] but "
        f"model.num_classes is {num_classes}; labels must lie in [0, num_classes)"
      )
    yield batch


def create_train_iterator(
  config,
  *,
  source: Source | None = None,
  start_index: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  workdir: str | None = None,
) -> Iterator[dict]:
  """Endless iterator of host-local numpy batches {'image', 'label'} starting at example start_index.

  start_index counts the global examples already consumed. ``source``: one load_source checked
  already (None: loaded here; ``workdir`` then receives a folder's label map).
  """
  if source is None:
    source = load_source(config, process_index=process_index, process_count=process_count, workdir=workdir)
  ds = train_dataset(
    config, source, start_index=start_index, process_index=process_index, process_count=process_count
  )
  return _check_label_range(
    _log_skipped(ds.as_numpy_iterator(), source.num_examples, source.description),
    config.model.num_classes,
    source.description,
  )


def stack_d_step_batches(iterator: Iterator[dict], d_steps: int) -> dict:
  """One host batch per D step, stacked: arrays of shape (d_steps, local batch, …)."""
  batches = [next(iterator) for _ in range(d_steps)]
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def log_class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
  if num_classes == 0:
    return np.asarray([labels.size])
  counts = np.bincount(labels.reshape(-1), minlength=num_classes)
  shown = ", ".join(f"{c}:{n}" for c, n in enumerate(counts[:20]))
  logging.info(
    "class histogram of the first batches (%d labels, %d classes seen): %s%s",
    labels.size,
    int((counts > 0).sum()),
    shown,
    " …" if num_classes > 20 else "",
  )
  return counts
