"""python -m sagan_jax.convert against the peers' own code: small random SAGANs built and saved by
mmagic 1.2.0 and StudioGAN v0.2.0 (tests/fixtures/convert, made by experiments/converter_fixtures.py)
with their eval-mode outputs; converted here without PyTorch, ours must compute the same."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sagan_jax.convert.__main__ import convert
from sagan_jax.errors import UserError
from sagan_jax.models.layers import SPECTRAL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "convert")
IMAGE_ATOL = 2e-5  # float32, tanh outputs: the sources agree with ours to ~2e-6
LOGIT_TOL = dict(rtol=1e-5, atol=1e-4)


def fixture(name):
  return os.path.join(FIXTURES, name)


def reference(name):
  with np.load(fixture(f"{name}.npz")) as data:
    return dict(data)


def eval_images(model, z, y, params=None):
  """G in eval mode (running BN statistics: how the references were made), whatever the
  converted run's sample_bn_stats."""
  state = model.run.state
  variables = {
    "params": state.ema_params if params is None else params,
    "batch_stats": state.g_batch_stats,
    SPECTRAL: state.g_spectral,
  }
  return np.asarray(model.run.programs.generator.apply(variables, z, y, train=False))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  import sagan_jax

  out = tmp_path_factory.mktemp("converted")
  runs = {
    "mmagic_cifar": convert("mmagic", fixture("mmagic_cifar.pth"), str(out / "mmagic_cifar")),
    "mmagic_128_ema": convert("mmagic", fixture("mmagic_128_ema.pth"), str(out / "mmagic_128_ema")),
    "studiogan_v04_cifar": convert(
      "studiogan",
      fixture("studiogan_v04_cifar_G.pth"),
      str(out / "studiogan_v04_cifar"),
      discriminator=fixture("studiogan_v04_cifar_D.pth"),
    ),
    "studiogan_cifar": convert(
      "studiogan",
      fixture("studiogan_cifar_G.pth"),
      str(out / "studiogan_cifar"),
      discriminator=fixture("studiogan_cifar_D.pth"),
    ),
  }
  return {name: sagan_jax.load(path) for name, path in runs.items()}


def test_mmagic_generator_and_discriminator_compute_what_mmagic_does(converted):
  model, ref = converted["mmagic_cifar"], reference("mmagic_cifar")
  config = model.config.model
  assert (config.resolution, config.ch, config.d_ch, tuple(config.attention_resolutions)) == (32, 4, 2, (16,))
  assert (config.pool_kv, config.value_channel_ratio, config.bn_eps, config.sn_cbn_gains) == (
    True,
    2,
    1e-4,
    True,
  )
  # mmagic's models read and write BGR: ours, converted, RGB
  rgb = ref["images"][..., ::-1]
  np.testing.assert_allclose(eval_images(model, ref["z"], ref["y"]), rgb, atol=IMAGE_ATOL)
  np.testing.assert_allclose(model.generate(ref["y"], ref["z"], output="float"), rgb, atol=IMAGE_ATOL)
  logits = model.discriminate(ref["x"][..., ::-1], ref["y"])
  np.testing.assert_allclose(logits, ref["logits"], **LOGIT_TOL)
  assert model.step == 1000 and np.abs(logits).max() > 0.1


def test_mmagic_128_with_ema_and_plain_embeddings(converted):
  model, ref = converted["mmagic_128_ema"], reference("mmagic_128_ema")
  config = model.config.model
  assert (config.resolution, tuple(config.attention_resolutions), config.sn_cbn_gains, config.bn_eps) == (
    128,
    (64,),
    False,
    1e-5,
  )
  np.testing.assert_allclose(
    eval_images(model, ref["z"], ref["y"]), ref["ema_images"][..., ::-1], atol=IMAGE_ATOL
  )
  plain = eval_images(model, ref["z"], ref["y"], params=model.run.state.g_params)
  np.testing.assert_allclose(plain, ref["images"][..., ::-1], atol=IMAGE_ATOL)
  assert np.abs(plain - ref["ema_images"][..., ::-1]).max() > 10 * IMAGE_ATOL  # the EMA is its own G
  np.testing.assert_allclose(model.discriminate(ref["x"][..., ::-1], ref["y"]), ref["logits"], **LOGIT_TOL)


