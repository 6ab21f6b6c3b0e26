"""Inception-v3, FID variant, in Flax Linen: the network pytorch-fid uses.

It is torchvision's Inception3 with pytorch-fid's patches (`fid_inception_v3`):
FIDInceptionA/C/E_1 average-pool without counting the zero padding (as the TF
2015-12-05 graph does), FIDInceptionE_2 max-pools, BN eps is 1e-3 and the classifier
has 1008 outputs. Parameter names mirror the PyTorch module names, so the standard
weights file `pt_inception-2015-12-05-6726825d.pth` maps one to one. Reading it
needs no PyTorch (sagan_jax.torch_pickle).
"""

import functools
import hashlib
import logging
import pathlib
import urllib.request

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sagan_jax import workdir
from sagan_jax.errors import UserError
from sagan_jax.torch_pickle import load_torch_state_dict

FID_WEIGHTS_URL = (
  "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# The hash in the file name is the first 8 hex digits of the file's sha256.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
INPUT_SIZE = 299
NUM_LOGITS = 1008


# ----------------------------------------------------------------------------
# Network


class BasicConv2d(nn.Module):
  """Conv (no bias) + BN (eps 1e-3, running statistics) + ReLU, as torchvision's."""

  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(
      self.features,
      self.kernel,
      strides=self.stride,
      padding=((ph, ph), (pw, pw)),
      use_bias=False,
      precision=self.precision,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_exclude_pad(x):
  # TF's average pool ignores the padded zeros (pytorch-fid's count_include_pad=False).
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
  pool_features: int
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, name="branch1x1")(x)
    b5 = conv(48, name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, name="branch_pool")(_avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = conv(64, name="branch3x3dbl_1")(x)
    bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = conv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  channels_7x7: int
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = conv(192, name="branch1x1")(x)
    b7 = conv(c7, name="branch7x7_1")(x)
    b7 = conv(c7, **row, name="branch7x7_2")(b7)
    b7 = conv(192, **col, name="branch7x7_3")(b7)
    bd = conv(c7, name="branch7x7dbl_1")(x)
    bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
    bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
    bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
    bd = conv(192, **row, name="branch7x7dbl_5")(bd)
    bp = conv(192, name="branch_pool")(_avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = conv(192, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """E_1 (`max_pool=False`) average-pools ignoring the padding; E_2 (`max_pool=True`) max-pools."""

  max_pool: bool
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = conv(320, name="branch1x1")(x)
    b3 = conv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [conv(384, **row, name="branch3x3_2a")(b3), conv(384, **col, name="branch3x3_2b")(b3)], axis=-1
    )
    bd = conv(448, name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [conv(384, **row, name="branch3x3dbl_3a")(bd), conv(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1
    )
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_exclude_pad(x)
    bp = conv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) weights of F.interpolate(mode="bilinear", align_corners=False), one axis.

  Computed in float32 like PyTorch's CPU kernel, whose rounded source indices shift
  the weights by up to ~1e-5 at sizes of a few hundred.
  """
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = np.clip(src - lo.astype(f32), f32(0), f32(1))
  weights = np.zeros((out_size, in_size), f32)
  np.add.at(weights, (np.arange(out_size), lo), f32(1) - frac)
  np.add.at(weights, (np.arange(out_size), hi), frac)
  return weights


def resize_bilinear(images, size: int = INPUT_SIZE, precision: str = "highest"):
  """NHWC resize like torch's F.interpolate(bilinear, align_corners=False, no antialias).

  jax.image.resize would antialias when shrinking, which pytorch-fid does not.
  """
  _, h, w, _ = images.shape
  wh, ww = _bilinear_matrix(h, size), _bilinear_matrix(w, size)
  return jnp.einsum("oh,nhwc,pw->nopc", wh, images, ww, precision=precision)


def preprocess(images, precision: str = "highest"):
  """NHWC [-1, 1] images, 1 or 3 channels -> float32 (N, 299, 299, 3) network input."""
  x = jnp.asarray(images, jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.tile(x, (1, 1, 1, 3))
  return resize_bilinear(x, INPUT_SIZE, precision)


class FIDInceptionV3(nn.Module):
  """NHWC images in [-1, 1], any size, 1 or 3 channels -> (pool3 (N, 2048), logits (N, 1008)).

  Like pytorch-fid's InceptionV3(resize_input=True) fed [0, 1] images with
  normalize_input=True: resize to 299x299 bilinearly, then the network sees [-1, 1].
  `precision` applies to every conv/matmul: "highest" keeps float32 on GPU/TPU, whose
  default would round to TF32/bfloat16 and shift FID.
  """

  precision: str = "highest"

  @nn.compact
  def __call__(self, images):
    x = preprocess(images, self.precision)
    conv = functools.partial(BasicConv2d, precision=self.precision)
    p = dict(precision=self.precision)
    x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = conv(80, name="Conv2d_3b_1x1")(x)
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = FIDInceptionA(32, **p, name="Mixed_5b")(x)
    x = FIDInceptionA(64, **p, name="Mixed_5c")(x)
    x = FIDInceptionA(64, **p, name="Mixed_5d")(x)
    x = InceptionB(**p, name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = FIDInceptionC(c7, **p, name=name)(x)
    x = InceptionD(**p, name="Mixed_7a")(x)
    x = FIDInceptionE(max_pool=False, **p, name="Mixed_7b")(x)
    x = FIDInceptionE(max_pool=True, **p, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_LOGITS, precision=self.precision, name="fc")(pool)
    return pool, logits


@functools.partial(jax.jit, static_argnames=("precision",))
def inception_apply(variables, images, precision: str = "highest"):
  """(pool (N, 2048), logits (N, 1008)) of NHWC images in [-1, 1]; jitted."""
  return FIDInceptionV3(precision=precision).apply(variables, images)


def extract_features(variables, images, batch_size: int = 50, precision: str = "highest"):
  """Pool features and logits of many images as float32 numpy arrays, batch by batch.

  The last batch is padded to `batch_size` so one compiled program serves every call.
  """
  images = np.asarray(images)
  pools, logits = [], []
  for start in range(0, len(images), batch_size):
    batch = images[start : start + batch_size]
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - n,) + batch.shape[1:], batch.dtype)])
    pool, logit = inception_apply(variables, batch, precision=precision)
    pools.append(np.asarray(pool[:n]))
    logits.append(np.asarray(logit[:n]))
  return np.concatenate(pools), np.concatenate(logits)


@functools.cache
def _variable_shapes():
  """{flat path: shape} of FIDInceptionV3's variables, from an abstract init."""
  abstract = jax.eval_shape(
    FIDInceptionV3().init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),
  )
  return {k: v.shape for k, v in traverse_util.flatten_dict(abstract).items()}


def random_variables(seed: int = 0):
  """Random variables of the right structure, for tests and benchmarks.

  Drawn with numpy: a jitted Flax init compiles for ~40 s on CPU. He-scaled kernels and
  identity BN keep activations O(1) through the network.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in _variable_shapes().items():
    leaf = path[-1]
    if leaf == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    else:  # BN scale and running var 1; biases and running mean 0
      value = np.full(shape, 1.0 if leaf in ("scale", "var") else 0.0)
    flat[path] = jnp.asarray(value, jnp.float32)
  return traverse_util.unflatten_dict(flat)


# ----------------------------------------------------------------------------
# Weights: torch names -> Flax variables, and the standard FID weights file


def _flax_entry(name: str, value: np.ndarray):
  """(Flax variable path, value) of one torch state-dict entry; None for BN's step counter."""
  *path, leaf = name.split(".")
  if leaf == "num_batches_tracked":
    return None
  if leaf in ("running_mean", "running_var"):
    return ("batch_stats", *path, leaf.removeprefix("running_")), value
  if leaf == "bias":
    return ("params", *path, "bias"), value
  if leaf == "weight" and value.ndim == 4:  # conv OIHW -> HWIO
    return ("params", *path, "kernel"), value.transpose(2, 3, 1, 0)
  if leaf == "weight" and value.ndim == 2:  # linear (out, in) -> (in, out)
    return ("params", *path, "kernel"), value.T
  if leaf == "weight":  # BN
    return ("params", *path, "scale"), value
  raise UserError(f"unexpected entry {name!r} in the Inception state dict.")


def variables_from_state_dict(state_dict: dict[str, np.ndarray]):
  """Maps pytorch-fid's Inception state dict to FIDInceptionV3 variables.

  Raises UserError when the names or shapes do not match the network.
  """
  entries = (_flax_entry(name, value) for name, value in state_dict.items())
  flat = {path: jnp.asarray(value, jnp.float32) for path, value in filter(None, entries)}
  got_shapes = {k: v.shape for k, v in flat.items()}
  want_shapes = _variable_shapes()
  if got_shapes != want_shapes:
    differ = sorted("/".join(k) for k in set(got_shapes) ^ set(want_shapes)) or sorted(
      "/".join(k) for k in want_shapes if got_shapes[k] != want_shapes[k]
    )
    raise UserError(
      f"the state dict does not fit the FID Inception network (first mismatches: {differ[:3]})."
    )
  return traverse_util.unflatten_dict(flat)


def load_variables(path):
  """FIDInceptionV3 variables from a pytorch-fid Inception state dict file (no checksum)."""
  return variables_from_state_dict(load_torch_state_dict(path))


def _sha256(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _download(url: str, dest: pathlib.Path):
  tmp = dest.with_name(dest.name + ".part")
  with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
    for chunk in iter(lambda: response.read(1 << 20), b""):
      out.write(chunk)
  tmp.replace(dest)


def fid_weights_file(cache_dir=None, download: bool = True) -> pathlib.Path:
  """Path of the verified standard FID weights, downloading them once if allowed.

  Looks for `pt_inception-2015-12-05-6726825d.pth` in `cache_dir` (default
  $XDG_CACHE_HOME/sagan_jax); raises UserError saying where to put it when it is
  missing and cannot be downloaded, or when its sha256 does not start with 6726825d.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else pathlib.Path(workdir.cache_root())
  path = cache_dir / FID_WEIGHTS_NAME
  if not path.exists():
    where = f"download {FID_WEIGHTS_URL} and save it as {path}"
    if not download:
      raise UserError(f"FID Inception weights not found and downloads are disabled: {where}.")
    logging.info("Downloading the FID Inception weights to %s", path)
    try:
      cache_dir.mkdir(parents=True, exist_ok=True)
      _download(FID_WEIGHTS_URL, path)
    except OSError as e:  # urllib's URLError included
      raise UserError(f"FID Inception weights not found and the download failed ({e}): {where}.") from e
  if not _sha256(path).startswith(FID_WEIGHTS_SHA256_PREFIX):
    raise UserError(
      f"{path} is not the FID Inception weights file (its sha256 does not start "
      f"with {FID_WEIGHTS_SHA256_PREFIX}): delete it and download it again."
    )
  return path
