"""The report's data: what the page shows of a run, read from its workdir (the TensorBoard
event files, metrics.jsonl, samples/, the figures of python -m sagan_jax.visualize,
config.json) and put in JSON-ready form. No markup here: page.html lays the page out and
page.js draws these values into it."""

import base64
import json
import logging
import math
import os
import re

import numpy as np
from etils import epath

from sagan_jax import config as config_lib
from sagan_jax import figures as figures_lib
from sagan_jax import workdir as workdir_lib

MAX_POINTS = 1500  # points per curve on the page (longer series are thinned evenly)
MAX_FRAMES = 60  # sample grids in the slider (evenly spaced over the run, the last kept)
# metrics.jsonl fields that are not scores: not plotted (they stay in the table)
EVALUATION_FIELDS = ("step", "num_samples", "seconds", "is_splits", "is_std", "kid_std")
# metrics.jsonl's per-class results: too long for the protocol of the last evaluation
PER_CLASS_FIELDS = ("class_confusion", "per_class_fid", "class_accuracy_per_class")
CURVE_GROUPS = (
  ("Losses", ("d_loss", "g_loss")),
  ("D outputs", ("d_real", "d_fake")),
  ("Gradient norms", ("d_grad_norm", "g_grad_norm")),
  ("Attention γ", ("gamma/",)),
  ("Throughput (steps/s)", ("steps_per_sec",)),
)


def read_scalars(workdir: str) -> dict:
  """{tag: [(step, value)]} of every finite scalar in the run's TensorBoard event files. A file
  that ends in a damaged record (a kill or a full disk while it was written) gives what comes
  before it, with a warning naming it."""
  import tensorflow as tf

  series = {}
  pattern = os.fspath(workdir_lib.path(workdir, workdir_lib.EVENTS_GLOB))
  for path in sorted(tf.io.gfile.glob(pattern)):  # gs:// through TF's own file systems
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          if value.HasField("tensor") and value.tensor.dtype in (
            tf.float32.as_datatype_enum,
            tf.float64.as_datatype_enum,
          ):
            array = tf.make_ndarray(value.tensor)
            number = float(array.reshape(())) if array.size == 1 else None
          elif value.HasField("simple_value"):
            number = value.simple_value
          else:
            continue
          if number is not None and math.isfinite(number):  # a NaN loss cannot be plotted
            series.setdefault(value.tag, []).append((event.step, number))
    except tf.errors.DataLossError as e:
      logging.warning(
        "%s ends in a damaged record (%s); the report shows what comes before it",
        path,
        " ".join(str(e).split())[:160],
      )
  return {tag: sorted(dict(points).items()) for tag, points in series.items()}


def _file_data(path: epath.Path) -> str:
  return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _thin(points: list, most: int = MAX_POINTS) -> list:
  """At most ``most`` points of a series, evenly spaced, the last always kept."""
  if len(points) <= most:
    return [list(p) for p in points]
  keep = sorted(set(np.linspace(0, len(points) - 1, most).round().astype(int)))
  return [list(points[i]) for i in keep]


def _series_label(tag: str) -> str:
  """'gamma/g/attention16/gamma' -> 'G attention16 (feat16)'."""
  parts = tag.split("/")
  if len(parts) >= 3 and parts[0] == "gamma":
    layer = "/".join(parts[2:-1] if parts[-1] == "gamma" else parts[2:])
    side = layer.rsplit("attention", 1)[-1]
    return f"{parts[1].upper()} {layer}" + (f" (feat{side})" if side.isdigit() else "")
  return tag


def curve_plots(scalars: dict, evaluations: list) -> list:
  """The page's plots: {'target', 'title', 'series': [{'label', 'points'}]} per curve group
  with data (γ first, on its own), any other scalar tag, and one per evaluated metric (a
  series per sample count, so periodic and final evaluations are not mixed)."""
  plots, used = [], set()
  for title, prefixes in CURVE_GROUPS:
    tags = [
      t for t in sorted(scalars) if any(t == p or (p.endswith("/") and t.startswith(p)) for p in prefixes)
    ]
    used.update(tags)
    if tags:
      target = "plot-gamma" if prefixes == ("gamma/",) else "plots-train"
      plots.append(
        {
          "target": target,
          "title": title,
          "series": [{"label": _series_label(t), "points": _thin(scalars[t])} for t in tags],
        }
      )
  for tag in sorted(set(scalars) - used):
    plots.append(
      {"target": "plots-other", "title": tag, "series": [{"label": tag, "points": _thin(scalars[tag])}]}
    )
  names = sorted(
    {
      k
      for e in evaluations
      for k, v in e.items()
      if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in EVALUATION_FIELDS
    }
  )
  for name in names:
    counts = sorted({e.get("num_samples") for e in evaluations if name in e}, key=str)
    series = [
      {
        "label": f"{name} ({n} samples)" if n else name,
        "points": sorted(
          [e["step"], e[name]] for e in evaluations if name in e and e.get("num_samples") == n
        ),
      }
      for n in counts
    ]
    plots.append({"target": "plots-eval", "title": name, "series": series, "opts": {"markers": True}})
  return plots


def last_logged(scalars: dict) -> dict | None:
  """{'step', 'values': [[tag, value as text]]} of the last logged training step, every tag
  but γ's (which has its own table); None before any d_loss is logged."""
  last = {tag: points[-1] for tag, points in scalars.items()}
  if "d_loss" not in last:
    return None
  return {
    "step": last["d_loss"][0],
    "values": [[t, f"{v:.4g}"] for t, (_, v) in sorted(last.items()) if not t.startswith("gamma")],
  }


