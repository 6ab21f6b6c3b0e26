"""The run report as its user sees it: the page of a tiny trained run, opened from disk in a
real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; nothing downloaded),
shows for a clicked pixel the β row the forward pass computes, for every layer, and asks for
nothing over the network; its script draws the run's text, tables and figures into the page's
markup. The explorer's packing and size plan are checked without a browser."""

import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax import figures, programs, report, sampling, sharding
from sagan_jax import run as run_lib
from sagan_jax import workdir as workdir_lib
from sagan_jax.models.kernels import Kernels
from sagan_jax.report import explorer
from sagan_jax.run import Run, open_run

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]
LUT = figures._colormap(np.linspace(0, 1, 256)).astype(int)  # the page's default map (inferno)


# ------------------------------------------------------------------------------ no browser


def test_plan_fits_the_budget(smoke_config):
  from configs import fashion_mnist, sagan128

  default = fashion_mnist.get_config()
  p = explorer.plan(default, 10)
  # 10 class rows × 3 EMA samples + 10 real images, every query of feat16 over 16² keys
  assert (p["rows"], p["columns"], p["real"]) == (10, 3, 10)
  assert set(p["strides"].values()) == {1} and p["bytes"] == 40 * 256 * 256 <= explorer.DEFAULT_BUDGET_BYTES
  big = sagan128.get_config()
  big.model.attention_resolutions = (64,)
  p = explorer.plan(big, 10)
  assert p["columns"] == 1 and p["bytes"] <= explorer.DEFAULT_BUDGET_BYTES
  assert all(64 // s >= explorer.MIN_STORED_SIDE for s in p["strides"].values()), p
  big.model.pool_kv = True
  assert explorer.layer_shapes(big, "g") == [("attention64", 64, 32)]
  assert explorer.plan(big, 10, query_stride=2)["strides"] == {
    ("G", "attention64"): 2,
    ("D", "attention64"): 2,
  }
  smoke_config.model.attention_block = "residual"
  assert explorer.layer_shapes(smoke_config, "g") == []
  assert "residual control block" in explorer.absent_reason(smoke_config, "g")
  smoke_config.model.attention_resolutions = ()
  assert "no attention layer" in explorer.absent_reason(smoke_config, "d")


def test_maps_round_trip_within_quantisation():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 16 * 16, 8 * 8)) * 3
  beta = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
  for stride in (1, 2, 4):
    stored = explorer.stored_queries(16, stride)
    assert len(stored) == (16 // stride) ** 2
    encoded = {**explorer.encode_maps(beta, stride), "key_side": 8}
    back = explorer.decode_maps(encoded, 3)
    rows = beta[:, stored]
    assert back.shape == rows.shape
    assert np.all(np.abs(back - rows) <= rows.max(-1, keepdims=True) / 510 + 1e-8)
  assert list(explorer.stored_queries(4, 2)) == [1 * 4 + 1, 1 * 4 + 3, 3 * 4 + 1, 3 * 4 + 3]


# ------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fake_fmnist_dir):
  """A trained tiny run: the smoke config (attention at feat16 in G and D), whose train step
  tests/test_end_to_end.py compiles too (the session's XLA cache may hold it), samples at
  steps 2 and 4."""
  from configs import fashion_mnist
  from sagan_jax import train

  config = fashion_mnist.get_config("smoke")
  config.dataset.data_dir = fake_fmnist_dir
  config.sample_every_steps = 2
  workdir = str(tmp_path_factory.mktemp("report") / "run")
  train.train_and_evaluate(config, workdir)
  return workdir


def untrained_run(config, workdir, gamma=0.5):
  """A Run of the initial state (γ set so the maps matter), its config.json written."""
  mesh = sharding.create_mesh(jax.devices()[:1])
  built = programs.programs(config, mesh)
  run_lib.record_config(config, workdir, built.kernels)
  state = built.init()
  set_gamma = lambda params: {
    k: ({**v, "gamma": jnp.asarray(gamma)} if k.startswith("attention") else v) for k, v in params.items()
  }
  state = state.replace(ema_params=set_gamma(state.ema_params), d_params=set_gamma(state.d_params))
  return Run(workdir, config, 0, state, built, mesh)


# ------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser():
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium; make test does it as root)")
  sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed (pip install -r requirements-test.txt)",
    exc_type=ImportError,
  )
  with sync_api.sync_playwright() as p:
    context = p.chromium.launch_persistent_context(
      tempfile.mkdtemp(prefix="sagan_jax_chromium_"),
      executable_path=CHROMIUM,
      headless=True,
      args=CHROMIUM_ARGS,
      viewport={"width": 1366, "height": 900},
    )
    yield context
    context.close()


