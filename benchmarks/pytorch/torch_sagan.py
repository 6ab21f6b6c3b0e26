"""PyTorch baseline: the JAX model and train step of configs/fashion_mnist.py, in eager PyTorch.

  python benchmarks/pytorch/torch_sagan.py [--ch=4] [--verify] [--layouts [--threads=2]]

The same network as sagan_jax.models (ResNet G with conditional BN, projection D,
self-attention at the config's sides in both, SN on every conv / linear / projection
embedding, and on the conditional-BN embeddings only when config.model.sn_cbn_gains),
the same initialisers, and the same step as sagan_jax.step: d_steps_per_g_step D updates
(real and fake in one D pass, so SN's power iteration advances once per D update), then
one G update (G's SN vectors and BN running statistics move; D's SN vectors do not), then
the EMA of G's weights; hinge loss; two Adams (β1, β2, ε, learning rates from the config).

Written as a PyTorch user would write it for speed, without changing the math: no
torch.compile; channels_last activations and weights (--layouts: 1.6× faster than NCHW at
ch=4 on 1 thread; within the noise of a loaded machine at ch=16); attention through
F.scaled_dot_product_attention with
scale 1 (the same softmax over keys; PyTorch's fused CPU kernel, 1.35× faster at ch=4 than
bmm-softmax-bmm, which attention='explicit' keeps); batch norm through oneDNN, its running
averages from the statistics native_batch_norm returns (no second pass); fused CPU Adam;
a foreach EMA; D's parameters frozen in the G update (no D weight gradients, as JAX, which
differentiates g_params only); in-place ReLUs where autograd allows.

What it leaves out of the JAX step, all cheap: the non-finite guard (JAX checks every loss,
gradient and new state and keeps the old state if any is not finite), the per-step metrics
(gradient norms, D means, γ) and the step counter's device copy.

Spectral norm is hand-written rather than torch.nn.utils.parametrizations.spectral_norm:
the JAX layers take an ``update_stats`` flag per call (the power iteration runs in the
D update's D pass and the G update's G pass, never in the D update's G pass nor the G
update's D pass), which train()/eval() cannot express, and the parametrization's 15 power
iterations at construction would change the initial state. The arithmetic per call is
the same as the parametrization's: one power iteration with u, v detached, σ = uᵀ W v with
the gradient flowing through σ.

The script asserts that the parameter counts equal the JAX model's (--ch). --verify loads the
JAX initial state into this model and runs two train steps on both with the same batch and
noise (JAX's): the forward passes agree to ~5e-6, the first step's D parameters and SN
vectors to ~2e-7; in G the entries whose true gradient is 0 differ (conv biases that only
feed batch norm, while γ = 0: float noise, which Adam with β1 = 0 turns into ±lr steps),
and the differences then spread slowly from step to step.
"""

import argparse
import sys
import time

# PyPI's Linux torch brings Triton, whose native library crashes a process that has loaded
# TensorFlow's (the package's data pipeline); torch imports it only to probe for GPU kernels.
sys.modules.setdefault("triton", None)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Copies of sagan_jax.models.generator.G_ARCH / discriminator.D_ARCH (--verify and the
# test check that they still agree).
G_ARCH = {
  32: ((4, 4, 4), (4, 4, 4)),
  64: ((16, 16, 8, 4), (16, 8, 4, 2)),
  128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
  256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
}
D_ARCH = {
  32: ((4, 4, 4, 4), (True, True, False, False)),
  64: ((1, 2, 4, 8, 16), (True, True, True, True, False)),
  128: ((1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
  256: ((1, 2, 4, 8, 8, 16, 16), (True, True, True, True, True, True, False)),
}
BOTTOM_SIDE = 4
SN_EPS = 1e-12


def _l2_normalize(x, eps=SN_EPS):
  return x * torch.rsqrt(torch.sum(x * x) + eps)


class _SNLayer(nn.Module):
  """A layer whose ``weight`` is divided by its spectral norm (layers.SpectralWeight).

  ``_matrix(weight)`` is the weight as a (len(u), len(v)) matrix M: JAX views the kernel as
  w = (prod(shape[:-1]), shape[-1]) with u of length shape[-1] (the output features), so
  M = wᵀ up to the order of w's rows, and the iteration v = normalize(w u) = normalize(Mᵀ u),
  u = normalize(wᵀ v) = normalize(M v), σ = vᵀ w u = uᵀ M v is JAX's, step for step.
  """

  def _init_sn(self, use_sn):
    self.use_sn = use_sn
    if use_sn:
      with torch.no_grad():
        m = self._matrix(self.weight)
        u = _l2_normalize(torch.randn(m.shape[0]))
        self.register_buffer("u", u)
        self.register_buffer("v", _l2_normalize(m.T @ u))
        self.register_buffer("sigma", torch.ones(()))

  def normalized_weight(self, update_stats):
    w = self.weight
    if not self.use_sn:
      return w
    m = self._matrix(w)
    u, v = self.u, self.v
    if update_stats:
      with torch.no_grad():  # u, v stopped: the gradient flows through σ only
        v = _l2_normalize(torch.mv(m.T, u))
        u = _l2_normalize(torch.mv(m, v))
        self.u.copy_(u)
        self.v.copy_(v)
    sigma = torch.dot(u, torch.mv(m, v))
    if update_stats:
      self.sigma.copy_(sigma.detach())
    sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))  # an all-zero weight stays as is
    return w / sigma


class SNConv2d(_SNLayer):
  """Stride-1 SAME conv, xavier-uniform kernel, zero bias (layers.SNConv)."""

  def __init__(self, in_ch, out_ch, k, bias=True, use_sn=True):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(out_ch, in_ch, k, k))
    nn.init.xavier_uniform_(self.weight)  # fans as Flax's for HWIO: in·k², out·k²
    self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
    self.padding = (k - 1) // 2
    self._init_sn(use_sn)

  @staticmethod
  def _matrix(w):
    return w.reshape(w.shape[0], -1)

  def forward(self, x, update_stats=False):
    return F.conv2d(x, self.normalized_weight(update_stats), self.bias, padding=self.padding)


