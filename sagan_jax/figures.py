"""Pure numpy/PIL drawing: sample grids, PNGs, query points and attention overlays
(the paper's Fig. 1 / Fig. 5). No JAX program: callers hand in arrays."""

import io
import os

import numpy as np
from etils import epath
from PIL import Image, ImageDraw

QUERY_COLORS = (
  (230, 25, 75),
  (60, 180, 75),
  (255, 225, 25),
  (0, 130, 200),
  (245, 130, 48),
  (145, 30, 180),
  (70, 240, 240),
  (240, 50, 230),
)
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
      grid[top : top + h, left : left + w] = panels[r, col]
  return grid


def save_png(image: np.ndarray, path: str, scale: int = 1) -> None:
  """Writes the PNG whole or not at all: encoded in memory, then on a local disk written to
  a temporary file that is renamed over ``path`` (an object store such as ``gs://``, reached
  through etils.epath, shows an object only once complete). A failed write (a full disk)
  leaves no partial file and raises the OSError."""
  if image.shape[-1] == 1:
    image = image[..., 0]
  pil = Image.fromarray(image)
  if scale > 1:
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
  buffer = io.BytesIO()
  pil.save(buffer, format="PNG")
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if "://" in os.fspath(path):
    target.write_bytes(buffer.getvalue())
    return
  tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
  try:
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, target)
  finally:
    if tmp.exists():
      tmp.unlink()


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


def feature_side(n: int, what: str) -> int:
  side = int(round(np.sqrt(n)))
  if side * side != n:
    raise ValueError(f"{what} has {n} positions, not a square feature map")
  return side


def _colormap(values: np.ndarray) -> np.ndarray:
  """[0, 1] -> RGB uint8 (matplotlib's 'inferno' as a lookup table)."""
  from matplotlib import colormaps

  return (colormaps["inferno"](values)[..., :3] * 255).astype(np.uint8)


HEAT_SCALES = ("query", "figure")


def attention_figure(
  images: np.ndarray, beta: np.ndarray, queries: np.ndarray, heat_scale: str = "query"
) -> np.ndarray:
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
  q_side, k_side = feature_side(beta.shape[1], "the query map"), feature_side(beta.shape[2], "the key map")
  rows = np.asarray([rc[0] * q_side + rc[1] for rc in queries])
  drawn = np.asarray(beta, np.float32)[:, rows].reshape(n, len(queries), k_side, k_side)
  peak = drawn.max(axis=(2, 3), keepdims=True) if heat_scale == "query" else drawn.max()
  drawn = drawn / np.maximum(peak, 1e-12)
  panel = res * max(1, -(-MIN_PANEL // res))
  rgb = to_uint8(images)
  rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb[..., :3]
  dot = max(2, panel // 40)
  cell = lambda rc, side: [
    rc[1] * panel / side,
    rc[0] * panel / side,
    (rc[1] + 1) * panel / side - 1,
    (rc[0] + 1) * panel / side - 1,
  ]
  centre = lambda rc: ((rc[1] + 0.5) * panel / q_side, (rc[0] + 0.5) * panel / q_side)
  panels = np.zeros((n, len(queries) + 1, panel, panel, 3), np.uint8)
  for i in range(n):
    base = Image.fromarray(rgb[i]).resize((panel, panel), Image.NEAREST)
    marked = base.copy()
    draw = ImageDraw.Draw(marked)
    for qi, rc in enumerate(queries):
      x, y = centre(rc)
      draw.ellipse(
        [x - dot, y - dot, x + dot, y + dot],
        fill=QUERY_COLORS[qi % len(QUERY_COLORS)],
        outline=(255, 255, 255),
      )
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
