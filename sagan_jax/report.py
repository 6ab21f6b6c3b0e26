"""The run report: one self-contained HTML page about a run.

python -m sagan_jax.report --workdir=DIR [--step=N] [--figures=false] [--out=PATH]
    [--columns=K] [--num_real=N] [--budget_mb=M] [--query_stride=S]

Writes DIR/report.html, which needs no other file and no network: the attention explorer
(point at any pixel of an EMA-G sample or a real image and see that query's attention map β,
for every attention layer of G and D; sagan_jax/explorer.py collects the maps), γ of each
attention layer over training, the sample grid over the steps (a slider through
samples/step_*.png), the training curves from the TensorBoard events (losses, D outputs,
gradient norms, steps/s), the evaluations of metrics.jsonl with their protocol, and the config.
The page is sagan_jax/report_page.html with sagan_jax/report_page.js and the run's data inlined.
Every file goes through a path layer (etils.epath; TensorFlow's gfile for the event files), so
DIR may be a gs:// URL, and nothing of a remote run is written to the local disk.
"""
import base64
import html
import importlib.resources
import json
import logging
import os
import re

from sagan_jax import cli

if __name__ == "__main__":
  cli.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

import numpy as np
from etils import epath

from sagan_jax import checkpointing
from sagan_jax import figures as figures_lib

MAX_POINTS = 1500   # points per curve on the page (longer series are thinned evenly)
MAX_FRAMES = 60     # sample grids in the slider (evenly spaced over the run, the last kept)
# metrics.jsonl fields that are not scores: not plotted (they stay in the table)
EVALUATION_FIELDS = ("step", "num_samples", "seconds", "is_splits", "is_std")
CURVE_GROUPS = (
    ("Losses", ("d_loss", "g_loss")),
    ("D outputs", ("d_real", "d_fake")),
    ("Gradient norms", ("d_grad_norm", "g_grad_norm")),
    ("Attention γ", ("gamma/",)),
    ("Throughput (steps/s)", ("steps_per_sec",)),
)


def read_scalars(workdir: str) -> dict:
  """{tag: [(step, value)]} of every scalar in the run's TensorBoard event files."""
  import tensorflow as tf
  series = {}
  pattern = os.fspath(checkpointing.workdir_path(workdir) / "events.out.tfevents.*")
  for path in sorted(tf.io.gfile.glob(pattern)):  # gs:// through TF's own file systems
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.HasField("tensor") and value.tensor.dtype in (tf.float32.as_datatype_enum,
                                                                tf.float64.as_datatype_enum):
          array = tf.make_ndarray(value.tensor)
          if array.size == 1:
            series.setdefault(value.tag, []).append((event.step, float(array.reshape(()))))
        elif value.HasField("simple_value"):
          series.setdefault(value.tag, []).append((event.step, value.simple_value))
  return {tag: sorted(dict(points).items()) for tag, points in series.items()}


def read_evaluations(workdir: str) -> list:
  """The evaluations of metrics.jsonl; a line that is not a JSON object (half a line an older
  writer left when it was killed, a hand edit) is skipped with a warning naming it."""
  path = checkpointing.workdir_path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  evaluations, skipped = [], []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      evaluation = json.loads(line)
    except ValueError:
      evaluation = None
    if isinstance(evaluation, dict) and "step" in evaluation:
      evaluations.append(evaluation)
    else:
      skipped.append(number)
  if skipped:
    logging.warning("%s: skipped line(s) %s, which are not whole evaluations", path, skipped)
  return evaluations


def _file_data(path: epath.Path) -> str:
  return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _img(path: epath.Path) -> str:
  return f'<img alt="{html.escape(path.name)}" src="{_file_data(path)}">'


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
    tags = [t for t in sorted(scalars) if any(t == p or (p.endswith("/") and t.startswith(p))
                                              for p in prefixes)]
    used.update(tags)
    if tags:
      target = "plot-gamma" if prefixes == ("gamma/",) else "plots-train"
      plots.append({"target": target, "title": title,
                    "series": [{"label": _series_label(t), "points": _thin(scalars[t])} for t in tags]})
  for tag in sorted(set(scalars) - used):
    plots.append({"target": "plots-other", "title": tag,
                  "series": [{"label": tag, "points": _thin(scalars[tag])}]})
  names = sorted({k for e in evaluations for k, v in e.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and k not in EVALUATION_FIELDS})
  for name in names:
    counts = sorted({e.get("num_samples") for e in evaluations if name in e}, key=str)
    series = [{"label": f"{name} ({n} samples)" if n else name,
               "points": sorted([e["step"], e[name]] for e in evaluations
                                if name in e and e.get("num_samples") == n)} for n in counts]
    plots.append({"target": "plots-eval", "title": name, "series": series, "opts": {"markers": True}})
  return plots


def _step_pngs(folder: epath.Path) -> list:
  """folder/step_<digits>[_…].png, by name (the step is zero-padded); others are not the run's."""
  if not folder.is_dir():
    return []
  return sorted((p for p in folder.glob("step_*.png")
                 if re.fullmatch(r"step_\d+(_.*)?\.png", p.name)), key=lambda p: p.name)


