"""PyTorch layers as this package's Flax variables: numpy only, one function per layer kind.

Every function adds the leaves of one of our modules to ``tree``, a flat dict keyed by
(collection, *module path, leaf name). PyTorch's spectral norm stores the un-normalised weight
(``weight_orig``) and its power-iteration vectors (``weight_u`` over the rows of the weight
viewed as (out, in·kh·kw), ``weight_v`` over its columns); ours views a kernel as
(kh·kw·in, out) with ``u`` over its columns and ``v`` over its rows. In eval mode both divide
by σ = vᵀ W u of the stored vectors, so a converted layer computes what the source computes.
"""

import numpy as np

from sagan_jax.errors import UserError

PARAMS, SPECTRAL, BATCH_STATS = "params", "spectral", "batch_stats"


def _vector(values, length: int, order, path, what: str) -> np.ndarray:
  """A per-channel vector of the source (a bias, a power-iteration vector), checked and ordered."""
  values = np.asarray(values, np.float32)
  if values.shape != (length,):
    raise UserError(f"{'/'.join(path)}: {what} of shape {values.shape} where the layer has {length}")
  return values if order is None else values[order]


def _spectral(tree, path, kernel, u, v):
  """Our spectral vectors of ``kernel`` (σ as our layers store it: vᵀ K u)."""
  u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
  tree[(SPECTRAL, *path, "sn", "u")] = u
  tree[(SPECTRAL, *path, "sn", "v")] = v
  tree[(SPECTRAL, *path, "sn", "sigma")] = np.float32(v @ kernel.reshape(-1, kernel.shape[-1]) @ u)


def conv(tree, path, weight, bias=None, u=None, v=None, out_order=None, in_order=None):
  """A 2-D conv: OIHW weight → HWIO kernel; ``out_order`` / ``in_order`` permute output /
  input channels (a channel-order change: exact, σ is invariant to it); u, v None: no SN."""
  weight = np.asarray(weight, np.float32)
  if weight.ndim != 4:
    raise UserError(f"{'/'.join(path)}: a conv weight of shape {weight.shape}, not (out, in, kh, kw)")
  out_channels, in_channels, kh, kw = weight.shape
  out_order = np.arange(out_channels) if out_order is None else np.asarray(out_order)
  in_order = np.arange(in_channels) if in_order is None else np.asarray(in_order)
  kernel = weight[out_order][:, in_order].transpose(2, 3, 1, 0)
  tree[(PARAMS, *path, "kernel")] = kernel
  if bias is not None:
    tree[(PARAMS, *path, "bias")] = _vector(bias, out_channels, out_order, path, "bias")
  if u is not None:
    v_source = _vector(v, in_channels * kh * kw, None, path, "spectral v")
    v_ours = v_source.reshape(in_channels, kh, kw)[in_order].transpose(1, 2, 0).reshape(-1)
    _spectral(tree, path, kernel, _vector(u, out_channels, out_order, path, "spectral u"), v_ours)


def linear(tree, path, weight, bias=None, u=None, v=None, out_order=None):
  """A linear layer: (out, in) weight → (in, out) kernel; ``out_order`` permutes its outputs."""
  weight = np.asarray(weight, np.float32)
  if weight.ndim != 2:
    raise UserError(f"{'/'.join(path)}: a linear weight of shape {weight.shape}, not (out, in)")
  out_order = np.arange(weight.shape[0]) if out_order is None else np.asarray(out_order)
  kernel = weight[out_order].T
  tree[(PARAMS, *path, "kernel")] = kernel
  if bias is not None:
    tree[(PARAMS, *path, "bias")] = _vector(bias, weight.shape[0], out_order, path, "bias")
  if u is not None:
    u = _vector(u, weight.shape[0], out_order, path, "spectral u")
    _spectral(tree, path, kernel, u, _vector(v, weight.shape[1], None, path, "spectral v"))


def embedding(tree, path, table, u=None, v=None):
  """A class embedding (classes, features), as ours: PyTorch's SN of an Embedding iterates u
  over its rows (classes) and v over its features, ours the other way round."""
  table = np.asarray(table, np.float32)
  if table.ndim != 2:
    raise UserError(f"{'/'.join(path)}: an embedding of shape {table.shape}, not (classes, features)")
  tree[(PARAMS, *path, "embedding")] = table
  if u is not None:
    u, v = (
      _vector(u, table.shape[0], None, path, "spectral u"),
      _vector(v, table.shape[1], None, path, "spectral v"),
    )
    _spectral(tree, path, table, v, u)


def batch_norm(tree, path, running_mean, running_var, scale=None, bias=None):
  """BatchNorm statistics (and the affine scale/bias of an unconditional one)."""
  tree[(BATCH_STATS, *path, "mean")] = np.asarray(running_mean, np.float32)
  tree[(BATCH_STATS, *path, "var")] = np.asarray(running_var, np.float32)
  if scale is not None:
    tree[(PARAMS, *path, "scale")] = np.asarray(scale, np.float32)
    tree[(PARAMS, *path, "bias")] = np.asarray(bias, np.float32)


def nchw_rows(channels: int, side: int) -> np.ndarray:
  """The order that takes a linear layer's outputs reshaped as (C, side, side) (PyTorch) to
  (side, side, C) (ours)."""
  return np.arange(channels * side * side).reshape(channels, side, side).transpose(1, 2, 0).reshape(-1)