def open_page(browser, path):
  """The page, ready, with the URLs it requested and the errors it raised."""
  page = browser.new_page()
  page.requests, page.errors = [], []
  page.on("request", lambda r: page.requests.append(r.url))
  page.on("pageerror", lambda e: page.errors.append(str(e)))
  page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
  page.goto("file://" + os.path.abspath(path))
  page.wait_for_function("window.explorer && (window.explorer.ready || window.explorer.error)")
  assert page.evaluate("window.explorer.error") is None
  return page


def page_data(path) -> dict:
  """The JSON a written page's script draws from."""
  with open(path, encoding="utf-8") as f:
    return json.loads(f.read().split('id="report-data">', 1)[1].split("</script>", 1)[0])


def assert_offline(page):
  assert page.errors == []
  assert page.requests and all(u.startswith(("file://", "data:")) for u in page.requests), page.requests


def overlay_indices(page):
  """The overlay canvas read back (one pixel per key cell), as colour map indices."""
  side = page.evaluate("document.getElementById('focus-overlay').width")
  rgba = np.asarray(
    page.evaluate(
      "Array.from(document.getElementById('focus-overlay').getContext('2d')"
      f".getImageData(0, 0, {side}, {side}).data)"
    )
  )
  rgb = rgba.reshape(-1, 4)[:, :3]
  return side, np.abs(rgb[:, None] - LUT[None]).sum(-1).argmin(-1), rgb


def click_pixel(page, selector, row, col, resolution):
  """Clicks the centre of image pixel (row, col) of a canvas showing a resolution² image."""
  box = page.locator(selector).bounding_box()
  scale = box["width"] / resolution
  page.locator(selector).click(position={"x": (col + 0.5) * scale, "y": (row + 0.5) * scale})


def assert_shows(page, beta_row, key_side, what):
  """The page's state and its overlay canvas hold this β row (per-map colour scale)."""
  state = page.evaluate("window.explorer.state")
  values = np.asarray(state["values"])
  assert values.shape == (key_side**2,), what
  np.testing.assert_allclose(values, beta_row, atol=beta_row.max() / 500 + 1e-7, err_msg=what)
  expected = np.round(255 * beta_row / beta_row.max())
  assert np.abs(np.asarray(state["lut_index"]) - expected).max() <= 1, what
  side, index, rgb = overlay_indices(page)
  assert side == key_side, what
  np.testing.assert_array_equal(rgb, LUT[np.asarray(state["lut_index"])], err_msg=what)
  assert np.abs(index - expected).max() <= 1, what
  top = int(np.argmax(beta_row))
  assert tuple(state["max_key"]) == (top // key_side, top % key_side) or np.isclose(
    beta_row[state["max_key"][0] * key_side + state["max_key"][1]], beta_row.max(), rtol=2e-3
  ), what
  return state, rgb


