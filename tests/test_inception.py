"""FID Inception in Flax: parity with pytorch-fid, the torch-free reader, the weights fetch."""

import urllib.error

import numpy as np
import pytest
from conftest import import_pytorch_fid

from sagan_jax import torch_pickle
from sagan_jax.errors import UserError
from sagan_jax.evaluation import inception


def _import_pytorch_fid_inception():
  return import_pytorch_fid("inception")


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
  """pytorch-fid's InceptionV3 wrapper on random weights saved to a .pth, and its fc.

  BN running statistics are set from a real forward pass (momentum 1), then BN scales
  and shifts are randomised, so every BN term matters and activations stay O(1).
  """
  torch, pfi = _import_pytorch_fid_inception()
  torch.manual_seed(0)
  # Same parameter names and shapes as fid_inception_v3(): its FID blocks only change forward.
  base = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  bns = [m for m in base.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for bn in bns:
    bn.momentum = 1.0
  base.train()
  with torch.no_grad():
    base(torch.rand(2, 3, 96, 96) * 2 - 1)
    for bn in bns:
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.2)
  base.eval()
  path = tmp_path_factory.mktemp("weights") / "random_inception.pth"
  torch.save(base.state_dict(), path)

  def load_from_url(url, **unused_kwargs):
    assert url == pfi.FID_WEIGHTS_URL
    return torch.load(path)

  pfi_loader = pfi.load_state_dict_from_url
  pfi.load_state_dict_from_url = load_from_url  # fid_inception_v3() loads our file
  try:
    net = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  finally:
    pfi.load_state_dict_from_url = pfi_loader
  return torch, net, base.fc, path


def test_flax_matches_pytorch_fid(torch_reference):
  torch, net, fc, path = torch_reference
  images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    # pytorch-fid takes [0, 1] and maps to [-1, 1] itself (normalize_input=True).
    pool_ref = net(torch.from_numpy((images + 1) / 2).permute(0, 3, 1, 2))[0].flatten(1)
    logits_ref = fc(pool_ref).numpy()
    pool_ref = pool_ref.numpy()

  pool, logits = inception.inception_apply(inception.load_variables(path), images)

  assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
  for got, want in ((pool, pool_ref), (logits, logits_ref)):
    rel = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel


@pytest.mark.parametrize("size", [(64, 48), (512, 400), (299, 299)])
def test_resize_matches_torch_interpolate(size):
  torch, _ = _import_pytorch_fid_inception()
  images = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
  want = (
    torch.nn.functional.interpolate(
      torch.from_numpy(images).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear", align_corners=False
    )
    .permute(0, 2, 3, 1)
    .numpy()
  )
  got = np.asarray(inception.resize_bilinear(images))
  # PyTorch rounds its source indices in float32; both stay ~1e-5 apart on N(0, 1) data.
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_grayscale_is_tiled_to_rgb():
  gray = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 1)).astype(np.float32)
  got = inception.preprocess(gray)
  want = inception.preprocess(np.tile(gray, (1, 1, 1, 3)))
  assert got.shape == (1, 299, 299, 3)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("zip_format", [True, False])
