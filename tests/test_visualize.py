"""Attention maps for figures are the forward pass's own; figure sizes; Table 1's control block."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sagan_jax import figures, programs, sampling, sharding
from sagan_jax.models.attention import ResidualControl, SelfAttention
from sagan_jax.models.layers import SPECTRAL


def _state_and_sampler(config):
  mesh = sharding.create_mesh(jax.devices()[:1])
  built = programs.programs(config, mesh)
  state = built.init()
  # γ = 0 at init makes attention inert; give it weight so the maps matter to the images.
  state = state.replace(
    ema_params={
      **state.ema_params,
      "attention16": {**state.ema_params["attention16"], "gamma": jnp.asarray(0.8)},
    }
  )
  return built.generator, state, built.sampler


@pytest.mark.parametrize("impl", ["xla", "dot_product_attention"])
def test_visualised_attention_is_the_forward_attention(smoke_config, impl):
  smoke_config.model.attention_impl = impl
  g, state, sampler = _state_and_sampler(smoke_config)
  z = np.random.default_rng(0).standard_normal((4, smoke_config.model.z_dim)).astype(np.float32)
  y = np.array([0, 3, 5, 9], np.int32)
  images, maps = sampler.with_attention(state, z, y)
  assert sorted(maps) == ["attention16"]
  beta = np.asarray(maps["attention16"])
  assert beta.shape == (4, 16 * 16, 16 * 16)
  np.testing.assert_allclose(beta.sum(-1), 1.0, rtol=1e-5)  # a distribution over key positions
  # Collecting the maps does not change the samples (same forward, whatever the impl).
  np.testing.assert_allclose(np.asarray(images), np.asarray(sampler(state, z, y)), atol=2e-5)
  # The maps are the ones the layer computes from its input: rerun the layer alone on it.
  variables = {"params": state.ema_params, SPECTRAL: state.g_spectral, "batch_stats": sampler._stats(state)}
  _, inter = g.apply(variables, z, y, train=False, capture_intermediates=True, mutable=["intermediates"])
  layer_input = inter["intermediates"]["block1"]["__call__"][0]
  kwargs = {k: v for k, v in g.attention_kwargs.items() if k != "block"}
  layer = SelfAttention(**{**kwargs, "impl": "xla"})
  _, own = layer.apply(
    {"params": state.ema_params["attention16"], SPECTRAL: state.g_spectral["attention16"]},
    layer_input,
    mutable=["intermediates"],
  )
  np.testing.assert_allclose(beta, np.asarray(own["intermediates"]["attention"][0]), rtol=1e-5, atol=1e-7)


def test_discriminator_figure_maps_exist_whatever_the_impl(smoke_config):
  """D's figure runs the explicit form: a run trained with dot_product_attention gets the same
  maps from the same parameters (that form sows no β of its own)."""
  built = programs.programs(smoke_config, sharding.create_mesh(jax.devices()[:1]))
  state = built.init()
  images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
  labels = np.array([2, 7], np.int32)
  fused = built.discriminator.clone(
    attention_kwargs={**built.discriminator.attention_kwargs, "impl": "dot_product_attention"}
  )
  maps = sampling.discriminator_attention(fused, state, images, labels)
  assert sorted(maps) == ["attention16"] and maps["attention16"].shape == (2, 16 * 16, 16 * 16)
  expected = sampling.discriminator_attention(built.discriminator, state, images, labels)
  np.testing.assert_array_equal(np.asarray(maps["attention16"]), np.asarray(expected["attention16"]))


@pytest.mark.parametrize("resolution,feature_side,pool", [(32, 16, False), (128, 64, True)])
def test_attention_figure_size(tmp_path, resolution, feature_side, pool):
  rng = np.random.default_rng(0)
  n, k = 3, 4
  key_side = feature_side // 2 if pool else feature_side
  logits = rng.standard_normal((n, feature_side**2, key_side**2))
  beta = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  images = rng.uniform(-1, 1, (n, resolution, resolution, 3 if resolution == 128 else 1))
  queries = figures.query_points(feature_side, k)
  path = str(tmp_path / "fig.png")
  figures.save_png(figures.attention_figure(images, beta, queries), path)
  panel = 128
  with Image.open(path) as png:
    assert png.size == ((k + 1) * (panel + 1) + 1, n * (panel + 1) + 1)
    assert png.mode == "RGB"
    pixels = np.asarray(png)
  assert pixels[1 : panel + 1, panel + 2 : 2 * panel + 2].std() > 0  # a heat map was drawn


def test_heat_map_peaks_where_attention_does():
  """A query that attends to one key cell gets its box and hottest pixels on that cell."""
  side, res = 8, 32
  beta = np.full((1, side * side, side * side), 1e-6)
  beta[0, :, 2 * side + 5] = 1.0  # every query looks at cell (row 2, col 5)
  fig = figures.attention_figure(np.zeros((1, res, res, 1)), beta, np.array([[6, 1]]))
  heat = fig[1:129, 130:258].astype(float).sum(-1)
  cells = heat.reshape(8, 16, 8, 16).mean(axis=(1, 3))  # mean brightness of each key cell
  assert np.unravel_index(np.argmax(cells), cells.shape) == (2, 5)
  assert fig[1 + 2 * 16, 130 + 5 * 16 + 8].tolist() == list(figures.QUERY_COLORS[0])  # the box


def test_figure_heat_scale_keeps_a_uniform_map_dark_beside_a_peaked_one():
  """'query' scales each map to its own peak; 'figure' puts all maps on one scale."""
  side, res = 8, 32
  beta = np.full((1, side * side, side * side), 1.0 / side**2)  # every query: uniform …
  beta[0, 0] = 1e-6
  beta[0, 0, 9] = 1.0  # … but query (0, 0): one key
  queries = np.array([[0, 0], [4, 4]])
  black = -np.ones((1, res, res, 1))  # no image behind the heat
  panel = lambda fig, q: fig[1:129, 1 + (q + 1) * 129 : (q + 2) * 129].astype(float).mean()
  per_query = figures.attention_figure(black, beta, queries, "query")
  shared = figures.attention_figure(black, beta, queries, "figure")
  assert panel(per_query, 1) > 100  # the uniform map drawn at full brightness
  assert panel(shared, 1) < 20  # at 1/64 of the figure's peak: near the colour map's black
  np.testing.assert_array_equal(per_query[:, : 2 * 129], shared[:, : 2 * 129])  # the peaked map as before
  with pytest.raises(ValueError, match="heat_scale"):
    figures.attention_figure(black, beta, queries, "global")


def test_query_points_are_distinct_and_inside():
  for side, k in ((8, 4), (16, 8), (4, 16), (64, 5)):
    q = figures.query_points(side, k, seed=3)
    assert q.shape == (k, 2) and len({tuple(p) for p in q}) == k
    assert q.min() >= 0 and q.max() < side
  with pytest.raises(ValueError, match="do not fit"):
    figures.query_points(2, 5)


def _count(module, x):
  variables = module.init({"params": jax.random.key(0)}, x)
  return sum(a.size for a in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("channels,value_ratio,pool", [(16, 8, False), (64, 8, False), (256, 2, True)])
def test_residual_control_has_attention_parameter_count(channels, value_ratio, pool):
  x = jnp.zeros((1, 8, 8, channels))
  kwargs = dict(value_channel_ratio=value_ratio, pool_kv=pool)
  attention, control = _count(SelfAttention(**kwargs), x), _count(ResidualControl(**kwargs), x)
  assert abs(control - attention) <= 0.01 * attention, (control, attention)


def test_residual_control_models_match_attention_models(smoke_config):
  counts = {}
  for block in ("self_attention", "residual"):
    smoke_config.model.attention_block = block
    g, d = programs.build_models(smoke_config)
    state = jax.eval_shape(
      functools.partial(programs.init_state, smoke_config, g, d, *programs.build_optimizers(smoke_config)),
      programs.seed_key_data(0),
    )
    counts[block] = [sum(a.size for a in jax.tree.leaves(p)) for p in (state.g_params, state.d_params)]
  assert counts["residual"] == counts["self_attention"]
