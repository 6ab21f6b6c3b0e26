"""Figures: sample grids, class sample sheets and attention maps (the paper's Fig. 1, 5).

python -m sagan_jax.visualize --workdir=DIR [--step=N] [--classes=0,3,7] [--queries=K]
    [--network=generator|discriminator|both] [--sheets] [--heat_scale=query|figure]
    [--nearest=K [--nearest_space=auto|pixels|fmnist_classifier|inception] [--nearest_pool=N]]
writes, for the run's latest (or the named) checkpoint,
  DIR/attention/step_N_generator.png      EMA-G samples (fixed seeds), last G attention layer
  DIR/attention/step_N_discriminator.png  real images, last D attention layer
  DIR/sheets/step_N_class_C.png           a grid of samples of class C (with --sheets)
  DIR/sheets/step_N_classes.png           one row per class, untruncated z (with --sheets)
  DIR/nearest/step_N_<space>.png          per row a sample, then its K nearest training images
                                          (with --nearest=K; is the model copying its data?)
Each attention row is: the image with coloured query points, then per query the
softmax weights over key positions, upsampled to the image and overlaid, the most
attended key cell boxed in the query's colour. Each map spans the colour scale unless
--heat_scale=figure gives all maps of a figure one scale.
"""

import os

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while JAX loads: one line, not a traceback

import jax
import numpy as np

from sagan_jax import figures, sampling, sharding
from sagan_jax import workdir as workdir_lib
from sagan_jax.data.source import label_values
from sagan_jax.errors import UserError
from sagan_jax.evaluation import registry
from sagan_jax.run import open_run


def _sample(run, z, y, attention=False):
  put = lambda a: jax.device_put(a, sharding.batch_sharding(run.mesh))
  sampler = run.programs.sampler
  fn = sampler.with_attention if attention else sampler
  return jax.device_get(fn(run.state, put(z), put(y)))


NEAREST_SPACES = ("auto", "pixels", registry.FMNIST_CLASSIFIER, registry.INCEPTION)
NEAREST_METRIC = {registry.FMNIST_CLASSIFIER: "fid_fmnist", registry.INCEPTION: "fid"}  # loads the space


