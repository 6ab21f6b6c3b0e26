"""benchmarks/pytorch/torch_sagan.py, the PyTorch baseline of the CPU benchmark, is the JAX model:
equal parameter counts and architecture tables, outputs of the right shapes; its weights
in the JAX model give the same G and D outputs. (Its timing is benchmarks/pytorch/cpu_step_vs_torch.py's.)"""

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def torch_sagan():
  spec = importlib.util.spec_from_file_location(
    "torch_sagan", os.path.join(ROOT, "benchmarks", "pytorch", "torch_sagan.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_parameter_counts_and_architecture_equal_the_jax_model(torch_sagan):
  from sagan_jax.models import discriminator, generator

  config = torch_sagan.make_config(ch=4, batch_size=8)
  g, d = torch_sagan.build_models(config)
  counts = torch_sagan.parameter_count(g), torch_sagan.parameter_count(d)
  assert counts == torch_sagan.jax_parameter_counts(config) == (49_986, 17_010)
  assert torch_sagan.G_ARCH == generator.G_ARCH and torch_sagan.D_ARCH == discriminator.D_ARCH
  # Attention where the config puts it (side 16) in both, with γ = 0 at init.
  assert [n for n in dict(g.named_children()) if n.startswith("attention")] == ["attention16"]
  assert [n for n in dict(d.named_children()) if n.startswith("attention")] == ["attention16"]
  assert g.attention16.gamma.item() == 0.0 and d.attention16.gamma.item() == 0.0


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_forward_shapes(torch_sagan, layout):
  config = torch_sagan.make_config(ch=4, batch_size=8)
  fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
  trainer = torch_sagan.Trainer(config, fmt)
  z, y = torch.randn(8, config.model.z_dim), torch.randint(0, 10, (8,))
  with torch.no_grad():
    images = trainer.G(z, y, train=True)
    logits = trainer.D(images, y)
  assert images.shape == (8, 1, 32, 32) and images.abs().max() <= 1.0
  assert logits.shape == (8,) and torch.isfinite(logits).all()


def test_same_weights_give_the_jax_outputs(torch_sagan):
  """The baseline's initial weights, SN vectors and BN statistics in the JAX model (no JAX
  init to compile): the same G (train mode) and D outputs."""
  import functools

  import jax

  from sagan_jax import programs

  config = torch_sagan.make_config(ch=4, batch_size=8)
  generator, discriminator = programs.build_models(config)
  trainer = torch_sagan.Trainer(config)
  for p in trainer.G.parameters():  # the zero-initialised CBN embeddings and γ too
    p.data.add_(0.1 * torch.randn_like(p))
  for p in trainer.D.parameters():
    p.data.add_(0.1 * torch.randn_like(p))
  g_vars, d_vars = torch_sagan.jax_variables(trainer, programs.abstract_state(config))
  rng = np.random.default_rng(0)
  z = rng.normal(size=(8, config.model.z_dim)).astype(np.float32)
  y = rng.integers(0, 10, 8).astype(np.int32)
  x = rng.uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32)
  g_jax = np.asarray(jax.jit(functools.partial(generator.apply, train=True))(g_vars, z, y))
  d_jax = np.asarray(jax.jit(discriminator.apply)(d_vars, x, y))
  yt = torch.from_numpy(y.astype(np.int64))
  with torch.no_grad():
    g_torch = trainer.G(torch.from_numpy(z), yt, train=True).permute(0, 2, 3, 1).numpy()
    d_torch = trainer.D(torch.from_numpy(x).permute(0, 3, 1, 2), yt).numpy()
  np.testing.assert_allclose(g_torch, g_jax, atol=1e-4)
  np.testing.assert_allclose(d_torch, d_jax, rtol=1e-4, atol=1e-4 * np.abs(d_jax).max())