class SNLinear(_SNLayer):
  def __init__(self, in_features, out_features, bias=True, use_sn=True):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(out_features, in_features))
    nn.init.xavier_uniform_(self.weight)
    self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
    self._init_sn(use_sn)

  @staticmethod
  def _matrix(w):
    return w

  def forward(self, x, update_stats=False):
    return F.linear(x, self.normalized_weight(update_stats), self.bias)


class SNEmbedding(_SNLayer):
  """(num_classes, features) table; SN views it as that matrix (u has ``features`` entries)."""

  def __init__(self, num_embeddings, features, use_sn=True, init="xavier"):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(num_embeddings, features))
    if init == "xavier":
      nn.init.xavier_uniform_(self.weight)
    else:
      nn.init.zeros_(self.weight)
    self._init_sn(use_sn)

  @staticmethod
  def _matrix(w):
    return w.T

  def forward(self, labels, update_stats=False):
    return F.embedding(labels, self.normalized_weight(update_stats))


class BatchNorm(nn.Module):
  """layers.BatchNorm: batch statistics over (N, H, W), biased variance, running averages
  with Flax's momentum 0.9, ε 1e-5; conditional: gain = 1 + embed_g(y), bias = embed_b(y)."""

  def __init__(self, channels, num_classes=0, sn_gains=False, momentum=0.9, eps=1e-5):
    super().__init__()
    self.momentum, self.eps, self.num_classes = momentum, eps, num_classes
    self.register_buffer("mean", torch.zeros(channels))
    self.register_buffer("var", torch.ones(channels))
    if num_classes:
      init = "xavier" if sn_gains else "zeros"
      self.gain = SNEmbedding(num_classes, channels, use_sn=sn_gains, init=init)
      self.bias = SNEmbedding(num_classes, channels, use_sn=sn_gains, init=init)
    else:
      self.scale = nn.Parameter(torch.ones(channels))
      self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x, labels=None, train=True, update_stats=False):
    affine = (None, None) if self.num_classes else (self.scale, self.bias)
    if not train:
      y = F.batch_norm(x, self.mean, self.var, *affine, training=False, eps=self.eps)
    elif update_stats:
      # native_batch_norm also returns the batch mean and 1/√(var + ε) it normalised with:
      # JAX's running averages (of the biased variance) at no extra pass over x.
      y, mean, invstd = torch.native_batch_norm(x, *affine, None, None, True, 0.0, self.eps)
      with torch.no_grad():
        self.mean.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
        self.var.mul_(self.momentum).add_(invstd.pow(-2) - self.eps, alpha=1 - self.momentum)
    else:
      y = F.batch_norm(x, None, None, *affine, training=True, eps=self.eps)
    if not self.num_classes:
      return y
    gain = 1.0 + self.gain(labels, update_stats)
    bias = self.bias(labels, update_stats)
    return torch.addcmul(bias[:, :, None, None], y, gain[:, :, None, None])


def _upsample(x):
  return F.interpolate(x, scale_factor=2, mode="nearest")