def test_explorer_shows_the_forward_maps(tiny_run, browser):
  run = open_run(tiny_run)
  start = time.time()
  path = report.write_report(tiny_run, run=run)
  build_seconds = time.time() - start
  page = open_page(browser, path)
  config = run.config
  # β of G in Python, independently of the page: the sample grid's z, the EMA sampler.
  z, y, rows, grid_cols = sampling.grid_inputs(config, 1)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(run.mesh))
  _, g_maps = jax.device_get(run.programs.sampler.with_attention(run.state, put(z), put(y)))
  assert page.evaluate("window.explorer.layers") == ["G/attention16", "D/attention16"]

  # Click pixel (21, 9) of G sample 3 (class row 1, second column) in its thumbnail: pinned.
  image, (py, px) = 3, (21, 9)
  click_pixel(page, "#thumb-G-3", py, px, 32)
  state, rgb_g = assert_shows(
    page, g_maps["attention16"][image, (py // 2) * 16 + px // 2], 16, "G attention16"
  )
  assert state["image"] == image and state["pinned"] and state["query"] == [py // 2, px // 2]

  # D's layer: real images, the same pixel; β from D's own forward pass in Python.
  page.select_option("#layer", "D/attention16")
  classes = [int(c) for c in sampling.grid_classes(config.model.num_classes)]
  real, labels = explorer.real_images(run, classes, len(classes))
  d_beta = np.asarray(
    sampling.discriminator_attention(run.programs.discriminator, run.state, real, labels)["attention16"]
  )
  state, rgb_d = assert_shows(page, d_beta[image, (py // 2) * 16 + px // 2], 16, "D attention16")
  assert state["net"] == "D" and page.locator("#thumb-D-3").count() == 1
  assert not np.array_equal(rgb_d, rgb_g)

  # Clicking in the large view moves the pinned query; the canvas follows.
  click_pixel(page, "#focus-marks", 4, 27, 32)
  state, moved = assert_shows(page, d_beta[image, 2 * 16 + 13], 16, "D attention16, moved")
  assert state["query"] == [2, 13] and not np.array_equal(moved, rgb_d)
  # The shared colour scale divides by the layer's largest stored weight.
  page.select_option("#scale", "shared")
  state = page.evaluate("window.explorer.state")
  assert state["scale_max"] >= state["row_max"] and max(state["lut_index"]) <= 255

  # Beside the explorer: γ of every layer, the sample slider, the curves.
  legend = page.locator("#plot-gamma .legend").inner_text()
  assert "G attention16 (feat16)" in legend and "D attention16 (feat16)" in legend, legend
  assert page.locator("#sample-step").get_attribute("max") == "1"  # samples at steps 2 and 4
  page.locator("#sample-step").fill("0")
  assert page.locator("#sample-label").inner_text().startswith("step 2")
  assert page.locator("#plots-train svg").count() >= 3
  # The text around them, drawn from the data into the page's markup.
  assert page.locator("#explorer-step").text_content() == f" (checkpoint of step {run.step})"
  assert "MiB of maps before compression" in page.locator("#explorer-note").inner_text()
  assert page.locator("#explorer-strided").is_hidden()  # every query cell stored
  assert page.locator("#last-logged").inner_text().startswith("Last logged step 4: ")
  assert "d_loss = " in page.locator("#last-values").inner_text()
  gammas = page.locator("#gamma-table").inner_text()
  assert "G attention16 (feat16)" in gammas and "D attention16 (feat16)" in gammas, gammas
  assert page.locator("#samples-count").text_content() == "; 2 of them"
  assert "attention_resolutions" in page.locator("#config-text").text_content()
  assert_offline(page)
  size = os.path.getsize(path)
  assert size < 4e6, size
  print(f"\nreport: {size / 1e6:.2f} MB, built in {build_seconds:.1f} s")


def test_layers_pooled_keys_and_a_coarse_query_grid(smoke_config, tmp_path, browser):
  """Two G layers (feat8, feat16) in the released code's form, keys on the pooled grid (4×4,
  8×8); every 2nd query cell stored. Switching layer shows the other layer's row."""
  smoke_config.model.pool_kv, smoke_config.model.value_channel_ratio = True, 2
  smoke_config.model.g_attention_resolutions = (8, 16)
  smoke_config.sample_bn_stats = "running"  # no standing-stats program to compile
  run = untrained_run(smoke_config, str(tmp_path))
  path = report.write_report(str(tmp_path), run=run, query_stride=2)
  page = open_page(browser, path)
  assert page.evaluate("window.explorer.layers") == ["G/attention8", "G/attention16", "D/attention16"]
  z, y, _, _ = sampling.grid_inputs(smoke_config, 1)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(run.mesh))
  _, maps = jax.device_get(run.programs.sampler.with_attention(run.state, put(z), put(y)))
  assert maps["attention16"].shape[1:] == (256, 64) and maps["attention8"].shape[1:] == (64, 16)
  click_pixel(page, "#focus-marks", 12, 25, 32)  # feat16 query cell (6, 12) -> stored (3, 6) = cell (7, 13)
  state, rgb16 = assert_shows(
    page, np.asarray(maps["attention16"])[0, 7 * 16 + 13], 8, "pooled G attention16"
  )
  assert state["query"] == [7, 13] and state["stored_query"] == [3, 6] and state["key_side"] == 8
  page.select_option("#layer", "G/attention8")  # feat8 cell (3, 6) -> stored (1, 3) = cell (3, 7)
  state, rgb8 = assert_shows(page, np.asarray(maps["attention8"])[0, 3 * 8 + 7], 4, "pooled G attention8")
  assert state["query"] == [3, 7] and state["image"] == 0 and rgb8.shape != rgb16.shape
  assert "pooled keys" in page.locator("#layer").inner_text()
  assert page.locator("#explorer-strides").inner_text() == (
    "G/attention8 (s = 2), G/attention16 (s = 2), D/attention16 (s = 2)"
  )
  assert_offline(page)


@pytest.mark.parametrize(
  "change,says",
  [
    ({"attention_resolutions": ()}, "no attention layer"),
    ({"attention_block": "residual"}, "residual control block"),
  ],
)
def test_the_explorer_says_why_it_is_empty(smoke_config, tmp_path, browser, change, says):
  smoke_config.model.update(change)
  run_lib.record_config(smoke_config, str(tmp_path), Kernels())
  run = Run(str(tmp_path), smoke_config, 0, None, None, None)  # no map to compute: no program runs
  page = open_page(browser, report.write_report(str(tmp_path), run=run))
  text = page.locator("#explorer-absent").inner_text()
  assert says in text and "generator" in text and "discriminator" in text, text
  assert page.locator("#explorer-note").is_hidden()
  assert_offline(page)


def test_a_model_without_logs_or_data_shows_what_it_can(smoke_config, tmp_path, browser):
  """A workdir with a model but no training record (copied without its logs, or converted) on a
  machine without its data: the page says so; G's maps are explored, D's absence is explained."""
  smoke_config.dataset.data_dir = str(tmp_path / "not_on_this_machine")
  run = untrained_run(smoke_config, str(tmp_path))
  path = report.write_report(run.workdir, run=run)
  page = open_page(browser, path)
  assert "holds no training logs" in page.locator("#no-logs").inner_text()
  assert page.locator("#explorer-note").is_visible()
  assert "D's maps need real training images" in page.locator("#explorer-partial").inner_text()
  assert [layer["net"] for layer in page_data(path)["explorer"]["layers"]] == ["G"]
  assert_offline(page)


def test_the_page_lays_out_the_run_files(smoke_config, tmp_path, browser):
  """Without the explorer: the evaluations (table, plot, protocol), the figures of visualize's
  newest step, no γ and no samples yet, the config; the run's text stays text on the page."""
  run_lib.record_config(smoke_config, str(tmp_path), Kernels())
  odd = "</script><!--<script><img src=x>"
  for step, fid in ((2, 80.5), (4, 61.25)):
    workdir_lib.append_metrics_line(
      tmp_path,
      {"step": step, "num_samples": 20, "fid_fmnist": fid, "note": odd, "protocol": {"space": odd}},
      step,
    )
  for name in (
    "attention/step_00000002_generator.png",
    "attention/step_00000004_generator.png",
    "sheets/step_00000004_classes.png",
  ):
    figures.save_png(np.zeros((8, 8, 1), np.uint8), str(tmp_path / name))
  path = report.write_report(str(tmp_path), figures=False)
  assert [f["name"] for f in page_data(path)["figures"]] == [
    "step_00000004_generator.png",
    "step_00000004_classes.png",
  ]
  page = open_page(browser, path)
  assert page.title() == f"sagan_jax report: {tmp_path.name}"
  assert page.locator("h1").inner_text() == f"sagan_jax run: {tmp_path}"
  assert page.locator("#explorer-absent").inner_text() == "Built without the explorer (--figures=false)."
  assert page.locator("#explorer-note").is_hidden() and page.locator("#last-logged").is_hidden()
  assert page.locator("#no-logs").is_hidden()  # its evaluations are a record of training
  assert page.locator("#gamma-absent").is_visible() and page.locator("#gamma-table").is_hidden()
  assert page.locator("#samples-count").text_content() == ": none written yet"
  assert page.locator("#evaluations").is_visible() and page.locator("#plots-eval svg").count() == 1
  cells = page.evaluate(
    "Array.from(document.querySelectorAll('#evaluations-table tr'), "
    "(r) => Array.from(r.cells, (c) => c.textContent))"
  )
  assert cells == [
    ["step", "num_samples", "fid_fmnist", "note"],
    ["2", "20", "80.5", odd],
    ["4", "20", "61.25", odd],
  ], cells
  assert json.loads(page.locator("#protocol-text").text_content()) == {"protocol": {"space": odd}}
  assert page.locator("#figures").is_visible() and page.locator("#figures-count").text_content() == "2"
  assert page.locator("#figures-list h3").all_text_contents() == [
    "step_00000004_generator.png",
    "step_00000004_classes.png",
  ]
  assert page.locator("img").count() == 2  # the figures' only: the odd text made none
  assert "attention_resolutions" in page.locator("#config-text").text_content()
  assert_offline(page)
