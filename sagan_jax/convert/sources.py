"""The peers' published SAGAN checkpoints: what each holds, the model it describes, and its
tensors as this package's variables.

- ``mmagic``: open-mmlab's mmagic / mmgeneration SAGAN (``SNGANGenerator`` / ``ProjDiscriminator``
  with ``SelfAttentionBlock``): one file, ``state_dict`` with ``generator.*``, ``discriminator.*``
  and, in runs with EMA, ``generator_ema.*``. Models trained by mmgeneration read and write BGR.
- ``studiogan``: POSTECH-CVLab's PyTorch-StudioGAN SAGAN (v0.2 and later): one file for G and one
  for D, each with a ``state_dict``; class-conditional BN as embeddings (v0.2) or as linear maps
  of one-hot labels (later); every ReLU in place, so D's later blocks add a shortcut of relu(x).

Both: PyTorch spectral norm on every conv/linear/embedding (the cBN embeddings too unless the
run turned it off), attention with C/8 query/key and C/2 value channels, keys and values max-
pooled 2×2, a learned scalar γ, conditional BN gain 1 + embedding, nearest-neighbour upsampling
before the conv, mean pooling after it. The model this package builds for them is the same
function (tests/test_convert.py checks it against each source's own code).
"""

from typing import NamedTuple

import numpy as np

from sagan_jax.convert import layout
from sagan_jax.errors import UserError
from sagan_jax.models.discriminator import D_ARCH
from sagan_jax.models.generator import BOTTOM_SIDE, G_ARCH

SOURCES = ("mmagic", "studiogan")


class Checkpoint(NamedTuple):
  """One source's tensors, split by network, with what the files say about the run."""

  source: str
  generator: dict  # PyTorch state dict of G (names without the network's prefix)
  discriminator: dict
  ema: dict | None  # of the EMA G, if the run kept one
  step: int  # the source's iteration counter (0 if the file names none)


def _strip(state: dict, prefix: str) -> dict:
  return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _state_dict(obj, path: str) -> dict:
  state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
  if not isinstance(state, dict) or not any(isinstance(v, np.ndarray) for v in state.values()):
    raise UserError(f"{path} holds no state dict of tensors: not a checkpoint of a PyTorch model")
  return state


def _counter(obj, *names) -> int:
  meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
  for where in (meta, obj):
    for name in names:
      value = where.get(name) if isinstance(where, dict) else None
      if isinstance(value, (int, np.integer)):
        return int(value)
  return 0


def read_mmagic(obj, path: str) -> Checkpoint:
  state = _state_dict(obj, path)
  generator, discriminator = _strip(state, "generator."), _strip(state, "discriminator.")
  if "noise2feat.weight_orig" not in generator or "decision.weight_orig" not in discriminator:
    hint = " (it looks like StudioGAN's: --from=studiogan)" if any(".0.conv2d1." in k for k in state) else ""
    raise UserError(
      f"{path} is not an mmagic/mmgeneration SAGAN checkpoint: no generator.noise2feat and "
      f"discriminator.decision tensors{hint}"
    )
  ema = _strip(state, "generator_ema.module.") or _strip(state, "generator_ema.")
  ema.pop("steps", None)
  return Checkpoint("mmagic", generator, discriminator, ema or None, _counter(obj, "iter", "step"))


def read_studiogan(g_obj, d_obj, g_path: str, d_path: str) -> Checkpoint:
  generator, discriminator = _state_dict(g_obj, g_path), _state_dict(d_obj, d_path)
  if "linear0.weight_orig" not in generator:
    hint = (
      " (it looks like mmagic's: --from=mmagic)" if any(k.startswith("generator.") for k in generator) else ""
    )
    raise UserError(f"{g_path} is not a StudioGAN SAGAN generator: no linear0 tensors{hint}")
  if "linear1.weight_orig" not in discriminator:
    raise UserError(f"{d_path} is not a StudioGAN SAGAN discriminator: no linear1 tensors")
  return Checkpoint("studiogan", generator, discriminator, None, _counter(g_obj, "step"))


# The module names of each source, as templates of a block prefix.
_NAMES = {
  "mmagic": dict(
    linear="noise2feat",
    g_block="conv_blocks.{}",
    d_block="conv_blocks.{}",
    d_first=0,  # the list index of D's first module after the head block
    norm="norm_{}",
    stats="{}.norm",
    convs=("conv_1.conv", "conv_2.conv", "shortcut.conv"),
    attention=("theta.conv", "phi.conv", "g.conv", "o.conv", "gamma"),
    out_bn="to_rgb.bn",
    out_conv="to_rgb.conv",
    head="from_rgb.{}",
    decision="decision",
    projection="proj_y",
  ),
  "studiogan": dict(
    linear="linear0",
    g_block="blocks.{}.0",
    d_block="blocks.{}.0",
    d_first=1,
    norm="bn{}",
    stats="{}.bn",
    convs=("conv2d1", "conv2d2", "conv2d0"),
    attention=("conv1x1_theta", "conv1x1_phi", "conv1x1_g", "conv1x1_attn", "sigma"),
    out_bn="bn4",
    out_conv="conv2d5",
    head="blocks.0.0.{}",
    decision="linear1",
    projection="embedding",
  ),
}