def gamma_rows(scalars: dict) -> list:
  """[[layer, γ as text]] of every attention (or control) layer at its last logged step."""
  return [
    [_series_label(t), f"{points[-1][1]:.4g}"]
    for t, points in sorted(scalars.items())
    if t.startswith("gamma/")
  ]


def evaluation_table(evaluations: list) -> dict | None:
  """{'columns', 'rows'}: the last evaluation's fields that are not lists or objects, and a row
  of texts per evaluation; None without evaluations."""
  if not evaluations:
    return None
  columns = [k for k, v in evaluations[-1].items() if not isinstance(v, (list, dict))]
  return {"columns": columns, "rows": [[str(e.get(k, "")) for k in columns] for e in evaluations]}


def last_protocol(evaluations: list) -> str | None:
  """The last evaluation's protocol (its list and object fields but the per-class results) as
  indented JSON; None when it has none."""
  protocol = {
    k: v
    for k, v in (evaluations[-1] if evaluations else {}).items()
    if isinstance(v, (list, dict)) and k not in PER_CLASS_FIELDS
  }
  return json.dumps(protocol, indent=1) if protocol else None


def _step_pngs(folder: epath.Path) -> list:
  """folder/step_<digits>[_…].png, by name (the step is zero-padded); others are not the run's."""
  if not folder.is_dir():
    return []
  return sorted(
    (p for p in folder.glob("step_*.png") if re.fullmatch(r"step_\d+(_.*)?\.png", p.name)),
    key=lambda p: p.name,
  )


def _latest(folder: epath.Path) -> list:
  """The figures of the newest step in ``folder``."""
  paths = _step_pngs(folder)
  if not paths:
    return []
  step = paths[-1].name.split("_")[1].removesuffix(".png")
  return [p for p in paths if p.name.split("_")[1].removesuffix(".png") == step]


def sample_frames(workdir: str, most: int = MAX_FRAMES) -> list:
  """[{'step', 'src'}] of samples/step_*.png, at most ``most`` evenly spaced (the last kept)."""
  paths = [
    p
    for p in _step_pngs(workdir_lib.path(workdir, workdir_lib.SAMPLES))
    if re.fullmatch(r"step_\d+\.png", p.name)
  ]
  paths = [paths[i] for (i,) in _thin([(i,) for i in range(len(paths))], most)]
  return [{"step": int(p.name[5:-4]), "src": _file_data(p)} for p in paths]


def static_figures(workdir: str) -> list:
  """[{'name', 'src'}] of the newest step's figures of python -m sagan_jax.visualize: the
  attention figures, then the class sheets."""
  where = workdir_lib.path(workdir)
  paths = _latest(where / workdir_lib.ATTENTION) + _latest(where / workdir_lib.SHEETS)
  return [{"name": p.name, "src": _file_data(p)} for p in paths]


def colour_maps() -> dict:
  """{name: base64 of a 256×3 uint8 lookup table}: the figures' inferno first, viridis."""
  from matplotlib import colormaps

  luts = {"inferno": figures_lib._colormap(np.linspace(0, 1, 256))}
  luts["viridis"] = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
  return {k: base64.b64encode(np.ascontiguousarray(v, np.uint8).tobytes()).decode() for k, v in luts.items()}


def model_summary(config) -> str:
  """One line on the model: resolution, classes, width, where attention sits and its form."""
  m = config.model
  sides = lambda w: ", ".join(f"feat{s}" for s in config_lib.attention_sides(m, w)) or "none"
  block = m.get("attention_block", "self_attention")
  form = (
    "residual control block (Table 1), no attention"
    if block == "residual"
    else "pooled keys/values 2×2 (released code)"
    if m.pool_kv
    else "paper's form (no pooling)"
  )
  return (
    f"{m.resolution}×{m.resolution}, {m.num_classes} classes, ch={m.ch}; attention G: {sides('g')}; "
    f"D: {sides('d')}; {form}; impl {m.attention_impl}"
  )


def no_logs_note(workdir: str, scalars: dict, evaluations: list) -> str:
  """What the page says when the workdir holds a model but no record of training (a run
  copied without its logs, or weights converted from another codebase): '' otherwise."""
  if scalars or evaluations or sample_frames(workdir):
    return ""
  return (
    "This workdir holds no training logs (no TensorBoard events, evaluations or sample grids): "
    "a run copied without them, or a model converted from another codebase. The page shows "
    "what its checkpoint and config give."
  )


def page_data(workdir: str) -> dict:
  """The page's data but the explorer's: colour maps, the last logged step, γ, the curves,
  the sample grids, the evaluations with the last protocol, the static figures, the config."""
  scalars, evaluations = read_scalars(workdir), workdir_lib.read_metrics_lines(workdir)
  return {
    "no_logs": no_logs_note(workdir, scalars, evaluations),
    "luts": colour_maps(),
    "last": last_logged(scalars),
    "gammas": gamma_rows(scalars),
    "plots": curve_plots(scalars, evaluations),
    "samples": sample_frames(workdir),
    "evaluations": evaluation_table(evaluations),
    "protocol": last_protocol(evaluations),
    "figures": static_figures(workdir),
    "config": json.dumps(workdir_lib.read_config_dict(workdir), indent=1),
  }
