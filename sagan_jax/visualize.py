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

import numpy as np
from PIL import Image, ImageDraw

QUERY_COLORS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))
MIN_PANEL = 128  # attention panels are drawn at least this many pixels wide


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] float images -> uint8."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
  """(rows*cols, H, W, C) in [-1, 1] -> one uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, C) image."""
  n, h, w, c = images.shape
  if n != rows * cols:
    raise ValueError(f"{n} images do not fill a {rows}×{cols} grid")
  return tile(to_uint8(images).reshape(rows, cols, h, w, c), pad)


def tile(panels: np.ndarray, pad: int = 1) -> np.ndarray:
  """(rows, cols, H, W, C) uint8 -> one image with white padding between panels."""
  rows, cols, h, w, c = panels.shape
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for r in range(rows):
    for col in range(cols):
      top, left = pad + r * (h + pad), pad + col * (w + pad)
      grid[top:top + h, left:left + w] = panels[r, col]
  return grid


def save_png(image: np.ndarray, path: str, scale: int = 1) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if image.shape[-1] == 1:
    image = image[..., 0]
  pil = Image.fromarray(image)
  if scale > 1:
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
  pil.save(path)


def query_points(side: int, k: int, seed: int = 0) -> np.ndarray:
  """k distinct (row, col) cells of a side×side grid, spread out (greedy farthest point)
  over its central part, where the object usually is (the outer fifth is left out)."""
  if not 0 < k <= side * side:
    raise ValueError(f"{k} query points do not fit a {side}×{side} feature map")
  cells = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
  margin = max(1, side // 5) if side > 4 else 0
  inner = cells[(cells.min(1) >= margin) & (cells.max(1) < side - margin)]
  candidates = inner if len(inner) >= k else cells
  rng = np.random.default_rng(seed)
  chosen = [candidates[rng.integers(len(candidates))]]
  while len(chosen) < k:
    dist = np.min(np.abs(candidates[:, None] - np.asarray(chosen)[None]).sum(-1), axis=1)
    chosen.append(candidates[int(np.argmax(dist + rng.uniform(0, 0.1, len(candidates))))])
  return np.asarray(chosen)


def _side(n: int, what: str) -> int:
  side = int(round(np.sqrt(n)))
  if side * side != n:
    raise ValueError(f"{what} has {n} positions, not a square feature map")
  return side


def _colormap(values: np.ndarray) -> np.ndarray:
  """[0, 1] -> RGB uint8 (matplotlib's 'inferno' as a lookup table)."""
  from matplotlib import colormaps
  return (colormaps["inferno"](values)[..., :3] * 255).astype(np.uint8)


HEAT_SCALES = ("query", "figure")


def attention_figure(images: np.ndarray, beta: np.ndarray, queries: np.ndarray,
                     heat_scale: str = "query") -> np.ndarray:
  """One row per image: the image with query dots, then one heat map per query.

  images (n, R, R, C) in [-1, 1]; beta (n, q², k²) softmax weights (query j, key i) of
  a layer whose query map is q×q and key map k×k; queries (K, 2) cells of the q×q map.
  heat_scale 'query': each map spans the colour scale (its largest weight is brightest;
  a near-uniform map looks bright everywhere); 'figure': one scale for all maps of the
  figure (the largest weight drawn), so maps compare across queries and images.
  Returns uint8 RGB of n·(P+1)+1 by (K+1)·(P+1)+1 pixels, P = max(R, 128) rounded to
  a multiple of R.
  """
  if heat_scale not in HEAT_SCALES:
    raise ValueError(f"heat_scale {heat_scale!r} is not one of {HEAT_SCALES}")
  n, res = images.shape[0], images.shape[1]
  q_side, k_side = _side(beta.shape[1], "the query map"), _side(beta.shape[2], "the key map")
  rows = np.asarray([rc[0] * q_side + rc[1] for rc in queries])
  drawn = np.asarray(beta, np.float32)[:, rows].reshape(n, len(queries), k_side, k_side)
  peak = drawn.max(axis=(2, 3), keepdims=True) if heat_scale == "query" else drawn.max()
  drawn = drawn / np.maximum(peak, 1e-12)
  panel = res * max(1, -(-MIN_PANEL // res))
  rgb = to_uint8(images)
  rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb[..., :3]
  dot = max(2, panel // 40)
  cell = lambda rc, side: [rc[1] * panel / side, rc[0] * panel / side,
                           (rc[1] + 1) * panel / side - 1, (rc[0] + 1) * panel / side - 1]
  centre = lambda rc: ((rc[1] + 0.5) * panel / q_side, (rc[0] + 0.5) * panel / q_side)
  panels = np.zeros((n, len(queries) + 1, panel, panel, 3), np.uint8)
  for i in range(n):
    base = Image.fromarray(rgb[i]).resize((panel, panel), Image.NEAREST)
    marked = base.copy()
    draw = ImageDraw.Draw(marked)
    for qi, rc in enumerate(queries):
      x, y = centre(rc)
      draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=QUERY_COLORS[qi % len(QUERY_COLORS)],
                   outline=(255, 255, 255))
    panels[i, 0] = np.asarray(marked)
    gray = np.asarray(base.convert("L").convert("RGB"), np.float32)
    for qi, rc in enumerate(queries):
      color = QUERY_COLORS[qi % len(QUERY_COLORS)]
      weights = drawn[i, qi]
      heat = Image.fromarray(weights).resize((panel, panel), Image.BILINEAR)
      overlay = 0.4 * gray + 0.6 * _colormap(np.clip(np.asarray(heat), 0, 1))
      pil = Image.fromarray(np.clip(overlay, 0, 255).astype(np.uint8))
      draw = ImageDraw.Draw(pil)
      top = np.unravel_index(int(np.argmax(weights)), weights.shape)
      draw.rectangle(cell(top, k_side), outline=color, width=max(1, dot // 2))
      x, y = centre(rc)
      draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=color, outline=(255, 255, 255))
      panels[i, qi + 1] = np.asarray(pil)
  return tile(panels)


def last_attention_layer(maps: dict) -> str | None:
  """The layer named attention<side> with the largest side: G's last, D's first of its side."""
  names = [k for k in maps if k.rsplit("/", 1)[-1].startswith("attention")]
  return max(names, key=lambda k: int(k.rsplit("attention", 1)[-1]), default=None)


def discriminator_attention(discriminator, state, images, labels) -> dict:
  """{layer: β} of every D attention layer on these images (D's own forward, eval mode,
  in the explicit form whatever ``attention_impl`` trains)."""
  from sagan_jax.models.attention import explicit_attention, sown_attention
  from sagan_jax.models.layers import SPECTRAL
  _, inter = explicit_attention(discriminator).apply({"params": state.d_params, SPECTRAL: state.d_spectral},
                                 images, labels, mutable=["intermediates"])
  return sown_attention(inter)


def class_sheet_inputs(config, classes, per_class: int, num_devices: int, seed: int):
  """z ~ N(0, I) (no truncation) and labels: per_class samples of each class, padded to the devices."""
  n = len(classes) * per_class
  padded = -(-n // num_devices) * num_devices
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((padded, config.model.z_dim)).astype(np.float32)
  y = np.resize(np.repeat(np.asarray(classes), per_class), padded).astype(np.int32)
  return z, y, n


def _sample(sampler, mesh, state, z, y, attention=False):
  import jax
  from sagan_jax import sharding
  put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh))
  fn = sampler.with_attention if attention else sampler
  return jax.device_get(fn(state, put(z), put(y)))


def write_run_figures(workdir, *, step=None, classes=None, queries=4, num_images=None,
                      network="both", sheets=False, sheet_size=8, seed=0,
                      heat_scale="query") -> list:
  """Restores a checkpoint of the run in workdir and writes its figures; returns their paths."""
  import jax
  from sagan_jax import restore, sharding, train
  from sagan_jax.errors import UserError
  config = restore.load_run_config(workdir)
  mesh = sharding.create_mesh()
  step, state = restore.restore_run(config, workdir, step, mesh)
  built = train.programs(config, mesh)
  sampler = built.sampler
  m = config.model
  if classes is None:
    classes = np.unique(np.linspace(0, m.num_classes - 1, min(10, m.num_classes)).round().astype(int))
  classes = [int(c) for c in classes]
  bad = [c for c in classes if not 0 <= c < m.num_classes]
  if bad:
    raise UserError(f"classes {bad} are outside [0, {m.num_classes}); pass --classes within it")
  num_images = num_images or len(classes)
  written = []

  def points(side):
    try:
      return query_points(side, queries, seed)
    except ValueError as e:
      raise UserError(f"{e}; pass --queries between 1 and {side * side}") from None

  def out(folder, name):
    return os.path.join(workdir, folder, f"step_{step:08d}_{name}.png")

  if network in ("generator", "both"):
    shown = np.resize(np.asarray(classes), num_images)
    z, y, n = class_sheet_inputs(config, shown, 1, mesh.size, seed)
    images, maps = _sample(sampler, mesh, state, z, y, attention=True)
    layer = last_attention_layer(maps)
    if layer is None:
      print("the generator has no self-attention layer; no generator attention figure")
    else:
      side = _side(maps[layer].shape[1], layer)
      fig = attention_figure(images[:n], maps[layer][:n], points(side), heat_scale)
      save_png(fig, out("attention", "generator"))
      written.append(out("attention", "generator"))
  if network in ("discriminator", "both"):
    from sagan_jax import input_pipeline
    real = next(input_pipeline.create_train_iterator(config, workdir=workdir))
    keep = real["image"][:num_images], real["label"][:num_images]
    maps = discriminator_attention(built.discriminator, state, *keep)
    layer = last_attention_layer(maps)
    if layer is None:
      print("the discriminator has no self-attention layer; no discriminator attention figure")
    else:
      side = _side(maps[layer].shape[1], layer)
      fig = attention_figure(keep[0], maps[layer], points(side), heat_scale)
      save_png(fig, out("attention", "discriminator"))
      written.append(out("attention", "discriminator"))
  if sheets:
    per_class = sheet_size * sheet_size
    for c in classes:
      z, y, n = class_sheet_inputs(config, [c], per_class, mesh.size, seed)
      images = _sample(sampler, mesh, state, z, y)[:n]
      save_png(image_grid(images, sheet_size, sheet_size), out("sheets", f"class_{c}"))
      written.append(out("sheets", f"class_{c}"))
    z, y, n = class_sheet_inputs(config, classes, sheet_size, mesh.size, seed)
    images = _sample(sampler, mesh, state, z, y)[:n]
    save_png(image_grid(images, len(classes), sheet_size), out("sheets", "classes"))
    written.append(out("sheets", "classes"))
  jax.effects_barrier()
  return written


def _main(argv):
  import logging
  import sys
  from absl import flags
  from sagan_jax import cli
  cli.start(argv, distributed=False, log_level=logging.WARNING)
  f = flags.FLAGS
  try:
    classes = [int(c) for c in f.classes.split(",")] if f.classes else None
  except ValueError:
    print(f"error: --classes={f.classes!r} is not a comma-separated list of class indices",
          file=sys.stderr)
    sys.exit(2)
  for path in cli.run(write_run_figures, f.workdir, step=f.step, classes=classes,
                      queries=f.queries, num_images=f.num_images, network=f.network,
                      sheets=f.sheets, sheet_size=f.sheet_size, seed=f.seed,
                      heat_scale=f.heat_scale):
    print(path)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "A training run's --workdir.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_string("classes", "", "Comma-separated class indices (default: up to 10 spread out).")
  flags.DEFINE_integer("queries", 4, "Query points per attention figure.")
  flags.DEFINE_integer("num_images", None, "Images per attention figure (default: one per class).")
  flags.DEFINE_enum("network", "both", ["generator", "discriminator", "both"], "Whose attention.")
  flags.DEFINE_bool("sheets", False, "Also write class sample sheets.")
  flags.DEFINE_integer("sheet_size", 8, "A class sheet is sheet_size × sheet_size samples.")
  flags.DEFINE_integer("seed", 0, "Seed of z and of the query points.")
  flags.DEFINE_enum("heat_scale", "query", list(HEAT_SCALES),
                    "Colour scale of the attention maps: per map, or one for the whole figure.")
  flags.mark_flags_as_required(["workdir"])
  app.run(_main)
