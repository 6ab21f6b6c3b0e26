"""The attention explorer's data: the β maps of every attention layer of G (EMA samples from
the sample grid's fixed seeds, one row per class) and of D (real images, one per class),
quantised and packed for the report page (sagan_jax/report/page.js draws them).

β (B, queries, keys) is what each layer's forward pass computes and sows (query j over key
positions i, models/attention.py); with ``pool_kv`` the keys lie on the pooled (side/2)² grid.
A map is stored as uint8 relative to its own largest weight (q = round(255·β/max), so a
weight is known to max/510), with the float32 maxima beside it, the whole layer deflated and
base64-encoded. Only the images shown are stored. A byte budget bounds the page: the images
per class row go down first (to one), then the stored query grid gets coarser (every s-th
query cell; a hover snaps to the nearest stored one), then fewer classes are shown.
"""

import base64
import math
import zlib

import jax
import numpy as np

from sagan_jax import config as config_lib
from sagan_jax import figures, sampling, sharding
from sagan_jax.errors import UserError

DEFAULT_BUDGET_BYTES = 3 * 2**20  # quantised map bytes on a page (before deflate and base64)
MAX_COLUMNS = 5  # G images per class row at most
MIN_STORED_SIDE = 8  # the query grid is coarsened to no fewer than 8×8 cells first
CHUNK_BYTES = 256 * 2**20  # float32 β alive per sampling call
NETWORKS = {"g": "G", "d": "D"}