class SelfAttention(nn.Module):
  """attention.SelfAttention: f, g, h 1×1 SN convs (no bias), β = softmax over keys of
  g(x_j)·f(x_i) (no 1/√d), o = W_v(Σ_i β_ji h(x_i)), y = x + γ o, γ = 0 at init.

  impl 'sdpa': F.scaled_dot_product_attention with scale 1 (the same softmax, PyTorch's
  fused CPU kernel: the faster on these shapes); 'explicit': bmm, softmax, bmm (JAX's 'xla').
  """

  def __init__(
    self, channels, key_channel_ratio=8, value_channel_ratio=8, pool_kv=False, use_sn=True, impl="sdpa"
  ):
    super().__init__()
    ck, cv = max(1, channels // key_channel_ratio), max(1, channels // value_channel_ratio)
    self.f = SNConv2d(channels, ck, 1, bias=False, use_sn=use_sn)
    self.g = SNConv2d(channels, ck, 1, bias=False, use_sn=use_sn)
    self.h = SNConv2d(channels, cv, 1, bias=False, use_sn=use_sn)
    self.v = SNConv2d(cv, channels, 1, bias=False, use_sn=use_sn)
    self.gamma = nn.Parameter(torch.zeros(()))
    self.pool_kv, self.impl = pool_kv, impl
    if impl not in ("sdpa", "explicit"):
      raise ValueError(f"attention impl {impl!r}: 'sdpa' or 'explicit'")

  def forward(self, x, update_stats=False):
    b, _, height, width = x.shape
    f = self.f(x, update_stats)  # keys
    g = self.g(x, update_stats)  # queries
    h = self.h(x, update_stats)  # values
    if self.pool_kv:
      f, h = F.max_pool2d(f, 2), F.max_pool2d(h, 2)
    cv = h.shape[1]
    tokens = lambda t: t.permute(0, 2, 3, 1).reshape(b, -1, t.shape[1])  # (B, N, C); a view if channels_last
    q, k, v = tokens(g), tokens(f), tokens(h)
    if self.impl == "sdpa":
      o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
    else:
      beta = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # [b, j, i]: query j, key i
      o = torch.bmm(beta, v)
    o = o.reshape(b, height, width, cv).permute(0, 3, 1, 2)  # channels_last strides
    if x.is_contiguous():  # NCHW model: NCHW maps
      o = o.contiguous()
    o = self.v(o, update_stats)
    return x + self.gamma * o


class GBlock(nn.Module):
  def __init__(self, in_ch, out_ch, num_classes, use_sn, sn_gains):
    super().__init__()
    self.bn1 = BatchNorm(in_ch, num_classes, sn_gains)
    self.conv1 = SNConv2d(in_ch, out_ch, 3, use_sn=use_sn)
    self.bn2 = BatchNorm(out_ch, num_classes, sn_gains)
    self.conv2 = SNConv2d(out_ch, out_ch, 3, use_sn=use_sn)
    self.conv_sc = SNConv2d(in_ch, out_ch, 1, use_sn=use_sn)

  def forward(self, x, y, train, update_stats):
    h = F.relu(self.bn1(x, y, train, update_stats), inplace=True)
    h = self.conv1(_upsample(h), update_stats)
    h = F.relu(self.bn2(h, y, train, update_stats), inplace=True)
    h = self.conv2(h, update_stats)
    return h + self.conv_sc(_upsample(x), update_stats)  # 1×1 conv after the upsample, as JAX


class Generator(nn.Module):
  def __init__(
    self,
    resolution=32,
    ch=4,
    z_dim=128,
    num_classes=10,
    image_channels=1,
    attention_sides=(16,),
    use_sn=True,
    sn_gains=False,
    attention_kwargs=None,
    memory_format=torch.contiguous_format,
  ):
    super().__init__()
    in_mult, out_mult = G_ARCH[resolution]
    sides = tuple(BOTTOM_SIDE * 2 ** (i + 1) for i in range(len(in_mult)))
    if set(attention_sides) - set(sides):
      raise ValueError(f"generator sides are {sides}, got attention at {attention_sides}")
    self.c0, self.memory_format = in_mult[0] * ch, memory_format
    self.linear = SNLinear(z_dim, BOTTOM_SIDE * BOTTOM_SIDE * self.c0, use_sn=use_sn)
    self.layers = []
    for i, (cin, cout, side) in enumerate(zip(in_mult, out_mult, sides, strict=True)):
      self.add_module(f"block{i}", GBlock(cin * ch, cout * ch, num_classes, use_sn, sn_gains))
      self.layers.append(f"block{i}")
      if side in attention_sides:
        self.add_module(
          f"attention{side}", SelfAttention(cout * ch, use_sn=use_sn, **(attention_kwargs or {}))
        )
        self.layers.append(f"attention{side}")
    self.bn_out = BatchNorm(out_mult[-1] * ch)
    self.conv_out = SNConv2d(out_mult[-1] * ch, image_channels, 3, use_sn=use_sn)

  def forward(self, z, y, train=True, update_stats=False):
    h = self.linear(z, update_stats)
    # JAX reshapes the linear output to NHWC (B, 4, 4, C): the same feature order here.
    h = h.view(z.shape[0], BOTTOM_SIDE, BOTTOM_SIDE, self.c0).permute(0, 3, 1, 2)
    h = h.contiguous(memory_format=self.memory_format)
    for name in self.layers:
      layer = getattr(self, name)
      h = layer(h, y, train, update_stats) if name.startswith("block") else layer(h, update_stats)
    h = F.relu(self.bn_out(h, train=train, update_stats=update_stats), inplace=True)
    return torch.tanh(self.conv_out(h, update_stats))


class DBlock(nn.Module):
  def __init__(self, in_ch, out_ch, downsample, preactivation, use_sn):
    super().__init__()
    self.downsample, self.preactivation = downsample, preactivation
    self.conv1 = SNConv2d(in_ch, out_ch, 3, use_sn=use_sn)
    self.conv2 = SNConv2d(out_ch, out_ch, 3, use_sn=use_sn)
    self.conv_sc = SNConv2d(in_ch, out_ch, 1, use_sn=use_sn) if downsample or in_ch != out_ch else None

  def forward(self, x, update_stats):
    h = F.relu(x) if self.preactivation else x  # x is the shortcut too: not in place
    h = self.conv1(h, update_stats)
    h = self.conv2(F.relu(h, inplace=True), update_stats)
    if self.downsample:
      h = F.avg_pool2d(h, 2)
    shortcut = x
    if self.conv_sc is not None:
      if self.preactivation:  # conv then pool; the first block pools first
        shortcut = self.conv_sc(shortcut, update_stats)
        shortcut = F.avg_pool2d(shortcut, 2) if self.downsample else shortcut
      else:
        shortcut = F.avg_pool2d(shortcut, 2) if self.downsample else shortcut
        shortcut = self.conv_sc(shortcut, update_stats)
    return h + shortcut


class Discriminator(nn.Module):
  def __init__(
    self,
    resolution=32,
    ch=4,
    num_classes=10,
    image_channels=1,
    attention_sides=(16,),
    use_sn=True,
    attention_kwargs=None,
  ):
    super().__init__()
    out_mult, downs = D_ARCH[resolution]
    self.layers, side, cin, attended = [], resolution, image_channels, set()
    for i, (mult, down) in enumerate(zip(out_mult, downs, strict=True)):
      self.add_module(f"block{i}", DBlock(cin, mult * ch, down, i > 0, use_sn))
      self.layers.append(f"block{i}")
      cin, side = mult * ch, side // 2 if down else side
      if side in attention_sides and side not in attended:
        attended.add(side)
        self.add_module(f"attention{side}", SelfAttention(cin, use_sn=use_sn, **(attention_kwargs or {})))
        self.layers.append(f"attention{side}")
    if set(attention_sides) - attended:
      raise ValueError(f"discriminator has no side {sorted(set(attention_sides) - attended)}")
    self.linear = SNLinear(cin, 1, use_sn=use_sn)
    self.embed = SNEmbedding(num_classes, cin, use_sn=use_sn)

  def forward(self, x, y, update_stats=False):
    h = x
    for name in self.layers:
      h = getattr(self, name)(h, update_stats)
    h = torch.sum(F.relu(h, inplace=True), dim=(2, 3))
    out = self.linear(h, update_stats)[:, 0]
    return out + torch.sum(self.embed(y, update_stats) * h, dim=-1)


def parameter_count(module):
  return sum(p.numel() for p in module.parameters())


def build_models(config, memory_format=torch.contiguous_format, attention_impl="sdpa"):
  """(G, D) of a sagan_jax config (ml_collections ConfigDict), float32."""
  m = config.model
  if m.attention_block != "self_attention":
    raise ValueError("the baseline has only the self-attention block")
  if config.dtype != "float32":
    raise ValueError("the baseline is float32")
  sides = lambda which: tuple(
    m.attention_resolutions
    if m.get(f"{which}_attention_resolutions") is None
    else m.get(f"{which}_attention_resolutions")
  )
  attention = dict(
    key_channel_ratio=m.key_channel_ratio,
    value_channel_ratio=m.value_channel_ratio,
    pool_kv=m.pool_kv,
    impl=attention_impl,
  )
  generator = Generator(
    m.resolution,
    m.ch,
    m.z_dim,
    m.num_classes,
    m.image_channels,
    sides("g"),
    m.g_spectral_norm,
    m.sn_cbn_gains,
    attention,
    memory_format,
  )
  d_ch = m.ch if m.get("d_ch") is None else m.d_ch
  discriminator = Discriminator(
    m.resolution, d_ch, m.num_classes, m.image_channels, sides("d"), m.d_spectral_norm, attention
  )
  return generator, discriminator


def hinge_d_loss(d_real, d_fake):
  return torch.mean(F.relu(1.0 - d_real)) + torch.mean(F.relu(1.0 + d_fake))


def hinge_g_loss(d_fake):
  return -torch.mean(d_fake)


class Trainer:
  """G, D, their Adams and the EMA of G; ``step`` is sagan_jax.step's train_step."""

  def __init__(self, config, memory_format=torch.channels_last, adam="fused", attention="sdpa", seed=0):
    if config.loss != "hinge":
      raise ValueError("the baseline has the hinge loss only")
    torch.manual_seed(seed)
    self.config, self.memory_format = config, memory_format
    self.G, self.D = build_models(config, memory_format, attention)
    # PyTorch's channels_last recipe: weights too, so that every conv (even those whose
    # 1-channel input is both layouts at once) picks the channels_last kernels.
    self.G.to(memory_format=memory_format)
    self.D.to(memory_format=memory_format)
    o = config.optimizer
    impl = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for": dict(foreach=False)}[adam]
    adam_ = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(o.b1, o.b2), eps=o.eps, **impl)
    self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
    self.g_opt, self.d_opt = adam_(self.g_params, o.g_lr), adam_(self.d_params, o.d_lr)
    self.ema = [p.detach().clone() for p in self.g_params]
    self.step_count = 0

  def _noise(self, batch_size):
    m = self.config.model
    return torch.randn(batch_size, m.z_dim), torch.randint(0, m.num_classes, (batch_size,))

  def d_update(self, images, labels, noise=None):
    z, y_fake = noise if noise is not None else self._noise(images.shape[0])
    with torch.no_grad():  # G in train mode (batch statistics), its running stats and SN frozen
      fake = self.G(z, y_fake, train=True, update_stats=False)
    # Real and fake in one pass, so SN's power iteration advances once per D step.
    x = torch.cat([images, fake.contiguous(memory_format=self.memory_format)])
    logits = self.D(x, torch.cat([labels, y_fake]), update_stats=True)
    d_real, d_fake = logits.chunk(2)
    loss = hinge_d_loss(d_real, d_fake)
    self.d_opt.zero_grad(set_to_none=True)
    loss.backward()
    self.d_opt.step()
    return loss.detach()

  def g_update(self, noise=None):
    z, y = noise if noise is not None else self._noise(self.config.batch_size)
    for p in self.d_params:  # no D weight gradients in the G update (JAX differentiates g_params only)
      p.requires_grad_(False)
    fake = self.G(z, y, train=True, update_stats=True)
    loss = hinge_g_loss(self.D(fake, y, update_stats=False))
    self.g_opt.zero_grad(set_to_none=True)
    loss.backward()
    self.g_opt.step()
    for p in self.d_params:
      p.requires_grad_(True)
    return loss.detach()

  @torch.no_grad()
  def update_ema(self):
    c = self.config
    t = self.step_count  # G updates made (step() counts before this), as sagan_jax.step.ema_decay
    if c.ema_schedule == "power":
      decay = (1.0 - 1.0 / t) ** (c.ema_power_gamma + 1.0)
    else:
      decay = 0.0 if t < c.ema_start_step else c.ema_decay
    torch._foreach_mul_(self.ema, decay)
    torch._foreach_add_(self.ema, [p.detach() for p in self.g_params], alpha=1.0 - decay)

  def step(self, images, labels, noise=None):
    """images (D steps, B, C, H, W) in self.memory_format, labels (D steps, B) int64; noise:
    optional [(z, y) per D step] + [(z, y) of the G step] (--verify passes JAX's)."""
    d_losses = [
      self.d_update(images[i], labels[i], None if noise is None else noise[i]) for i in range(images.shape[0])
    ]
    g_loss = self.g_update(None if noise is None else noise[-1])
    self.step_count += 1
    self.update_ema()
    return {"d_loss": d_losses[-1], "g_loss": g_loss}

  def batch(self, images_nhwc, labels):
    """(D steps, B, H, W, C) numpy images and (D steps, B) labels, as ``step`` takes them."""
    # NHWC memory viewed as (…, C, H, W): each slice x[i] is channels_last already.
    x = torch.as_tensor(images_nhwc).permute(0, 1, 4, 2, 3)
    if self.memory_format != torch.channels_last:
      x = x.contiguous()
    return x, torch.as_tensor(labels, dtype=torch.int64)


