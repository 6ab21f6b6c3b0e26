"""Figures: sample grids, class sample sheets and attention maps (the paper's Fig. 1, 5).

python -m sagan_jax.visualize --workdir=DIR [--step=N] [--classes=0,3,7] [--queries=K]
    [--network=generator|discriminator|both] [--sheets] [--heat_scale=query|figure]
writes, for the run's latest (or the named) checkpoint,
  DIR/attention/step_N_generator.png      EMA-G samples (fixed seeds), last G attention layer
  DIR/attention/step_N_discriminator.png  real images, last D attention layer
  DIR/sheets/step_N_class_C.png           a grid of samples of class C (with --sheets)
  DIR/sheets/step_N_classes.png           one row per class, untruncated z (with --sheets)
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
from sagan_jax.errors import UserError
from sagan_jax.run import open_run


def _sample(run, z, y, attention=False):
  put = lambda a: jax.device_put(a, sharding.batch_sharding(run.mesh))
  sampler = run.programs.sampler
  fn = sampler.with_attention if attention else sampler
  return jax.device_get(fn(run.state, put(z), put(y)))


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
  bad = [c for c in classes if not 0 <= c < m.num_classes]
  if bad:
    raise UserError(f"classes {bad} are outside [0, {m.num_classes}); pass --classes within it")
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
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
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
  flags.mark_flags_as_required(["workdir"])
  app.run(_main, flags_parser=cli.parse_flags)