def layer_shapes(config, which: str) -> list:
  """[(name, query side, key side)] of a network's attention layers in forward order; [] when
  it has none or puts Table 1's residual control block there (no attention to show)."""
  m = config.model
  if m.get("attention_block", "self_attention") != "self_attention":
    return []
  sides = config_lib.attention_sides(m, which)
  order = sorted(set(sides), reverse=(which == "d"))  # G grows its maps, D shrinks them
  return [(f"attention{s}", s, s // 2 if m.pool_kv else s) for s in order]


def absent_reason(config, which: str) -> str:
  """Why a network has no maps to explore ('' when it has some)."""
  m = config.model
  net = "generator" if which == "g" else "discriminator"
  if not config_lib.attention_sides(m, which):
    return f"This run's {net} has no attention layer (attention sides: none)."
  if m.get("attention_block", "self_attention") == "residual":
    sides = ", ".join(f"feat{s}" for s in config_lib.attention_sides(m, which))
    return (
      f"This run's {net} has Table 1's residual control block at {sides} instead of "
      "attention (the same parameter count, no attention map to show)."
    )
  return ""


def stored_queries(query_side: int, stride: int) -> np.ndarray:
  """Flat query indices kept with a query stride: cells (a·s + s/2, b·s + s/2), row-major."""
  cells = np.arange(0, query_side, stride) + stride // 2
  cells = cells[cells < query_side]
  return (cells[:, None] * query_side + cells[None, :]).reshape(-1)


def plan(
  config,
  num_classes_shown: int,
  columns: int | None = None,
  num_real: int | None = None,
  budget: int = DEFAULT_BUDGET_BYTES,
  query_stride: int | None = None,
) -> dict:
  """How much to store: {'rows', 'columns', 'real', 'strides': {(net, layer): s}, 'bytes'}.

  Defaults fit ``budget``: columns down to 1, then coarser query grids (largest layer first,
  to a stored side of MIN_STORED_SIDE), then fewer rows (and real images), then coarser still.
  Explicit ``columns`` / ``num_real`` / ``query_stride`` are kept as given.
  """
  layers = [(NETWORKS[w], name, q, k) for w in ("g", "d") for name, q, k in layer_shapes(config, w)]
  rows = num_classes_shown
  cols = min(columns or MAX_COLUMNS, config.num_sample_columns)  # the grid's own samples
  real = num_real or rows
  strides = {(net, name): query_stride or 1 for net, name, _, _ in layers}

  def images(net):
    return rows * cols if net == "G" else real

  def size(net, name, q, k):
    return images(net) * len(stored_queries(q, strides[net, name])) * k * k

  def total():
    return sum(size(*layer) for layer in layers)

  def coarsen(min_side):
    """Doubles the stride of the largest layer that may still coarsen; False when none may."""
    for layer in sorted(layers, key=lambda shape: -size(*shape)):
      net, name, q, _ = layer
      if q // (strides[net, name] * 2) >= min_side:
        strides[net, name] *= 2
        return True
    return False

  while columns is None and total() > budget and cols > 1:
    cols -= 1
  while query_stride is None and total() > budget and coarsen(MIN_STORED_SIDE):
    pass
  while columns is None and num_real is None and total() > budget and max(rows, real) > 1:
    rows, real = max(1, rows // 2), max(1, real // 2)
  while query_stride is None and total() > budget and coarsen(1):
    pass
  return {"rows": rows, "columns": cols, "real": real, "strides": strides, "bytes": total()}


def encode_maps(beta: np.ndarray, stride: int = 1) -> dict:
  """β (n, Q, K) of one layer -> its page form: the stored queries' rows as uint8 relative to
  each row's maximum ('maps', deflated, base64) and those maxima ('row_max', float32, base64)."""
  beta = np.asarray(beta, np.float32)
  return _encode_rows(beta[:, stored_queries(figures.feature_side(beta.shape[1], "the query map"), stride)])


def _encode_rows(rows: np.ndarray) -> dict:
  row_max = np.maximum(rows.max(axis=-1), np.finfo(np.float32).tiny)
  quantised = np.round(rows / row_max[..., None] * 255).astype(np.uint8)
  b64 = lambda raw: base64.b64encode(raw).decode("ascii")
  return {
    "maps": b64(zlib.compress(quantised.tobytes(), 6)),
    "row_max": b64(row_max.astype("<f4").tobytes()),
    "raw_bytes": int(quantised.size),
  }


def decode_maps(layer: dict, num_images: int) -> np.ndarray:
  """The page's dequantised β (n, stored queries, K) of one encoded layer (what the JS shows)."""
  q = np.frombuffer(zlib.decompress(base64.b64decode(layer["maps"])), np.uint8)
  row_max = np.frombuffer(base64.b64decode(layer["row_max"]), "<f4")
  return (
    q.reshape(num_images, -1, layer["key_side"] ** 2) / 255.0 * row_max.reshape(num_images, -1, 1)
  ).astype(np.float32)


def _images_b64(images: np.ndarray) -> str:
  return base64.b64encode(np.ascontiguousarray(figures.to_uint8(images)).tobytes()).decode("ascii")


def _gamma(params, name: str) -> float | None:
  node = params
  for part in name.split("/"):
    node = node.get(part) if hasattr(node, "get") else None
    if node is None:
      return None
  return float(np.asarray(node["gamma"])) if "gamma" in node else None


def _generator_maps(run, z, y, strides, shapes):
  """Images and β (stored queries only) of G on (z, y), in equal chunks (one compiled program)."""
  per_image = sum(q * q * k * k * 4 for _, q, k in shapes) or 1
  chunk = sharding.round_up(max(1, min(len(z), CHUNK_BYTES // per_image)), run.mesh.size)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(run.mesh))
  images, kept = [], {name: [] for name, _, _ in shapes}
  for start in range(0, len(z), chunk):
    n = min(chunk, len(z) - start)
    zc, yc = np.resize(z[start : start + n], (chunk, z.shape[1])), np.resize(y[start : start + n], chunk)
    out, maps = jax.device_get(run.programs.sampler.with_attention(run.state, put(zc), put(yc)))
    images.append(np.asarray(out)[:n])
    for name, q, _ in shapes:
      kept[name].append(np.asarray(maps[name], np.float32)[:n][:, stored_queries(q, strides[name])])
  return np.concatenate(images), {name: np.concatenate(v) for name, v in kept.items()}


def _discriminator_maps(run, images, labels, strides, shapes):
  """Encoded-to-be β of D on real images, a chunk of images at a time."""
  chunk = max(1, CHUNK_BYTES // (sum(q * q * k * k * 4 for _, q, k in shapes) or 1))
  kept = {name: [] for name, _, _ in shapes}
  for start in range(0, len(images), chunk):
    sown = sampling.discriminator_attention(
      run.programs.discriminator, run.state, images[start : start + chunk], labels[start : start + chunk]
    )
    for name, q, _ in shapes:
      kept[name].append(np.asarray(sown[name], np.float32)[:, stored_queries(q, strides[name])])
  return {name: np.concatenate(v) for name, v in kept.items()}


def real_images(run, classes, n: int, max_batches: int = 16):
  """Up to n real training images, one per class of ``classes`` where the first batches have
  it (then any), with their labels."""
  from sagan_jax.data import pipeline  # tf.data: only D's part reads data

  iterator = pipeline.create_train_iterator(run.config, workdir=run.workdir)
  found, spare = {}, []
  for _ in range(max_batches):
    batch = next(iterator)
    for image, label in zip(batch["image"], batch["label"], strict=True):
      if int(label) in classes and int(label) not in found:
        found[int(label)] = image
      elif len(spare) < n:
        spare.append((image, int(label)))
    if len(found) >= min(n, len(classes)):
      break
  picked = [(found[c], c) for c in classes if c in found][:n]
  picked += spare[: n - len(picked)]
  return np.stack([p[0] for p in picked]), np.asarray([p[1] for p in picked], np.int32)


def collect(
  run, *, columns=None, num_real=None, budget: int = DEFAULT_BUDGET_BYTES, query_stride=None, real=None
) -> dict:
  """The explorer's data for the page (JSON-ready).

  ``run``: a run.Run (open_run's, or any with config, state, programs, mesh). ``real``:
  (images, labels) for D instead of the run's training data.
  """
  config, m = run.config, run.config.model
  grid_classes = [int(c) for c in sampling.grid_classes(m.num_classes)]
  p = plan(config, len(grid_classes), columns, num_real, budget, query_stride)
  rows, cols = p["rows"], p["columns"]
  grid_rows = list(range(len(grid_classes)))  # by row: an unconditional grid's rows share label 0
  if rows < len(grid_rows):
    grid_rows = grid_rows[:: max(1, -(-len(grid_rows) // rows))][:rows]
  classes = [grid_classes[r] for r in grid_rows]
  rows = len(classes)
  out = {
    "step": int(run.step),
    "resolution": m.resolution,
    "channels": m.image_channels,
    "pool_kv": bool(m.pool_kv),
    "budget_bytes": budget,
    "networks": {},
    "layers": [],
  }
  for which in ("g", "d"):
    net, shapes = NETWORKS[which], layer_shapes(config, which)
    if not shapes:
      out["networks"][net] = {"absent": absent_reason(config, which)}
      continue
    strides = {name: p["strides"][net, name] for name, _, _ in shapes}
    if which == "g":
      z, y, _, grid_cols = sampling.grid_inputs(config, 1)
      keep = np.asarray([r * grid_cols + j for r in grid_rows for j in range(cols)])
      images, maps = _generator_maps(run, z[keep], y[keep], strides, shapes)
      labels = y[keep]
      caption = (
        f"EMA G samples: the first {cols} column(s) of the training sample grid "
        f"(fixed seeds), one row per class"
      )
      params = run.state.ema_params
    else:
      try:
        images, labels = real if real is not None else real_images(run, classes, p["real"])
      except UserError as e:  # a converted or copied run on a machine without its data
        out["networks"][net] = {"absent": f"D's maps need real training images, which do not load here: {e}"}
        continue
      images, labels = np.asarray(images)[: p["real"]], np.asarray(labels)[: p["real"]]
      maps = _discriminator_maps(run, images, labels, strides, shapes)
      caption = "Real training images (D's input), one per class where the first batches hold it"
      params = run.state.d_params
    out["networks"][net] = {
      "images": _images_b64(images),
      "labels": [int(label) for label in labels],
      "count": int(len(images)),
      "columns": cols if which == "g" else len(images),
      "caption": caption,
    }
    for name, q, k in shapes:
      beta = maps[name]
      if beta.shape[1:] != (len(stored_queries(q, strides[name])), k * k):
        raise ValueError(f"{net} {name}: β of shape {beta.shape} is not a {q}² query by {k}² key map")
      stride = strides[name]
      out["layers"].append(
        {
          "id": f"{net}/{name}",
          "net": net,
          "name": name,
          "query_side": q,
          "key_side": k,
          "stride": stride,
          "stored_side": int(math.isqrt(beta.shape[1])),
          "gamma": _gamma(params, name),
          **_encode_rows(beta),
        }
      )
  out["raw_bytes"] = sum(layer["raw_bytes"] for layer in out["layers"])
  return out