def make_config(ch=4, batch_size=32, variant=""):
  from configs import fashion_mnist

  config = fashion_mnist.get_config(variant)
  config.model.ch = ch
  config.batch_size = batch_size
  return config


def jax_parameter_counts(config):
  from sagan_jax import programs

  state = programs.abstract_state(config)
  return programs.parameter_count(state.g_params), programs.parameter_count(state.d_params)


def check_parameter_counts(config):
  """Asserts torch's G and D parameter counts equal the JAX model's; returns them."""
  generator, discriminator = build_models(config)
  torch_counts = parameter_count(generator), parameter_count(discriminator)
  jax_counts = jax_parameter_counts(config)
  assert torch_counts == jax_counts, f"parameter counts differ: torch {torch_counts}, JAX {jax_counts}"
  return torch_counts


# ---------------------------------------------------------------------------------------
# --verify: the JAX initial state in this model, one step each on the same batch and noise.


def _flat(tree):
  import flax

  return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def _to_torch(path, value):
  import numpy as np

  a = np.asarray(value, np.float32)
  if path.endswith("/kernel") and a.ndim == 4:  # HWIO -> OIHW
    a = a.transpose(3, 2, 0, 1)
  elif path.endswith("/kernel") and a.ndim == 2:  # (in, out) -> (out, in)
    a = a.T
  return torch.from_numpy(np.array(a, np.float32, order="C"))  # a copy: writable, 0-d stays 0-d


