"""A trained SAGAN for notebooks and tools: ``sagan_jax.load(workdir or checkpoint)``.

  model = sagan_jax.load("runs/fashion_mnist")       # or ".../checkpoints/3300", step=…
  images = model.generate([0, 0, 7], seed=1)          # uint8 (3, H, W, C) from the EMA G
  images, maps = model.attention([3], seed=1)         # and G's β: {layer: (1, queries, keys)}
  logits = model.discriminate(images, [0, 0, 7])      # D's logits of any images

Any batch size: inputs are cut into batches of ``batch_size`` and padded to the devices; the pad
is dropped. Labels are class indices, or (N, num_classes) class weights (a mix of the classes'
conditional-BN embeddings: class interpolation). z defaults to ``noise(n, seed, truncation)``.
The BN statistics are the run's ``sample_bn_stats`` (standing: measured once per model, so
every call sees the same G; 'batch' depends on the batch a sample shares, the pad included).
"""

import os
import re

import jax
import numpy as np

from sagan_jax import figures, programs, sampling, sharding
from sagan_jax import workdir as workdir_lib
from sagan_jax.data.source import label_values
from sagan_jax.errors import UserError
from sagan_jax.models.layers import SPECTRAL
from sagan_jax.run import Run, open_run

OUTPUTS = ("uint8", "float")


def split_checkpoint_path(path: str, step: int | str | None = None) -> tuple:
  """(workdir, step) of a run's workdir or of one of its checkpoints (WORKDIR/checkpoints/N, or
  WORKDIR/best: step 'best')."""
  text = os.fspath(path).rstrip("/")
  head, name = os.path.split(text)
  if name == workdir_lib.BEST and workdir_lib.path(head or ".", workdir_lib.CONFIG).exists():
    return head or ".", "best"
  if re.fullmatch(r"\d+", name) and os.path.basename(head) == workdir_lib.CHECKPOINTS:
    if step is not None and step != int(name):
      raise UserError(f"{path} is the checkpoint of step {int(name)}, not of step {step}; name one")
    return os.path.dirname(head) or ".", int(name)
  return text, step


def load(path: str, step: int | str | None = None, mesh=None) -> "TrainedModel":
  """The run in workdir ``path`` at its newest readable checkpoint (or ``step``; 'best': its best
  checkpoint, workdir/best), or the checkpoint folder ``path`` names. Needs no dataset: only the
  workdir's config.json and checkpoints/."""
  workdir, step = split_checkpoint_path(path, step)
  if not workdir_lib.path(workdir, workdir_lib.CONFIG).exists():
    raise UserError(
      f"{workdir} has no {workdir_lib.CONFIG}: not a run's workdir (python -m sagan_jax.main writes one; "
      f"python -m sagan_jax.convert makes one from a published checkpoint)"
    )
  return TrainedModel(open_run(workdir, step, mesh))