def _latest(folder: epath.Path) -> list:
  """The figures of the newest step in ``folder``."""
  paths = _step_pngs(folder)
  if not paths:
    return []
  step = paths[-1].name.split("_")[1].removesuffix(".png")
  return [p for p in paths if p.name.split("_")[1].removesuffix(".png") == step]


def sample_frames(workdir: str, most: int = MAX_FRAMES) -> list:
  """[{'step', 'src'}] of samples/step_*.png, at most ``most`` evenly spaced (the last kept)."""
  paths = [p for p in _step_pngs(checkpointing.workdir_path(workdir) / "samples")
           if re.fullmatch(r"step_\d+\.png", p.name)]
  paths = [paths[i] for (i,) in _thin([(i,) for i in range(len(paths))], most)]
  return [{"step": int(p.name[5:-4]), "src": _file_data(p)} for p in paths]


def colour_maps() -> dict:
  """{name: base64 of a 256×3 uint8 lookup table}: the figures' inferno first, viridis."""
  from matplotlib import colormaps
  luts = {"inferno": figures_lib._colormap(np.linspace(0, 1, 256))}
  luts["viridis"] = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
  return {k: base64.b64encode(np.ascontiguousarray(v, np.uint8).tobytes()).decode() for k, v in luts.items()}


def _template(name: str) -> str:
  return importlib.resources.files("sagan_jax").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(value) -> str:
  """JSON safe inside <script>: no '</' can close the element."""
  return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _model_summary(config) -> str:
  from sagan_jax import config as config_lib
  m = config.model
  sides = lambda w: ", ".join(f"feat{s}" for s in config_lib.attention_sides(m, w)) or "none"
  block = m.get("attention_block", "self_attention")
  form = ("residual control block (Table 1), no attention" if block == "residual" else
          "pooled keys/values 2×2 (released code)" if m.pool_kv else "paper's form (no pooling)")
  return (f"{m.resolution}×{m.resolution}, {m.num_classes} classes, ch={m.ch}; attention G: {sides('g')}; "
          f"D: {sides('d')}; {form}; impl {m.attention_impl}")