def nearest_indices(queries: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
  """(Q, k) indices of each query's k nearest pool rows, nearest first (Euclidean distance)."""
  queries, pool = np.asarray(queries, np.float64), np.asarray(pool, np.float64)
  distances = (
    np.sum(queries**2, 1)[:, None] - 2 * queries @ pool.T + np.sum(pool**2, 1)[None, :]
  )  # squared, up to rounding; only the order is used
  nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
  order = np.take_along_axis(distances, nearest, 1).argsort(axis=1, kind="stable")
  return np.take_along_axis(nearest, order, 1)


def nearest_space(config, space: str) -> str:
  """'auto': the Fashion-MNIST classifier for Fashion-MNIST, else the FID Inception."""
  if space != "auto":
    return space
  return registry.FMNIST_CLASSIFIER if config.dataset.name == "fashion_mnist" else registry.INCEPTION


def nearest_figure(run, images: np.ndarray, k: int, space: str, pool: int) -> tuple:
  """(uint8 figure, space used): per row a sample (float, [-1, 1]) then its k nearest training
  images of a pool of ``pool`` (the first of a fixed shuffle of the training split, unflipped),
  nearest first, by distance in ``space``'s features (or raw pixels)."""
  from sagan_jax.evaluation import evaluator, references  # tf.data and the feature networks

  config = run.config.copy_and_resolve_references()
  config.eval.reference_split = config.dataset.split  # the images the model was trained on
  batches, _ = references.real_batches(config, pool)
  real = np.concatenate(batches)[:pool]
  if k > len(real):
    raise UserError(f"--nearest={k} but the training split holds {len(real)} images; lower --nearest")
  space = nearest_space(config, space)
  if space == "pixels":
    queries, keys = images.reshape(len(images), -1), real.reshape(len(real), -1)
  else:
    scorer = evaluator.Evaluator(
      config, run.mesh, run.programs.sampler, run.workdir, run.programs.kernels, (NEAREST_METRIC[space],)
    )
    queries, keys = scorer.image_features(images)[space][0], scorer.image_features(real)[space][0]
  nearest = nearest_indices(queries, keys, k)
  panels = np.concatenate([images[:, None], real[nearest]], axis=1)  # (rows, 1 + k, H, W, C)
  return figures.tile(figures.to_uint8(panels), pad=2), space


def write_run_figures(
  workdir,
  *,
  step=None,
  classes=None,
  queries=4,
  num_images=None,
  network="both",
  sheets=False,
  sheet_size=8,
  seed=0,
  heat_scale="query",
  nearest=0,
  nearest_space_name="auto",
  nearest_pool=10_000,
  run=None,
) -> list:
  """Writes the figures of a checkpoint of the run in workdir; returns their paths.

  ``run``: an already opened run (``run.open_run``) to draw from instead of restoring.
  """
  run = run or open_run(workdir, step)
  config, step, state = run.config, run.step, run.state
  m = config.model
  if classes is None:
    classes = sampling.grid_classes(m.num_classes)
  classes = [int(c) for c in classes]
  bad = [c for c in classes if not 0 <= c < label_values(m.num_classes)]
  if bad:
    raise UserError(f"classes {bad} are outside [0, {label_values(m.num_classes)}); pass --classes within it")
  num_images = num_images or len(classes)
  written = []

  def points(side):
    try:
      return figures.query_points(side, queries, seed)
    except ValueError as e:
      raise UserError(f"{e}; pass --queries between 1 and {side * side}") from None

  def save(image, folder, name):
    path = workdir_lib.path(workdir, folder, workdir_lib.step_png(step, name))
    figures.save_png(image, path)
    written.append(os.fspath(path))

  def attention(images, maps, net):
    layer = figures.last_attention_layer(maps)
    if layer is None:
      print(f"the {net} has no self-attention layer; no {net} attention figure")
      return
    side = figures.feature_side(maps[layer].shape[1], layer)
    save(figures.attention_figure(images, maps[layer], points(side), heat_scale), workdir_lib.ATTENTION, net)

  if network in ("generator", "both"):
    shown = np.resize(np.asarray(classes), num_images)
    z, y, n = sampling.class_sheet_inputs(config, shown, 1, run.mesh.size, seed)
    images, maps = _sample(run, z, y, attention=True)
    attention(images[:n], {k: v[:n] for k, v in maps.items()}, "generator")
  if network in ("discriminator", "both"):
    from sagan_jax.data import pipeline  # tf.data: only the discriminator's figure reads data

    real = next(pipeline.create_train_iterator(config, workdir=workdir))
    images, labels = real["image"][:num_images], real["label"][:num_images]
    attention(
      images,
      sampling.discriminator_attention(run.programs.discriminator, state, images, labels),
      "discriminator",
    )
  if nearest:
    shown = np.resize(np.asarray(classes), num_images)
    z, y, n = sampling.class_sheet_inputs(config, shown, 1, run.mesh.size, seed)
    figure, space = nearest_figure(run, _sample(run, z, y)[:n], nearest, nearest_space_name, nearest_pool)
    save(figure, workdir_lib.NEAREST, space)
  if sheets:
    per_class = sheet_size * sheet_size
    for c in classes:
      z, y, n = sampling.class_sheet_inputs(config, [c], per_class, run.mesh.size, seed)
      save(
        figures.image_grid(_sample(run, z, y)[:n], sheet_size, sheet_size), workdir_lib.SHEETS, f"class_{c}"
      )
    z, y, n = sampling.class_sheet_inputs(config, classes, sheet_size, run.mesh.size, seed)
    save(figures.image_grid(_sample(run, z, y)[:n], len(classes), sheet_size), workdir_lib.SHEETS, "classes")
  jax.effects_barrier()
  return written


def _figures():
  import logging

  from absl import flags

  from sagan_jax import runtime

  runtime.start(distributed=False, log_level=logging.WARNING)
  f = flags.FLAGS
  try:
    classes = [int(c) for c in f.classes.split(",")] if f.classes else None
  except ValueError:
    raise UserError(f"--classes={f.classes!r} is not a comma-separated list of class indices") from None
  return write_run_figures(
    f.workdir,
    step=f.step,
    classes=classes,
    queries=f.queries,
    num_images=f.num_images,
    network=f.network,
    sheets=f.sheets,
    sheet_size=f.sheet_size,
    seed=f.seed,
    heat_scale=f.heat_scale,
    nearest=f.nearest,
    nearest_space_name=f.nearest_space,
    nearest_pool=f.nearest_pool,
  )


def _main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  from sagan_jax import cli

  for path in cli.run(_figures):
    print(path)


if __name__ == "__main__":
  from absl import app, flags

  from sagan_jax import cli

  flags.DEFINE_string("workdir", None, "A training run's --workdir.")
  cli.define_step_flag("Checkpoint step (default: the latest).")
  flags.DEFINE_string("classes", "", "Comma-separated class indices (default: up to 10 spread out).")
  flags.DEFINE_integer("queries", 4, "Query points per attention figure.")
  flags.DEFINE_integer("num_images", None, "Images per attention figure (default: one per class).")
  flags.DEFINE_enum("network", "both", ["generator", "discriminator", "both"], "Whose attention.")
  flags.DEFINE_bool("sheets", False, "Also write class sample sheets.")
  flags.DEFINE_integer("sheet_size", 8, "A class sheet is sheet_size × sheet_size samples.")
  flags.DEFINE_integer("seed", 0, "Seed of z and of the query points.")
  flags.DEFINE_enum(
    "heat_scale",
    "query",
    list(figures.HEAT_SCALES),
    "Colour scale of the attention maps: per map, or one for the whole figure.",
  )
  flags.DEFINE_integer("nearest", 0, "> 0: also the K nearest training images of each sample (copying?).")
  flags.DEFINE_enum(
    "nearest_space",
    "auto",
    list(NEAREST_SPACES),
    "Features of --nearest ('auto': the Fashion-MNIST classifier's for Fashion-MNIST, else Inception's).",
  )
  flags.DEFINE_integer(
    "nearest_pool", 10_000, "Training images --nearest searches (a fixed shuffle's first)."
  )
  flags.mark_flags_as_required(["workdir"])
  app.run(_main, flags_parser=cli.parse_flags)