class TrainedModel:
  """One checkpoint of a run, ready to sample: the EMA generator, D, and their programs."""

  def __init__(self, run: Run):
    self.run = run
    self.config, self.step, self.workdir = run.config, run.step, run.workdir
    m = self.config.model
    self.num_classes, self.resolution, self.z_dim = m.num_classes, m.resolution, m.z_dim
    self.image_channels = m.image_channels
    devices = run.mesh.size
    self.batch_size = sharding.round_up(self.config.eval.batch_size, devices)
    self._batch = sharding.batch_sharding(run.mesh)
    self._discriminate = _discriminate_program(run.programs.discriminator, run.mesh)

  def __repr__(self):
    return (
      f"TrainedModel({self.workdir!r}, step={self.step}, {self.resolution}×{self.resolution}×"
      f"{self.image_channels}, {self.num_classes} classes)"
    )

  # Inputs

  def noise(self, n: int, seed: int = 0, truncation: float | None = None) -> np.ndarray:
    """(n, z_dim) float32 z from ``seed``, truncated at ±truncation by resampling if given."""
    return sampling.truncated_normal(np.random.default_rng(seed), (int(n), self.z_dim), truncation)

  def class_weights(self, a: int, b: int, weights) -> np.ndarray:
    """(len(weights), num_classes) mixes of classes a → b, for ``generate``'s labels."""
    if not self.num_classes:
      raise UserError("an unconditional model (num_classes 0) has no classes to mix; interpolate z instead")
    self._check_labels(np.asarray([a, b]))
    w = np.asarray(weights, np.float32)[:, None]
    out = np.zeros((len(w), self.num_classes), np.float32)
    out[:, a] += 1 - w[:, 0]
    out[:, b] += w[:, 0]
    return out

  def _check_labels(self, labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 2:
      if labels.shape[1] != self.num_classes:
        raise UserError(f"class weights of shape {labels.shape}: the model has {self.num_classes} classes")
      return labels.astype(np.float32)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise UserError(
        f"labels must be class indices (N,) or class weights (N, {self.num_classes}), not {labels.dtype} "
        f"of shape {labels.shape}"
      )
    values = label_values(self.num_classes)  # an unconditional model: label 0 only
    bad = sorted(set(labels[(labels < 0) | (labels >= values)].tolist()))
    if bad:
      raise UserError(
        f"classes {bad[:5]} are outside [0, {values}): the model has {self.num_classes or 'no'} classes"
        + (" (give label 0, or labels=np.zeros(n, int))" if not self.num_classes else "")
      )
    return labels.astype(np.int32)

  def _inputs(self, labels, z, seed, truncation):
    labels = self._check_labels(np.asarray(labels))
    if z is None:
      z = self.noise(len(labels), seed, truncation)
    z = np.asarray(z, np.float32)
    if z.shape != (len(labels), self.z_dim):
      raise UserError(f"z has shape {z.shape}; {len(labels)} labels need ({len(labels)}, {self.z_dim})")
    return labels, z

  def _batches(self, n: int):
    """(start, stop, padded size) of each batch: whole batches, the last one padded like them
    (one program for every batch) unless all of n fits in one."""
    devices = self.run.mesh.size
    size = self.batch_size if n > self.batch_size else sharding.round_up(max(n, 1), devices)
    return [(i, min(i + size, n), size) for i in range(0, n, size)]

  def _put(self, array, size):
    return jax.device_put(np.resize(array, (size,) + array.shape[1:]), self._batch)

  # Outputs

  def generate(self, labels, z=None, *, truncation=None, seed=0, output="uint8", progress=None) -> np.ndarray:
    """Images of the EMA G for ``labels`` (and ``z``; drawn from ``seed`` if None): uint8
    (N, H, W, C), or float32 in [-1, 1] with output='float'. ``progress(done, total)`` is
    called after each batch."""
    if output not in OUTPUTS:
      raise UserError(f"output={output!r}: use one of {OUTPUTS}")
    labels, z = self._inputs(labels, z, seed, truncation)
    chunks = []
    for start, stop, size in self._batches(len(labels)):
      images = self.run.programs.sampler(
        self.run.state, self._put(z[start:stop], size), self._put(labels[start:stop], size)
      )
      chunks.append(np.asarray(jax.device_get(images))[: stop - start])
      if progress:
        progress(stop, len(labels))
    images = (
      np.concatenate(chunks)
      if chunks
      else np.zeros((0, self.resolution, self.resolution, self.image_channels), np.float32)
    )
    return figures.to_uint8(images) if output == "uint8" else images.astype(np.float32)

  def attention(self, labels, z=None, *, truncation=None, seed=0) -> tuple:
    """(float images in [-1, 1], {layer: β}) with β (N, queries, keys): the softmax weights
    each of G's attention layers used (the explicit form, whatever the run trained with)."""
    labels, z = self._inputs(labels, z, seed, truncation)
    images, maps = [], {}
    for start, stop, size in self._batches(len(labels)):
      out, betas = jax.device_get(
        self.run.programs.sampler.with_attention(
          self.run.state, self._put(z[start:stop], size), self._put(labels[start:stop], size)
        )
      )
      images.append(np.asarray(out)[: stop - start])
      for layer, beta in betas.items():
        maps.setdefault(layer, []).append(np.asarray(beta)[: stop - start])
    return np.concatenate(images), {layer: np.concatenate(parts) for layer, parts in maps.items()}

  def discriminate(self, images, labels) -> np.ndarray:
    """D's logits (N,) float32 of images (uint8, or float in [-1, 1]) with ``labels``."""
    images = np.asarray(images)
    want = (self.resolution, self.resolution, self.image_channels)
    if images.ndim != 4 or images.shape[1:] != want:
      raise UserError(f"images of shape {images.shape}: the model takes (N, {', '.join(map(str, want))})")
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 127.5 - 1.0
    labels = self._check_labels(np.asarray(labels))
    if len(labels) != len(images):
      raise UserError(f"{len(images)} images and {len(labels)} labels: give one label per image")
    images = images.astype(np.float32)
    logits = []
    for start, stop, size in self._batches(len(labels)):
      out = self._discriminate(
        self.run.state, self._put(images[start:stop], size), self._put(labels[start:stop], size)
      )
      logits.append(np.asarray(jax.device_get(out))[: stop - start])
    return np.concatenate(logits) if logits else np.zeros((0,), np.float32)

  def protocol(self, **extra) -> dict:
    """What samples of this model depend on (for the JSON beside them)."""
    c = self.config
    return {
      "workdir": os.fspath(self.workdir),
      "step": int(self.step),
      "generator": "EMA",
      "sample_bn_stats": c.sample_bn_stats,
      "standing_stats_batches": int(c.standing_stats_batches) if c.sample_bn_stats == "standing" else None,
      "standing_stats_seed": int(c.seed) + programs.STANDING_STATS_SEED_OFFSET
      if c.sample_bn_stats == "standing"
      else None,
      "resolution": int(self.resolution),
      "num_classes": int(self.num_classes),
      "kernels": dict(self.run.programs.kernels.choices()),
      **extra,
    }


def _discriminate_program(discriminator, mesh):
  """jit: (state, images, labels) -> D's logits, eval mode, batch-sharded in, replicated out."""
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)

  def logits(state, images, labels):
    return discriminator.apply({"params": state.d_params, SPECTRAL: state.d_spectral}, images, labels)

  return jax.jit(logits, in_shardings=(replicated, batch, batch), out_shardings=replicated)
