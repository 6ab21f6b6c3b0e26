"""The deterministic, resumable order of the training examples: epoch e is a permutation
seeded by (seed, e), every global batch a run of that stream, and each process reads only its
own rows of every global batch, so P processes read disjoint shares of each epoch that together
cover it, and a run restarted at example k continues exactly where it stopped."""

import tensorflow as tf

from sagan_jax.errors import UserError


def epoch_permutation_stream(num_examples: int, seed: int, start_index: int) -> tf.data.Dataset:
  """Example indices, epoch after epoch, each epoch a permutation seeded by (seed, epoch)."""
  start_epoch, offset = divmod(start_index, num_examples)

  def epoch_indices(epoch):
    order = tf.random.experimental.stateless_shuffle(
      tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
    )
    return tf.data.Dataset.from_tensor_slices(order)

  return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_indices).skip(offset)


def local_index_batches(
  num_examples: int,
  *,
  global_batch: int,
  seed: int,
  start_index: int,
  process_index: int = 0,
  process_count: int = 1,
) -> tf.data.Dataset:
  """{'position', 'index'} of this process's rows of every global batch, from example start_index on.

  'position' counts examples in the global stream (it seeds the flip); 'index' is the example.
  """
  if global_batch % process_count:
    raise UserError(f"batch_size {global_batch} must divide by the process count {process_count}")
  local = global_batch // process_count
  rows = slice(process_index * local, (process_index + 1) * local)
  ds = tf.data.Dataset.zip(
    {
      "position": tf.data.Dataset.range(start_index, 2**62),
      "index": epoch_permutation_stream(num_examples, seed, start_index),
    }
  )
  ds = ds.batch(global_batch, drop_remainder=True)
  return ds.map(lambda batch: {k: v[rows] for k, v in batch.items()})