def test_reader_handles_dtypes_views_and_both_formats(tmp_path, zip_format):
  torch, _ = _import_pytorch_fid_inception()
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  state = {
    "view": base[1:, ::2],  # storage offset and strides
    "transposed": base.t(),
    "half": torch.linspace(-1, 1, 5, dtype=torch.float16),
    "bf16": torch.linspace(-1, 1, 5, dtype=torch.bfloat16),
    "long": torch.tensor([1, -2, 3], dtype=torch.int64),
    "flag": torch.tensor([True, False]),
    "scalar": torch.tensor(7),
    "parameter": torch.nn.Parameter(torch.ones(2, 3)),
  }
  path = tmp_path / "state.pth"
  torch.save(state, path, _use_new_zipfile_serialization=zip_format)

  loaded = torch_pickle.load_torch_state_dict(path)

  assert list(loaded) == list(state)
  for name, tensor in state.items():
    want = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).detach().numpy()
    got = loaded[name].astype(np.float32) if name == "bf16" else loaded[name]
    assert got.shape == want.shape and got.dtype == want.dtype, name
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_training_checkpoint_reads_with_its_metadata_inert(tmp_path, zip_format):
  """An mmengine-style checkpoint: tensors in nested dicts, metadata of classes the reader
  does not build (a numpy scalar, a date) read as Opaque records, nothing executed."""
  import datetime

  torch, _ = _import_pytorch_fid_inception()
  meta = {"epoch": np.int64(3), "when": datetime.date(2022, 1, 2)}
  checkpoint = {
    "meta": meta,
    "state_dict": {"generator.w": torch.arange(6.0).reshape(2, 3), "steps": [torch.tensor(1), 2]},
  }
  path = tmp_path / "ckpt.pth"
  torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
  loaded = torch_pickle.load(path)
  np.testing.assert_array_equal(loaded["state_dict"]["generator.w"], np.arange(6.0).reshape(2, 3))
  assert loaded["state_dict"]["steps"][0] == 1 and loaded["state_dict"]["steps"][1] == 2
  assert isinstance(loaded["meta"]["when"], torch_pickle.Opaque) and "datetime.date" in repr(
    loaded["meta"]["when"]
  )
  with pytest.raises(UserError, match="not a PyTorch state dict"):
    torch_pickle.load_torch_state_dict(path)  # the strict reader still refuses them
  cut = tmp_path / "cut.pth"
  cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(UserError, match="not a complete torch.save file"):
    torch_pickle.load(cut)


def test_reader_refuses_other_files(tmp_path):
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"\x80\x02K\x07.")  # a pickle of 7, not a torch.save file
  with pytest.raises(UserError, match="not a PyTorch state dict"):
    torch_pickle.load_torch_state_dict(junk)
  with pytest.raises(UserError, match="does not exist"):
    torch_pickle.load_torch_state_dict(tmp_path / "missing.pth")


def test_state_dict_with_wrong_names_is_refused(torch_reference):
  _, _, _, path = torch_reference
  state = torch_pickle.load_torch_state_dict(path)
  del state["Mixed_7c.branch_pool.conv.weight"]
  with pytest.raises(UserError, match="does not fit the FID Inception network"):
    inception.variables_from_state_dict(state)


def test_missing_weights_without_download_says_where_to_put_them(tmp_path):
  with pytest.raises(UserError) as error:
    inception.fid_weights_file(cache_dir=tmp_path, download=False)
  message = str(error.value)
  assert str(tmp_path / inception.FID_WEIGHTS_NAME) in message
  assert inception.FID_WEIGHTS_URL in message


def test_failed_download_says_where_to_put_the_weights(tmp_path, monkeypatch):
  def offline(*unused_args, **unused_kwargs):
    raise urllib.error.URLError("no network")

  monkeypatch.setattr(inception.urllib.request, "urlopen", offline)
  with pytest.raises(UserError, match="download failed") as error:
    inception.fid_weights_file(cache_dir=tmp_path)
  assert str(tmp_path / inception.FID_WEIGHTS_NAME) in str(error.value)


def test_weights_file_with_wrong_checksum_is_refused(tmp_path):
  (tmp_path / inception.FID_WEIGHTS_NAME).write_bytes(b"not the weights")
  with pytest.raises(UserError, match="sha256"):
    inception.fid_weights_file(cache_dir=tmp_path, download=False)


def test_extract_features_pads_the_last_batch():
  variables = inception.random_variables()
  images = np.random.default_rng(3).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
  pool, logits = inception.extract_features(variables, images, batch_size=2)
  assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
  # Batches of two only, so the parity test's compiled program is reused.
  want = np.concatenate(
    [
      np.asarray(inception.inception_apply(variables, images[:2])[0]),
      np.asarray(inception.inception_apply(variables, images[[2, 2]])[0][:1]),
    ]
  )
  np.testing.assert_allclose(pool, want, rtol=1e-5, atol=1e-6)