def _indices(state: dict, template: str) -> list:
  """The list indices a module list template ('conv_blocks.{}') has in a state dict."""
  head, _, tail = template.partition("{}")
  found = set()
  for key in state:
    if key.startswith(head):
      index = key[len(head) :].split(".", 1)[0]
      if index.isdigit() and key[len(head) + len(index) :].startswith(tail):
        found.add(int(index))
  return sorted(found)


def _is_attention(state: dict, prefix: str, names: dict) -> bool:
  return f"{prefix}.{names['attention'][-1]}" in state


class _Reader:
  """Tensors of one network by name, each used once: a name the mapping never reads is an
  unconverted tensor (reported), one it needs and lacks a checkpoint of another model."""

  def __init__(self, state: dict, what: str):
    self.state, self.what, self.used = state, what, set()

  def __call__(self, name: str) -> np.ndarray:
    if name not in self.state:
      raise UserError(f"the {self.what} has no tensor {name!r}: a checkpoint of another architecture")
    self.used.add(name)
    return self.state[name]

  def sn(self, prefix: str) -> dict:
    """weight, bias (if any), u, v of a spectrally normalised layer (or its plain weight)."""
    if f"{prefix}.weight_orig" in self.state:
      out = dict(
        weight=self(f"{prefix}.weight_orig"), u=self(f"{prefix}.weight_u"), v=self(f"{prefix}.weight_v")
      )
    else:
      out = dict(weight=self(f"{prefix}.weight"))
    if f"{prefix}.bias" in self.state:
      out["bias"] = self(f"{prefix}.bias")
    return out

  def unused(self) -> list:
    return sorted(k for k in self.state if k not in self.used and not k.endswith("num_batches_tracked"))


def _attention(tree, read: _Reader, prefix: str, path: str, names: dict):
  theta, phi, g, o, gamma = names["attention"]
  for source, ours in ((theta, "g"), (phi, "f"), (g, "h"), (o, "v")):
    layout.conv(tree, (path, ours), **read.sn(f"{prefix}.{source}"))
  tree[(layout.PARAMS, path, "gamma")] = np.asarray(read(f"{prefix}.{gamma}"), np.float32).reshape(())


