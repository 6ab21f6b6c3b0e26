"""The run report: one self-contained HTML page about a run.

python -m sagan_jax.report --workdir=DIR [--step=N] [--figures=false] [--out=PATH]
    [--columns=K] [--num_real=N] [--budget_mb=M] [--query_stride=S]

Writes DIR/report.html, which needs no other file and no network: the attention explorer
(point at any pixel of an EMA-G sample or a real image and see that query's attention map β,
for every attention layer of G and D; explorer.py collects the maps), γ of each attention
layer over training, the sample grid over the steps (a slider through samples/step_*.png), the
training curves from the TensorBoard events (losses, D outputs, gradient norms, steps/s), the
evaluations of metrics.jsonl with their protocol, and the config.
The page is page.html, which holds all of its markup, with page.js and the run's data (data.py
reads it) inlined; the script draws the data into the page. Every file goes through a path
layer (etils.epath; TensorFlow's gfile for the event files), so DIR may be a gs:// URL, and
nothing of a remote run is written to the local disk.
"""

import html
import importlib.resources
import json
import math
import os
import re

# Only the standard library up here: `python -m sagan_jax.report` imports this package before
# its __main__ holds SIGINT back, so the libraries load in write_report.
PLACEHOLDERS = re.compile(r"\{\{(TITLE|RUN|MODEL|DATA|SCRIPT)\}\}")


def _resource(name: str) -> str:
  return importlib.resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _finite(value):
  """``value`` with every NaN or infinity (a diverged loss, a damaged file) as None: JSON has
  no such numbers, and the browser's parser refuses the page's data otherwise."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(v) for v in value]
  return value


def _json_for_script(value) -> str:
  """JSON safe inside <script>: with every '<' escaped, no '</script' can close the element
  and no '<!--' can change how the browser reads it; non-finite numbers as null."""
  return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def write_report(
  workdir: str,
  out: str | None = None,
  figures: bool = True,
  *,
  step=None,
  run=None,
  columns=None,
  num_real=None,
  budget_bytes=None,
  query_stride=None,
) -> str:
  """Writes the page; returns its path.

  ``figures``: open the checkpoint (the latest, or ``step``; or use the opened ``run``) and build
  the attention explorer; False: the page without it (no JAX program runs). ``columns``,
  ``num_real``, ``budget_bytes`` and ``query_stride`` size the explorer (see explorer.plan).
  """
  from sagan_jax import checkpointing
  from sagan_jax import run as run_lib
  from sagan_jax import workdir as workdir_lib
  from sagan_jax.errors import UserError
  from sagan_jax.report import data as data_lib

  where = workdir_lib.path(workdir)
  if not (where / workdir_lib.CONFIG).exists():
    raise UserError(f"{workdir} holds no training run (no config.json); pass a run's --workdir")
  config = run_lib.load_config(os.fspath(where))  # a damaged file: one UserError line
  maps, absent = None, ""
  if figures:
    from sagan_jax.report import explorer

    if run is None and not checkpointing.checkpoint_steps(workdir):
      absent = "The run has no checkpoint yet: no attention maps to explore."
    else:
      if run is None:
        run = run_lib.open_run(workdir, step)
      maps = explorer.collect(
        run,
        columns=columns,
        num_real=num_real,
        query_stride=query_stride,
        budget=budget_bytes or explorer.DEFAULT_BUDGET_BYTES,
      )
      config = run.config
  else:
    absent = "Built without the explorer (--figures=false)."
  data = {**data_lib.page_data(workdir), "explorer": maps, "explorer_absent": absent}
  script = _resource("page.js")
  if "</script" in script.lower():
    raise ValueError("page.js must not contain '</script'")
  fields = {
    "TITLE": html.escape(f"sagan_jax report: {where.name}"),
    "RUN": html.escape(os.fspath(where)),
    "MODEL": html.escape(data_lib.model_summary(config)),
    "DATA": _json_for_script(data),
    "SCRIPT": script,
  }
  page = PLACEHOLDERS.sub(lambda match: fields[match.group(1)], _resource("page.html"))
  path = workdir_lib.path(out) if out else where / workdir_lib.REPORT
  path.parent.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_atomic(path, page)  # a full disk or a kill leaves the old page or none
  return os.fspath(path)
