"""One self-contained HTML page about a run:
python -m sagan_jax.report --workdir=DIR [--figures=false] [--out=PATH]

Writes DIR/report.html (images embedded, no other files needed): the config, the
training curves from the TensorBoard events (losses, D outputs, γ of each attention
layer, gradient norms, steps/s), the evaluations of metrics.jsonl with their protocol,
the latest sample grid, the attention maps and class sheets. Unless --figures=false,
missing attention figures for the latest checkpoint are drawn first
(as `python -m sagan_jax.visualize`).
"""
import base64
import glob
import html
import io
import json
import os

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
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
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
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _png_data(fig) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90)
  return base64.b64encode(buf.getvalue()).decode()


def _img(data: str, alt: str) -> str:
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _file_img(path: str) -> str:
  with open(path, "rb") as f:
    return _img(base64.b64encode(f.read()).decode(), os.path.basename(path))


def curve_plots(scalars: dict, evaluations: list) -> list:
  """(title, base64 PNG) per curve group with data, then one per evaluated metric."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  out = []
  groups = list(CURVE_GROUPS)
  metric_names = sorted({k for e in evaluations for k, v in e.items()
                         if k in ("fid", "fid_fmnist", "is", "intra_fid")})
  for title, prefixes in groups:
    tags = [t for t in sorted(scalars) if any(t == p or (p.endswith("/") and t.startswith(p))
                                              for p in prefixes)]
    if not tags:
      continue
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for tag in tags:
      ax.plot(*zip(*scalars[tag]), label=tag)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.append((title, _png_data(fig)))
    plt.close(fig)
  for name in metric_names:
    points = [(e["step"], e[name]) for e in evaluations if name in e]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("step")
    ax.set_title(name)
    fig.tight_layout()
    out.append((name, _png_data(fig)))
    plt.close(fig)
  return out


def _latest(pattern: str) -> list:
  paths = sorted(glob.glob(pattern))
  if not paths:
    return []
  step = os.path.basename(paths[-1]).split("_")[1]
  return [p for p in paths if os.path.basename(p).split("_")[1] == step]


def write_report(workdir: str, out: str | None = None, figures: bool = True) -> str:
  from sagan_jax.errors import UserError
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} holds no training run (no config.json); pass a run's --workdir")
  if figures:
    from sagan_jax import checkpointing, visualize
    steps = checkpointing.checkpoint_steps(workdir)
    if steps and not glob.glob(os.path.join(workdir, "attention", f"step_{steps[-1]:08d}_*.png")):
      visualize.write_run_figures(workdir, network="generator")
  with open(os.path.join(workdir, "config.json")) as f:
    config_text = json.dumps(json.load(f), indent=1)
  scalars, evaluations = read_scalars(workdir), read_evaluations(workdir)
  parts = [f"<h1>sagan_jax run: {html.escape(os.path.abspath(workdir))}</h1>"]
  last = {tag: points[-1] for tag, points in scalars.items()}
  if "d_loss" in last:
    parts.append(f"<p>Last logged step {last['d_loss'][0]}: "
                 + ", ".join(f"{t} = {v:.4g}" for t, (_, v) in sorted(last.items())
                             if not t.startswith("gamma")) + "</p>")
  samples = _latest(os.path.join(workdir, "samples", "step_*.png"))
  if samples:
    parts.append(f"<h2>Samples ({os.path.basename(samples[-1])}, EMA G, one row per class)</h2>")
    parts.append(_file_img(samples[-1]))
  attention = _latest(os.path.join(workdir, "attention", "step_*.png"))
  if attention:
    parts.append("<h2>Attention maps</h2><p>Per row: the image with its query points, then "
                 "each query's attention over key positions (box: the most attended cell).</p>")
    parts += [f"<h3>{html.escape(os.path.basename(p))}</h3>{_file_img(p)}" for p in attention]
  sheets = _latest(os.path.join(workdir, "sheets", "step_*.png"))
  if sheets:
    parts.append("<h2>Class sheets</h2>")
    parts += [f"<h3>{html.escape(os.path.basename(p))}</h3>{_file_img(p)}" for p in sheets]
  plots = curve_plots(scalars, evaluations)
  if plots:
    parts.append("<h2>Curves</h2>")
    parts += [_img(data, title) for title, data in plots]
  if evaluations:
    keys = [k for k in evaluations[-1] if not isinstance(evaluations[-1][k], (list, dict))]
    parts.append("<h2>Evaluations (metrics.jsonl)</h2><table><tr>"
                 + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
    for e in evaluations:
      parts.append("<tr>" + "".join(f"<td>{html.escape(str(e.get(k, '')))}</td>" for k in keys) + "</tr>")
    parts.append("</table>")
  parts.append(f"<h2>Config</h2><pre>{html.escape(config_text)}</pre>")
  style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} img{max-width:100%;"
           "image-rendering:pixelated;margin:4px} table{border-collapse:collapse;font-size:12px}"
           " td,th{border:1px solid #ccc;padding:2px 6px}")
  page = (f"<!doctype html><html><head><meta charset='utf-8'><title>sagan_jax report</title>"
          f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
  out = out or os.path.join(workdir, "report.html")
  with open(out, "w") as f:
    f.write(page)
  return out


def _main(argv):
  from absl import flags
  from sagan_jax import cli
  cli.start(argv, distributed=False)
  f = flags.FLAGS
  print(cli.run(write_report, f.workdir, f.out, f.figures))


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "A training run's --workdir.")
  flags.DEFINE_string("out", None, "Output HTML file (default: WORKDIR/report.html).")
  flags.DEFINE_bool("figures", True, "Draw missing attention figures of the latest checkpoint first.")
  flags.mark_flags_as_required(["workdir"])
  app.run(_main)