def _torch_name(jax_path):
  """'block0/conv1/kernel' -> 'block0.conv1.weight'; 'block0/bn1/gain/embedding' -> '…gain.weight'."""
  parts = jax_path.split("/")
  leaf = {"kernel": "weight", "embedding": "weight"}.get(parts[-1], parts[-1])
  return ".".join(parts[:-1] + [leaf])


def load_jax_state(trainer, state):
  """Copies a sagan_jax TrainState (params, SN vectors, BN statistics, EMA) into ``trainer``."""
  import numpy as np

  for module, params, spectral, stats, ema in (
    (trainer.G, state.g_params, state.g_spectral, state.g_batch_stats, state.ema_params),
    (trainer.D, state.d_params, state.d_spectral, None, None),
  ):
    named = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    flat = _flat(params)
    assert set(map(_torch_name, flat)) == set(named), (sorted(map(_torch_name, flat)), sorted(named))
    with torch.no_grad():
      for path, value in flat.items():
        named[_torch_name(path)].copy_(_to_torch(path, value))
      for path, value in _flat(spectral).items():  # '<layer>/sn/u'
        layer_path, leaf = path.rsplit("/sn/", 1)
        layer = module.get_submodule(layer_path.replace("/", "."))
        a = np.asarray(value, np.float32)
        if leaf == "v" and isinstance(layer, SNConv2d):  # JAX rows (kh, kw, in) -> torch (in, kh, kw)
          o, i, kh, kw = layer.weight.shape
          a = a.reshape(kh, kw, i).transpose(2, 0, 1).reshape(-1)
        getattr(layer, leaf).copy_(torch.from_numpy(np.array(a, order="C")))
      for path, value in _flat(stats or {}).items():
        buffers[path.replace("/", ".")].copy_(torch.from_numpy(np.array(value, np.float32)))
    if ema is not None:
      flat_ema = {_torch_name(k): (k, v) for k, v in _flat(ema).items()}
      with torch.no_grad():
        for i, (name, _) in enumerate(module.named_parameters()):
          trainer.ema[i].copy_(_to_torch(*flat_ema[name]))