def architecture(checkpoint: Checkpoint) -> dict:
  """The model fields (config.model.*) of the checkpoint's G and D, read from its shapes."""
  names, g, d = _NAMES[checkpoint.source], checkpoint.generator, checkpoint.discriminator
  g_modules = _indices(g, names["g_block"])
  g_attention = [i for i in g_modules if _is_attention(g, names["g_block"].format(i), names)]
  blocks = len(g_modules) - len(g_attention)
  resolution = next((r for r, (ins, _) in G_ARCH.items() if len(ins) == blocks), None)
  if resolution is None or len(g_attention) > 1:
    raise UserError(
      f"a generator of {blocks} blocks and {len(g_attention)} attention layers is no SAGAN "
      f"this package builds"
    )
  last_conv = f"{names['g_block'].format(g_modules[-1])}.{names['convs'][1]}"
  g_out = (g.get(f"{last_conv}.weight_orig", g.get(f"{last_conv}.weight"))).shape[0]
  ch = g_out // G_ARCH[resolution][1][-1]
  head = d.get(names["head"].format(names["convs"][0]) + ".weight_orig")
  d_ch = head.shape[0] // D_ARCH[resolution][0][0]
  z_dim = g[f"{names['linear']}.weight_orig"].shape[1]
  projection = d.get(f"{names['projection']}.weight_orig", d.get(f"{names['projection']}.weight"))
  attention = g_attention[0] if g_attention else None
  g_sides = (BOTTOM_SIDE * 2**attention,) if attention is not None else ()  # after that many blocks
  d_modules = _indices(d, names["d_block"])
  d_sides = (
    (resolution // 2,) if any(_is_attention(d, names["d_block"].format(i), names) for i in d_modules) else ()
  )
  value_ratio = key_ratio = 8
  if attention is not None:
    prefix = f"{names['g_block'].format(attention)}"
    theta, _, values, _, _ = names["attention"]
    channels = g[f"{prefix}.{theta}.weight_orig"].shape[1]
    key_ratio = channels // g[f"{prefix}.{theta}.weight_orig"].shape[0]
    value_ratio = channels // g[f"{prefix}.{values}.weight_orig"].shape[0]
  first_norm = f"{names['g_block'].format(g_modules[0])}.{names['norm'].format(1)}"
  sn_gains = any(k.startswith(first_norm) and k.endswith("weight_orig") for k in g)
  return dict(
    resolution=resolution,
    image_channels=3,
    num_classes=int(projection.shape[0]),
    ch=int(ch),
    d_ch=int(d_ch) if d_ch != ch else None,
    z_dim=int(z_dim),
    attention_resolutions=g_sides if g_sides == d_sides else (),
    g_attention_resolutions=g_sides if g_sides != d_sides else None,
    d_attention_resolutions=d_sides if g_sides != d_sides else None,
    key_channel_ratio=int(key_ratio),
    value_channel_ratio=int(value_ratio),
    pool_kv=True,
    sn_cbn_gains=bool(sn_gains),
    g_spectral_norm=True,
    d_spectral_norm=True,
  )


def _conditional_bn(tree, read: _Reader, prefix: str, path: tuple, source: str, norm: str, names: dict):
  stats = f"{prefix}.{names['stats'].format(norm)}"
  layout.batch_norm(tree, path, read(f"{stats}.running_mean"), read(f"{stats}.running_var"))
  if source == "mmagic":
    tables = (("gain", "weight_embedding"), ("bias", "bias_embedding"))
  elif f"{prefix}.{norm}.embed0.weight_orig" in read.state or f"{prefix}.{norm}.embed0.weight" in read.state:
    tables = (("gain", "embed0"), ("bias", "embed1"))  # StudioGAN v0.2: embeddings
  else:
    tables = (("gain", "gain"), ("bias", "bias"))  # StudioGAN later: linear maps of one-hot labels
  for ours, theirs in tables:
    layer = read.sn(f"{prefix}.{norm}.{theirs}")
    if source == "studiogan" and theirs in ("gain", "bias"):  # (C, classes): the table transposed
      layout.embedding(tree, (*path, ours), layer["weight"].T, u=layer.get("v"), v=layer.get("u"))
    else:
      layout.embedding(tree, (*path, ours), layer["weight"], u=layer.get("u"), v=layer.get("v"))


def generator_variables(checkpoint: Checkpoint, state: dict, bgr: bool) -> tuple:
  """(flat variables of our G, unconverted tensor names) of a G state dict; ``bgr``: the
  source's images are BGR (its output channels are reversed into RGB)."""
  names, source = _NAMES[checkpoint.source], checkpoint.source
  read, tree = _Reader(state, "generator"), {}
  linear = read.sn(names["linear"])
  c0 = linear["weight"].shape[0] // (BOTTOM_SIDE * BOTTOM_SIDE)
  layout.linear(tree, ("linear",), **linear, out_order=layout.nchw_rows(c0, BOTTOM_SIDE))
  block, side = 0, BOTTOM_SIDE
  for index in _indices(state, names["g_block"]):
    prefix = names["g_block"].format(index)
    if _is_attention(state, prefix, names):
      _attention(tree, read, prefix, f"attention{side}", names)
      continue
    path = f"block{block}"
    for k in (1, 2):
      _conditional_bn(tree, read, prefix, (path, f"bn{k}"), source, names["norm"].format(k), names)
    for source_name, ours in zip(names["convs"], ("conv1", "conv2", "conv_sc"), strict=True):
      layout.conv(tree, (path, ours), **read.sn(f"{prefix}.{source_name}"))
    block, side = block + 1, side * 2
  out_bn = names["out_bn"]
  layout.batch_norm(
    tree,
    ("bn_out",),
    read(f"{out_bn}.running_mean"),
    read(f"{out_bn}.running_var"),
    read(f"{out_bn}.weight"),
    read(f"{out_bn}.bias"),
  )
  out = read.sn(names["out_conv"])
  layout.conv(tree, ("conv_out",), **out, out_order=np.arange(3)[::-1] if bgr else None)
  return tree, read.unused()


def discriminator_variables(checkpoint: Checkpoint, bgr: bool) -> tuple:
  """(flat variables of our D, unconverted tensor names); ``bgr``: the source reads BGR images
  (its first convs' input channels are reversed, so ours reads RGB)."""
  names, state = _NAMES[checkpoint.source], checkpoint.discriminator
  read, tree = _Reader(state, "discriminator"), {}
  rgb = np.arange(3)[::-1] if bgr else None
  for source_name, ours in zip(names["convs"], ("conv1", "conv2", "conv_sc"), strict=True):
    layer = read.sn(names["head"].format(source_name))
    layout.conv(tree, ("block0", ours), **layer, in_order=rgb if ours != "conv2" else None)
  resolution = architecture(checkpoint)["resolution"]
  downs = D_ARCH[resolution][1]
  block, side = 1, resolution // 2
  for index in _indices(state, names["d_block"]):
    if index < names["d_first"]:
      continue
    prefix = names["d_block"].format(index)
    if _is_attention(state, prefix, names):
      _attention(tree, read, prefix, f"attention{side}", names)
      continue
    path = f"block{block}"
    for source_name, ours in zip(names["convs"], ("conv1", "conv2", "conv_sc"), strict=True):
      if ours == "conv_sc" and not any(k.startswith(f"{prefix}.{source_name}.") for k in state):
        continue  # an identity shortcut, as ours where the block keeps its width and side
      layout.conv(tree, (path, ours), **read.sn(f"{prefix}.{source_name}"))
    side = side // 2 if downs[block] else side
    block += 1
  layout.linear(tree, ("linear",), **read.sn(names["decision"]))
  projection = read.sn(names["projection"])
  layout.embedding(tree, ("embed",), projection["weight"], u=projection.get("u"), v=projection.get("v"))
  return tree, read.unused()