def test_studiogan_with_its_in_place_relu_discriminator(converted):
  model, ref = converted["studiogan_cifar"], reference("studiogan_cifar")
  config = model.config
  assert config.model.d_shortcut_preactivated and config.model.bn_eps == 1e-4
  assert config.sample_bn_stats == "batch" and model.step == 500
  np.testing.assert_allclose(eval_images(model, ref["z"], ref["y"]), ref["images"], atol=IMAGE_ATOL)
  np.testing.assert_allclose(model.discriminate(ref["x"], ref["y"]), ref["logits"], **LOGIT_TOL)
  # without the in-place ReLU's shortcut, D is another function
  from sagan_jax import programs

  _, plain_d = programs.build_models(config.copy_and_resolve_references())
  state = model.run.state
  other = plain_d.clone(shortcut_preactivated=False).apply(
    {"params": state.d_params, SPECTRAL: state.d_spectral}, ref["x"], ref["y"]
  )
  assert np.abs(np.asarray(other) - ref["logits"]).max() > 1e-2


def test_later_studiogan_with_linear_conditional_bn(converted):
  """StudioGAN's master stores the cBN gains as SN'd linear maps of one-hot labels."""
  model, ref = converted["studiogan_v04_cifar"], reference("studiogan_v04_cifar")
  assert model.config.model.sn_cbn_gains and model.step == 0  # its G file names no step
  np.testing.assert_allclose(eval_images(model, ref["z"], ref["y"]), ref["images"], atol=IMAGE_ATOL)
  np.testing.assert_allclose(model.discriminate(ref["x"], ref["y"]), ref["logits"], **LOGIT_TOL)


def test_the_converted_workdir_is_a_run_the_tools_open(converted, tmp_path):
  from sagan_jax import report, sample

  model = converted["mmagic_cifar"]
  provenance = json.load(open(os.path.join(model.workdir, "source.json")))
  assert provenance["source"] == "mmagic" and provenance["channel_order"] == "BGR, converted to RGB"
  assert len(provenance["files"]["checkpoint"]["sha256"]) == 64
  sample.sample(model.workdir, str(tmp_path / "s.npz"), per_class=1, progress=False)
  with np.load(tmp_path / "s.npz") as data:
    assert data["images"].shape == (10, 32, 32, 3)
  page = report.write_report(model.workdir, out=str(tmp_path / "report.html"), run=model.run, num_real=1)
  text = open(page).read()
  assert "holds no training logs" in text and "D's maps need real training images" in text


def test_configs_from_run_gives_the_converted_model_to_fine_tune(converted):
  from configs import from_run
  from sagan_jax import run

  workdir = converted["studiogan_cifar"].workdir
  config = from_run.get_config(workdir)
  assert config.model.d_shortcut_preactivated and config.model.bn_eps == 1e-4
  run.check_same_model(config, workdir, resuming=True)  # main resumes (fine-tunes) it
  with pytest.raises(ValueError, match="name the run"):
    from_run.get_config()


def test_bad_input_is_one_error_and_writes_nothing(tmp_path):
  out = str(tmp_path / "out")
  with pytest.raises(UserError, match="--from=studiogan"):
    convert("mmagic", fixture("studiogan_cifar_G.pth"), out)
  with pytest.raises(UserError, match="--from=mmagic"):
    convert("studiogan", fixture("mmagic_cifar.pth"), out, discriminator=fixture("studiogan_cifar_D.pth"))
  with pytest.raises(UserError, match="two files"):
    convert("studiogan", fixture("studiogan_cifar_G.pth"), out)
  cut = tmp_path / "cut.pth"
  cut.write_bytes(open(fixture("mmagic_cifar.pth"), "rb").read()[:100_000])
  with pytest.raises(UserError, match="not a complete torch.save file"):
    convert("mmagic", str(cut), out)
  with pytest.raises(UserError, match="does not exist"):
    convert("mmagic", str(tmp_path / "missing.pth"), out)
  assert sorted(os.listdir(tmp_path)) == ["cut.pth"]
  os.makedirs(out)
  with pytest.raises(UserError, match="exists; pass --overwrite"):
    convert("mmagic", fixture("mmagic_cifar.pth"), out)