def jax_variables(trainer, abstract_state):
  """This trainer's G and D as sagan_jax variable dicts ({'params', 'batch_stats', SPECTRAL}),
  shaped like ``abstract_state`` (programs.abstract_state): load_jax_state's inverse."""
  import flax
  import numpy as np

  from sagan_jax.models.layers import SPECTRAL

  def tree(module, abstract, kind):
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    flat = {}
    for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract)).items():
      path_s = "/".join(path)
      if kind == "params":
        a = named[_torch_name(path_s)].detach().numpy()
        if path[-1] == "kernel":
          a = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T
      elif kind == "batch_stats":
        a = named[".".join(path)].numpy()
      else:  # '<layer>/sn/<u|v|sigma>'
        layer = module.get_submodule(".".join(path[:-2]))
        a = getattr(layer, path[-1]).numpy()
        if path[-1] == "v" and isinstance(layer, SNConv2d):  # torch (in, kh, kw) -> JAX (kh, kw, in)
          o, i, kh, kw = layer.weight.shape
          a = a.reshape(i, kh, kw).transpose(1, 2, 0).reshape(-1)
      assert a.shape == leaf.shape, (path_s, a.shape, leaf.shape)
      flat[path] = np.array(a, np.float32)
    return flax.traverse_util.unflatten_dict(flat)

  g_vars = {
    "params": tree(trainer.G, abstract_state.g_params, "params"),
    "batch_stats": tree(trainer.G, abstract_state.g_batch_stats, "batch_stats"),
    SPECTRAL: tree(trainer.G, abstract_state.g_spectral, SPECTRAL),
  }
  d_vars = {
    "params": tree(trainer.D, abstract_state.d_params, "params"),
    SPECTRAL: tree(trainer.D, abstract_state.d_spectral, SPECTRAL),
  }
  return g_vars, d_vars


