"""Shapes, parameter counts and attention placement of G and D at each resolution."""

import math

import jax
import jax.numpy as jnp
import pytest

from sagan_jax.models.discriminator import Discriminator, discriminator_sides
from sagan_jax.models.generator import Generator, generator_sides


def count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def abstract_init(module, *args, **kwargs):
  return jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, *args, **kwargs))


def g_inputs(batch, z_dim):
  return jnp.zeros((batch, z_dim)), jnp.zeros((batch,), jnp.int32)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_output_shapes(resolution):
  g = Generator(resolution=resolution, ch=4, z_dim=8, num_classes=5, image_channels=3, attention_sides=(16,))
  out = jax.eval_shape(
    lambda: g.init_with_output({"params": jax.random.key(0)}, *g_inputs(2, 8), train=True)[0]
  )
  assert out.shape == (2, resolution, resolution, 3)
  d = Discriminator(resolution=resolution, ch=4, num_classes=5, attention_sides=(16,))
  logits = jax.eval_shape(
    lambda: d.init_with_output(
      {"params": jax.random.key(0)}, jnp.zeros(out.shape), jnp.zeros((2,), jnp.int32)
    )[0]
  )
  assert logits.shape == (2,)


@pytest.mark.parametrize(
  "resolution,g_params,d_params",
  [
    # The paper's form (C/8 values, no pooling), ch=64, 1000 classes, attention at feat32.
    (128, 42_017_412 - 20_481 + 3 * 256 * 32 + 32 * 256 + 1, None),
  ],
)
def test_paper_form_counts_follow_from_the_released_form(resolution, g_params, d_params):
  g = Generator(resolution=128, ch=64, z_dim=128, num_classes=1000, attention_sides=(32,))
  # Released-form feat64 G minus its attention (20,481) plus paper-form feat32 attention
  # on 256 channels: f, g, h 256×32 each, v 32×256, γ.
  assert count(abstract_init(g, *g_inputs(2, 128), train=False)["params"]) == g_params


def test_released_form_matches_public_reference_counts():
  """BigGAN-PyTorch's SAGAN (attention at feat64 in G and D, keys/values pooled, h = C/2)."""
  kwargs = dict(pool_kv=True, value_channel_ratio=2)
  g = Generator(
    resolution=128, ch=64, z_dim=128, num_classes=1000, attention_sides=(64,), attention_kwargs=kwargs
  )
  d = Discriminator(resolution=128, ch=64, num_classes=1000, attention_sides=(64,), attention_kwargs=kwargs)
  assert count(abstract_init(g, *g_inputs(2, 128), train=False)["params"]) == 42_017_412
  assert (
    count(abstract_init(d, jnp.zeros((2, 128, 128, 3)), jnp.zeros((2,), jnp.int32))["params"]) == 39_448_258
  )


@pytest.mark.parametrize("resolution,sides", [(32, (8, 16, 32)), (64, (16, 32)), (128, (8, 64))])
def test_attention_sits_exactly_at_configured_sides(resolution, sides):
  g_sides = tuple(s for s in sides if s in generator_sides(resolution))
  d_sides = tuple(s for s in sides if s in discriminator_sides(resolution))
  g = Generator(resolution=resolution, ch=4, z_dim=8, num_classes=3, attention_sides=g_sides)
  d = Discriminator(resolution=resolution, ch=4, num_classes=3, attention_sides=d_sides)
  g_vars = abstract_init(g, *g_inputs(2, 8), train=False)
  d_vars = abstract_init(d, jnp.zeros((2, resolution, resolution, 3)), jnp.zeros((2,), jnp.int32))
  assert sorted(k for k in g_vars["params"] if k.startswith("attention")) == sorted(
    f"attention{s}" for s in g_sides
  )
  assert sorted(k for k in d_vars["params"] if k.startswith("attention")) == sorted(
    f"attention{s}" for s in d_sides
  )
  # and each attention layer sees a map of its side: G's attention maps (shapes only: traced).
  _, inter = jax.eval_shape(
    lambda v: g.apply(v, *g_inputs(2, 8), train=False, mutable=["intermediates"]), g_vars
  )
  for s in g_sides:
    assert inter["intermediates"][f"attention{s}"]["attention"][0].shape == (2, s * s, s * s)


def test_sides_of_each_network():
  assert generator_sides(128) == (8, 16, 32, 64, 128)
  assert discriminator_sides(128) == (64, 32, 16, 8, 4)
  assert generator_sides(32) == (8, 16, 32)
  assert discriminator_sides(32) == (16, 8)


def test_side_the_model_lacks_is_an_error():
  g = Generator(resolution=32, ch=4, z_dim=8, num_classes=3, attention_sides=(64,))
  with pytest.raises(ValueError, match=r"sides are \(8, 16, 32\)"):
    abstract_init(g, *g_inputs(2, 8), train=False)


def test_spectral_norm_everywhere_but_cbn_gains():
  g = Generator(resolution=32, ch=4, z_dim=8, num_classes=3, attention_sides=(16,))
  d = Discriminator(resolution=32, ch=4, num_classes=3, attention_sides=(16,))
  g_vars = abstract_init(g, *g_inputs(2, 8), train=False)
  d_vars = abstract_init(d, jnp.zeros((2, 32, 32, 3)), jnp.zeros((2,), jnp.int32))

  def weight_modules(params):  # modules owning a conv/dense kernel or an embedding table
    return {
      "/".join(k.key for k in path[:-1])
      for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
      if path[-1].key in ("kernel", "embedding")
    }

  def sn_modules(spectral):
    return {
      "/".join(k.key for k in path[:-2]) for path, _ in jax.tree_util.tree_flatten_with_path(spectral)[0]
    }

  g_weights = weight_modules(g_vars["params"])
  assert {p for p in g_weights if "bn" not in p} == sn_modules(g_vars["spectral"])  # attention's too
  assert any("bn" in p for p in g_weights) and not any("bn" in p for p in sn_modules(g_vars["spectral"]))
  d_weights = weight_modules(d_vars["params"])
  assert d_weights == sn_modules(d_vars["spectral"])  # every D weight, the projection embedding too
  assert "embed" in d_weights