def test_a_checkpoint_of_another_architecture_is_refused():
  from sagan_jax import torch_pickle
  from sagan_jax.convert import sources
  from sagan_jax.convert.__main__ import build_config, flat_to_state

  def variables(edit):
    obj = torch_pickle.load(fixture("mmagic_cifar.pth"))
    edit(obj["state_dict"])
    loaded = sources.read_mmagic(obj, "x.pth")
    config = build_config(loaded, sources.architecture(loaded), 1e-4, False)
    g = sources.generator_variables(loaded, loaded.generator, bgr=True)[0]
    return config, g, sources.discriminator_variables(loaded, bgr=True)[0]

  with pytest.raises(UserError, match="has no tensor 'conv_blocks.1.conv_2.conv.weight_u'"):
    variables(lambda state: state.pop("generator.conv_blocks.1.conv_2.conv.weight_u"))
  config, g, d = variables(lambda state: state.pop("generator.conv_blocks.1.conv_2.conv.bias"))
  with pytest.raises(UserError, match="generator does not fit .* missing block1/conv2/bias"):
    flat_to_state(config, g, d, None, 0)
  with pytest.raises(UserError, match=r"linear: bias of shape \(2,\) where the layer has 1"):
    variables(lambda state: state.update({"discriminator.decision.bias": np.zeros(2, np.float32)}))
  config, g, d = variables(
    lambda state: state.update({"discriminator.decision.bias": np.zeros(1, np.float64)})
  )
  flat_to_state(config, g, d, None, 0)  # a float64 bias of the right length is read


def test_urls_are_fetched_once_and_checked(tmp_path, monkeypatch):
  import functools
  import hashlib
  import http.server
  import threading

  from sagan_jax.convert.__main__ import fetch

  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  served = tmp_path / "served"
  served.mkdir()
  data = open(fixture("mmagic_cifar.pth"), "rb").read()
  digest = hashlib.sha256(data).hexdigest()
  (served / f"sagan_x-{digest[:8]}.pth").write_bytes(data)  # mmagic's names carry the hash
  (served / "sagan_y-0123abcd.pth").write_bytes(data)  # … which must match
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_port}"
  try:
    path = fetch(f"{url}/sagan_x-{digest[:8]}.pth", progress=None)
    assert path == str(tmp_path / "cache" / "sagan_jax" / "checkpoints" / f"sagan_x-{digest[:8]}.pth")
    assert open(path, "rb").read() == data
    (served / f"sagan_x-{digest[:8]}.pth").unlink()
    assert fetch(f"{url}/sagan_x-{digest[:8]}.pth", progress=None) == path  # once: from the cache now
    with pytest.raises(UserError, match="not 0123abcd"):
      fetch(f"{url}/sagan_y-0123abcd.pth", progress=None)
    with pytest.raises(UserError, match="cannot download .*/missing.pth .*fetch it by hand"):
      fetch(f"{url}/missing.pth", progress=None)
  finally:
    server.shutdown()
  assert sorted(os.listdir(tmp_path / "cache" / "sagan_jax" / "checkpoints")) == [f"sagan_x-{digest[:8]}.pth"]
  with pytest.raises(UserError, match="not 0123abcd"):  # a local file with such a name is checked too
    fetch(str(served / "sagan_y-0123abcd.pth"), progress=None)


def test_command_line(tmp_path):
  out = str(tmp_path / "run")
  cmd = [
    sys.executable,
    "-m",
    "sagan_jax.convert",
    "--from=mmagic",
    f"--checkpoint={fixture('mmagic_cifar.pth')}",
    f"--out={out}",
  ]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == out and os.path.exists(os.path.join(out, "config.json"))
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and [
    line for line in again.stderr.splitlines() if line.startswith("error:")
  ] == [f"error: {out} exists; pass --overwrite to replace it, or another --out"]
  assert "Traceback" not in again.stderr


FULL = os.environ.get("SAGAN_JAX_CONVERT_FULL")  # experiments/converter_fixtures.py --full_width=DIR


@pytest.mark.skipif(not FULL, reason="a 330 MB random full-width model: SAGAN_JAX_CONVERT_FULL=DIR")
def test_full_width_mmagic_128(tmp_path):
  """Every tensor shape of mmagic's published ImageNet-128 checkpoints (random weights)."""
  import sagan_jax

  model = sagan_jax.load(convert("mmagic", os.path.join(FULL, "mmagic_128_full.pth"), str(tmp_path / "run")))
  with np.load(os.path.join(FULL, "mmagic_128_full.npz")) as data:
    ref = dict(data)
  assert model.config.model.ch == 64 and model.config.model.num_classes == 1000
  images = eval_images(model, ref["z"], ref["y"])
  logits = model.discriminate(ref["x"][..., ::-1], ref["y"])
  print(
    f"full width: max |Δ image| {np.abs(images - ref['images'][..., ::-1]).max():.2e}, max |Δ logit| "
    f"{np.abs(logits - ref['logits']).max():.2e} of logits {ref['logits']}"
  )
  np.testing.assert_allclose(images, ref["images"][..., ::-1], atol=IMAGE_ATOL)
  np.testing.assert_allclose(logits, ref["logits"], **LOGIT_TOL)