def compare_with_jax_state(trainer, state, tol=1e-5):
  """This trainer against a sagan_jax TrainState: per group, the largest |Δ| and the
  entries off by more than ``tol`` (with the tensors they sit in)."""
  import numpy as np

  groups = {}

  def add(group, name, got, ref):
    d = np.abs(np.asarray(got, np.float32) - np.asarray(ref, np.float32))
    g = groups.setdefault(group, {"max_abs_diff": 0.0, "entries_off": 0, "entries": 0, "tensors_off": {}})
    g["max_abs_diff"] = max(g["max_abs_diff"], float(d.max()))
    g["entries"] += d.size
    off = int((d > tol).sum())
    if off:
      g["entries_off"] += off
      g["tensors_off"][name] = off

  for tag, module, params, spectral in (
    ("g", trainer.G, state.g_params, state.g_spectral),
    ("d", trainer.D, state.d_params, state.d_spectral),
  ):
    named = dict(module.named_parameters())
    for path, value in _flat(params).items():
      add(f"{tag}_params", path, named[_torch_name(path)].detach(), _to_torch(path, value))
    for path, value in _flat(spectral).items():
      layer_path, leaf = path.rsplit("/sn/", 1)
      if leaf in ("u", "sigma"):  # v's entries are ordered differently in conv layers
        add(
          f"{tag}_sn_u_sigma", path, getattr(module.get_submodule(layer_path.replace("/", ".")), leaf), value
        )
  buffers = dict(trainer.G.named_buffers())
  for path, value in _flat(state.g_batch_stats).items():
    add("g_batch_stats", path, buffers[path.replace("/", ".")], value)
  flat_ema = {_torch_name(k): (k, v) for k, v in _flat(state.ema_params).items()}
  for i, (name, _) in enumerate(trainer.G.named_parameters()):
    add("ema", flat_ema[name][0], trainer.ema[i], _to_torch(*flat_ema[name]))
  return groups


def jax_step_noise(config, step=0):
  """The (z, y) pairs sagan_jax.step draws at ``step``: one per D update, then the G update's."""
  import jax
  import numpy as np

  from sagan_jax import step as step_lib

  keys = step_lib.step_keys(config.seed, step)
  n_d = config.d_steps_per_g_step
  draw = lambda key: tuple(
    np.asarray(a)
    for a in (
      jax.random.normal(jax.random.split(key)[0], (config.batch_size, config.model.z_dim), jax.numpy.float32),
      jax.random.randint(
        jax.random.split(key)[1], (config.batch_size,), 0, config.model.num_classes, jax.numpy.int32
      ),
    )
  )
  pairs = [draw(k) for k in jax.random.split(keys[0], n_d)] + [draw(keys[1])]
  return [(torch.from_numpy(np.array(z)), torch.from_numpy(y.astype(np.int64))) for z, y in pairs]