def write_report(workdir: str, out: str | None = None, figures: bool = True, *, step=None,
                 run=None, columns=None, num_real=None, budget_bytes=None,
                 query_stride=None) -> str:
  """Writes the page; returns its path.

  ``figures``: open the checkpoint (the latest, or ``step``; or use the opened ``run``) and build
  the attention explorer; False: the page without it (no JAX program runs). ``columns``,
  ``num_real``, ``budget_bytes`` and ``query_stride`` size the explorer (see explorer.plan).
  """
  from sagan_jax import config as config_lib
  from sagan_jax.errors import UserError
  where = checkpointing.workdir_path(workdir)
  if not (where / "config.json").exists():
    raise UserError(f"{workdir} holds no training run (no config.json); pass a run's --workdir")
  config = config_lib.load_run_config(os.fspath(where))  # a damaged file: one UserError line
  config_text = json.dumps(json.loads((where / "config.json").read_text()), indent=1)
  data = {"luts": colour_maps(), "explorer": None, "explorer_absent": ""}
  if figures:
    from sagan_jax import explorer
    if run is None and not checkpointing.checkpoint_steps(workdir):
      data["explorer_absent"] = "The run has no checkpoint yet: no attention maps to explore."
    else:
      if run is None:
        from sagan_jax.run import open_run
        run = open_run(workdir, step)
      data["explorer"] = explorer.collect(
          run, columns=columns, num_real=num_real, query_stride=query_stride,
          budget=budget_bytes or explorer.DEFAULT_BUDGET_BYTES)
      config = run.config
  else:
    data["explorer_absent"] = "Built without the explorer (--figures=false)."
  scalars, evaluations = read_scalars(workdir), read_evaluations(workdir)
  data["plots"] = curve_plots(scalars, evaluations)
  data["samples"] = sample_frames(workdir)
  last = {tag: points[-1] for tag, points in scalars.items()}
  e = data["explorer"]
  parts = [f"<h1>sagan_jax run: {html.escape(os.fspath(where))}</h1>",
           f"<p class='summary'>{html.escape(_model_summary(config))}</p>"]
  if "d_loss" in last:
    parts.append(f"<p class='summary'>Last logged step {last['d_loss'][0]}: "
                 + ", ".join(f"{t} = {v:.4g}" for t, (_, v) in sorted(last.items())
                             if not t.startswith("gamma")) + "</p>")
  parts.append("<h2>Attention explorer" + (f" (checkpoint of step {e['step']})" if e else "")
               + "</h2>")
  if e and e["layers"]:
    strided = [l for l in e["layers"] if l["stride"] > 1]
    parts.append(
        "<p class='note'>Point at any pixel of the large image or of a thumbnail: the overlay is "
        "that query position's attention β over all key positions (what the layer's forward pass "
        "computes; keys at their pooled positions when the layer pools them), the red dot the "
        "query cell, the cyan box the most attended key. Click to pin a query (click again to "
        "release); pick the layer (G's layers show EMA samples, D's real images), the colour "
        "scale and the opacity. Maps are stored as 8 bits relative to each map's largest weight "
        f"({e['raw_bytes'] / 2 ** 20:.1f} MiB of maps before compression)."
        + (" To keep the page small, only every s-th query cell is stored for "
           + ", ".join(f"{l['id']} (s = {l['stride']})" for l in strided)
           + "; a pointer snaps to the nearest stored query." if strided else "")
        + "</p>")
  parts.append("<div id='explorer'></div>")
  parts.append("<h2>Is attention used? γ over training</h2><p class='note'>y = γ·o + x: γ starts "
               "at 0; while it stays near 0 the layer passes its input through and its maps do "
               "not shape the output.</p>")
  gammas = sorted((t, v) for t, (_, v) in last.items() if t.startswith("gamma/"))
  if gammas:
    parts.append("<table><tr><th>layer</th><th>γ at the last logged step</th></tr>"
                 + "".join(f"<tr><td>{html.escape(_series_label(t))}</td><td>{v:.4g}</td></tr>"
                           for t, v in gammas) + "</table>")
  else:
    parts.append("<p class='note'>No γ logged (no attention or control layer, or no events yet).</p>")
  parts.append("<div class='plots' id='plot-gamma'></div>")
  parts.append("<h2>Samples over training</h2><p class='note'>EMA G, fixed seeds, one row per "
               "class (samples/step_*.png)" + (f"; {len(data['samples'])} of them" if data["samples"]
                                               else ": none written yet") + ".</p><div id='samples'></div>")
  parts.append("<h2>Training curves</h2><div class='plots' id='plots-train'></div>"
               "<div class='plots' id='plots-other'></div>")
  if evaluations:
    keys = [k for k in evaluations[-1] if not isinstance(evaluations[-1][k], (list, dict))]
    parts.append("<h2>Evaluations (metrics.jsonl)</h2><div class='plots' id='plots-eval'></div>"
                 "<table><tr>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
    for ev in evaluations:
      parts.append("<tr>" + "".join(f"<td>{html.escape(str(ev.get(k, '')))}</td>" for k in keys) + "</tr>")
    parts.append("</table>")
    protocol = {k: v for k, v in evaluations[-1].items() if isinstance(v, (list, dict))
                and k not in ("class_confusion", "per_class_fid", "class_accuracy_per_class")}
    if protocol:
      parts.append(f"<details><summary>Protocol of the last evaluation</summary><pre>"
                   f"{html.escape(json.dumps(protocol, indent=1))}</pre></details>")
  static = _latest(where / "attention") + _latest(where / "sheets")
  if static:
    parts.append("<h2>Figures of python -m sagan_jax.visualize</h2><details class='static'><summary>"
                 f"{len(static)} figure(s)</summary>"
                 + "".join(f"<h3>{html.escape(p.name)}</h3>{_img(p)}" for p in static)
                 + "</details>")
  parts.append(f"<h2>Config</h2><details><summary>config.json</summary><pre>{html.escape(config_text)}"
               "</pre></details>")
  script = _template("report_page.js")
  if "</script" in script.lower():
    raise ValueError("report_page.js must not contain '</script'")
  fields = {"TITLE": html.escape(f"sagan_jax report: {where.name}"),
            "BODY": "\n".join(parts), "SCRIPT": script, "DATA": _json_for_script(data)}
  page = re.sub(r"\{\{(TITLE|BODY|SCRIPT|DATA)\}\}", lambda match: fields[match.group(1)],
                _template("report_page.html"))
  path = checkpointing.workdir_path(out) if out else where / "report.html"
  write_page(path, page)
  return os.fspath(path)


def write_page(path: epath.Path, page: str) -> None:
  """Atomically (a full disk or a kill leaves the old page or none, never half of one)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  checkpointing.write_whole(path, page)


def _main(argv):
  from absl import flags
  cli.start(argv, distributed=False)
  f = flags.FLAGS
  print(cli.run(write_report, f.workdir, f.out, f.figures, step=f.step, columns=f.columns,
                num_real=f.num_real, budget_bytes=int(f.budget_mb * 2 ** 20) if f.budget_mb else None,
                query_stride=f.query_stride))


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "A training run's --workdir.")
  flags.DEFINE_string("out", None, "Output HTML file (default: WORKDIR/report.html).")
  flags.DEFINE_integer("step", None, "Checkpoint of the explorer (default: the latest).")
  flags.DEFINE_bool("figures", True, "Open the checkpoint and build the attention explorer "
                    "(false: curves, samples and config only; no JAX program runs).")
  flags.DEFINE_integer("columns", None, "Explorer: G samples per class row (default: as many "
                       "as fit the budget, at most 5).")
  flags.DEFINE_integer("num_real", None, "Explorer: real images for D's layers (default: one per class row).")
  flags.DEFINE_float("budget_mb", None, "Explorer: MiB of 8-bit maps on the page (default 3).")
  flags.DEFINE_integer("query_stride", None, "Explorer: store every S-th query cell of each "
                       "layer (default: 1 unless the budget needs coarser).")
  flags.mark_flags_as_required(["workdir"])
  app.run(_main, flags_parser=cli.parse_flags)