def verify_against_jax(config, memory_format=torch.channels_last, attention="sdpa", steps=2):
  """Same initial state, batch and noise: the forward passes and ``steps`` train steps agree."""
  import numpy as np

  from sagan_jax import programs, sharding
  from sagan_jax.models import discriminator as jax_d
  from sagan_jax.models import generator as jax_g
  from sagan_jax.models.layers import SPECTRAL

  assert (G_ARCH, D_ARCH) == (jax_g.G_ARCH, jax_d.D_ARCH), "architecture tables drifted from sagan_jax"
  mesh = sharding.create_mesh()
  built = programs.programs(config, mesh)
  state = built.init()
  trainer = Trainer(config, memory_format, attention=attention)
  load_jax_state(trainer, state)
  report = {"start": compare_with_jax_state(trainer, state)}

  m, b = config.model, config.batch_size
  rng = np.random.default_rng(0)
  shape = (config.d_steps_per_g_step, b, m.resolution, m.resolution, m.image_channels)
  images = rng.uniform(-1, 1, shape).astype(np.float32)
  labels = rng.integers(0, m.num_classes, shape[:2]).astype(np.int32)

  # Forward passes with the initial state (G in train mode: batch statistics).
  z, y = jax_step_noise(config)[0]
  g_vars = {"params": state.g_params, "batch_stats": state.g_batch_stats, SPECTRAL: state.g_spectral}
  g_jax = np.asarray(built.generator.apply(g_vars, z.numpy(), y.numpy().astype(np.int32), train=True))
  with torch.no_grad():
    g_torch = trainer.G(z, y, train=True).permute(0, 2, 3, 1).numpy()
  d_vars = {"params": state.d_params, SPECTRAL: state.d_spectral}
  d_jax = np.asarray(built.discriminator.apply(d_vars, images[0], labels[0]))
  with torch.no_grad():
    x, yl = trainer.batch(images, labels)
    d_torch = trainer.D(x[0], yl[0]).numpy()
  report["g_forward_max_abs_diff"] = float(np.max(np.abs(g_jax - g_torch)))
  report["d_forward_max_abs_diff"] = float(np.max(np.abs(d_jax - d_torch)))
  report["d_forward_max_abs"] = float(np.max(np.abs(d_jax)))

  batch = sharding.global_batch({"image": images, "label": labels}, mesh)
  for i in range(steps):
    noise = jax_step_noise(config, i)
    out = trainer.step(*trainer.batch(images, labels), noise=noise)
    state, metrics = built.train_step(state, batch)
    report[f"step{i + 1}"] = {
      "d_loss": (float(metrics["d_loss"]), float(out["d_loss"])),
      "g_loss": (float(metrics["g_loss"]), float(out["g_loss"])),
      **compare_with_jax_state(trainer, state),
    }
  return report


# ---------------------------------------------------------------------------------------


def time_trainer(trainer, config, steps=10, warmup=3):
  import numpy as np

  m = config.model
  rng = np.random.default_rng(0)
  shape = (config.d_steps_per_g_step, config.batch_size, m.resolution, m.resolution, m.image_channels)
  images, labels = trainer.batch(
    rng.uniform(-1, 1, shape).astype(np.float32), rng.integers(0, m.num_classes, shape[:2])
  )
  for _ in range(warmup):
    trainer.step(images, labels)
  t0 = time.perf_counter()
  for _ in range(steps):
    trainer.step(images, labels)
  return (time.perf_counter() - t0) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ch", type=int, default=4)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--verify", action="store_true", help="one JAX and one torch step from the same state")
  parser.add_argument(
    "--layouts", action="store_true", help="time contiguous vs channels_last and the Adam implementations"
  )
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  config = make_config(args.ch, args.batch)
  g_count, d_count = check_parameter_counts(config)
  print(f"ch={args.ch}: G {g_count:,} / D {d_count:,} parameters, equal to the JAX model's")
  if args.verify:
    import json

    print(json.dumps(verify_against_jax(config), indent=1))
  if args.layouts:
    cl, nchw = torch.channels_last, torch.contiguous_format
    variants = [
      ("channels_last", cl, "fused", "sdpa"),
      ("contiguous", nchw, "fused", "sdpa"),
      ("channels_last", cl, "fused", "explicit"),
      ("channels_last", cl, "foreach", "sdpa"),
      ("channels_last", cl, "for", "sdpa"),
    ]
    trainers = [Trainer(config, fmt, adam, attention) for _, fmt, adam, attention in variants]
    times = [[] for _ in variants]
    for r in range(args.rounds):  # interleaved: load drift hits every variant alike
      for i, trainer in enumerate(trainers):
        times[i].append(time_trainer(trainer, config, args.steps, warmup=2 if r == 0 else 0))
    for (name, _, adam, attention), t in zip(variants, times, strict=True):
      print(
        f"{name:>14} adam={adam:<8} attention={attention:<8} median {sorted(t)[len(t) // 2]:.4f} "
        f"s/step  ({', '.join(f'{x:.4f}' for x in t)})"
      )


if __name__ == "__main__":
  main()
