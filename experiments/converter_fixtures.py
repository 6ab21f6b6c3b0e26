"""The fixtures of tests/test_convert.py: small random SAGANs built by the peers' own code, saved
as those codebases save checkpoints, with their outputs on fixed inputs.

Runs in a venv of its own (PyTorch and the sources; not this package's):

  python3.11 -m venv /tmp/peers && P=/tmp/peers/bin/pip
  $P install torch mmengine==0.10.7 mmcv-lite==2.1.0 && $P install --no-deps mmagic==1.2.0
  $P install torchvision click requests "numpy<2"
  git clone https://github.com/POSTECH-CVLab/PyTorch-StudioGAN /tmp/studiogan-git
  D=/tmp/studiogan; mkdir -p $D/models $D/utils; touch $D/models/__init__.py $D/utils/__init__.py
  git -C /tmp/studiogan-git show v0.2.0:src/models/resnet.py > $D/models/resnet.py
  git -C /tmp/studiogan-git show v0.2.0:src/utils/model_ops.py > $D/utils/model_ops.py
  echo 'import contextlib; dummy_context_mgr = contextlib.nullcontext' > $D/utils/misc.py
  D4=/tmp/studiogan4; mkdir -p $D4/models $D4/utils; touch $D4/models/__init__.py $D4/utils/__init__.py
  git -C /tmp/studiogan-git show 947b35e:src/models/resnet.py > $D4/models/resnet.py
  git -C /tmp/studiogan-git show 947b35e:src/utils/ops.py > $D4/utils/ops.py
  cp $D/utils/misc.py $D4/utils/misc.py
  /tmp/peers/bin/python experiments/converter_fixtures.py --studiogan=$D --studiogan_v04=$D4 \\
      --out=tests/fixtures/convert

(Versions used: Python 3.11, torch 2.14.1, mmengine 0.10.7, mmcv-lite 2.1.0, mmagic 1.2.0, numpy 1.26.4;
StudioGAN v0.2.0 = 12ab50a5, the code of its published SAGAN checkpoints, and master 947b35e.)
mmagic's package ``mmagic.models`` imports every model it has (and their dependencies): its SAGAN modules are
imported on their own, the packages above them registered without running their __init__.

Each model: random weights (the source's init), γ set to 0.7 and the BN running statistics
randomised (so attention and BN matter), three training-mode forwards (the spectral-norm
vectors iterated as in training), then eval-mode outputs on fixed z, labels and images.
"""

import argparse
import importlib
import os
import sys
import types

import numpy as np
import torch


def mmagic_classes():
  import mmagic

  root = os.path.dirname(mmagic.__file__)
  editors = ("mmagic.models.editors", "mmagic.models.editors.biggan", "mmagic.models.editors.sagan")
  for name in ("mmagic.models", *editors, "mmagic.models.utils"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(root, *name.split(".")[1:])]
    sys.modules[name] = package
  utils = importlib.import_module("mmagic.models.utils.model_utils")
  sys.modules["mmagic.models.utils"].get_module_device = utils.get_module_device
  importlib.import_module("mmagic.models.editors.biggan.biggan_modules")
  importlib.import_module("mmagic.models.editors.sagan.sagan_modules")
  generator = importlib.import_module("mmagic.models.editors.sagan.sagan_generator").SNGANGenerator
  discriminator = importlib.import_module("mmagic.models.editors.sagan.sagan_discriminator").ProjDiscriminator
  return generator, discriminator


def randomise(module, gamma_name):
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith(gamma_name):
        p.fill_(0.7)
    for name, b in module.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(torch.randn_like(b) * 0.2)
      if name.endswith("running_var"):
        b.copy_(torch.rand_like(b) + 0.5)


def reference(g, d, res, num_classes, call_g, call_d, batch=3):
  """Eval-mode outputs of G and D on fixed inputs, after three training-mode forwards."""
  with torch.no_grad():
    g.train()
    d.train()
    for _ in range(3):
      call_g(g, torch.randn(batch, 128), torch.randint(0, num_classes, (batch,)))
      call_d(d, torch.rand(batch, 3, res, res) * 2 - 1, torch.randint(0, num_classes, (batch,)))
    g.eval()
    d.eval()
    z, y = torch.randn(batch, 128), torch.randint(0, num_classes, (batch,))
    x = torch.rand(batch, 3, res, res) * 2 - 1
    images, logits = call_g(g, z, y), call_d(d, x.clone(), y)
  nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
  return dict(
    z=z.numpy(),
    y=y.numpy().astype(np.int32),
    x=nhwc(x),
    images=nhwc(images),
    logits=logits.numpy().reshape(-1),
  )


def mmagic_fixtures(out):
  generator, discriminator = mmagic_classes()
  call_g = lambda g, z, y: g(z, label=y)
  call_d = lambda d, x, y: d(x, label=y)
  made = {}
  # CIFAR-10's layout at a small width (G base 16, D base 8), BN ε 1e-4, SN on the cBN embeddings.
  torch.manual_seed(0)
  g = generator(output_scale=32, num_classes=10, base_channels=16, attention_after_nth_block=2,
                with_spectral_norm=True, init_cfg=dict(type="studio"), norm_eps=1e-4)  # fmt: skip
  d = discriminator(input_scale=32, num_classes=10, base_channels=8, attention_after_nth_block=1,
                    with_spectral_norm=True, init_cfg=dict(type="studio"))  # fmt: skip
  randomise(g, "gamma")
  randomise(d, "gamma")
  made["mmagic_cifar"] = (reference(g, d, 32, 10, call_g, call_d), {"generator": g, "discriminator": d}, None)
  # ImageNet-128's layout (attention at 64 in G and D) at a small width, as mmagic's BigGAN-schedule
  # run: no SN on the cBN embeddings, BN ε 1e-5, an EMA generator.
  torch.manual_seed(1)
  g = generator(output_scale=128, num_classes=5, base_channels=4, attention_after_nth_block=4,
                with_spectral_norm=True, with_embedding_spectral_norm=False, init_cfg=dict(type="studio"),
                norm_eps=1e-5)  # fmt: skip
  d = discriminator(input_scale=128, num_classes=5, base_channels=8, attention_after_nth_block=1,
                    with_spectral_norm=True, init_cfg=dict(type="studio"))  # fmt: skip
  randomise(g, "gamma")
  randomise(d, "gamma")
  ema = generator(output_scale=128, num_classes=5, base_channels=4, attention_after_nth_block=4,
                  with_spectral_norm=True, with_embedding_spectral_norm=False, init_cfg=dict(type="studio"),
                  norm_eps=1e-5)  # fmt: skip
  refs = reference(g, d, 128, 5, call_g, call_d, batch=2)
  ema.load_state_dict(g.state_dict())
  with torch.no_grad():
    for p in ema.parameters():  # EMA weights differ from G's; its buffers are G's (mmagic's EMA)
      p.add_(0.01 * torch.randn_like(p))
    ema.eval()
    refs["ema_images"] = (
      call_g(ema, torch.from_numpy(refs["z"]), torch.from_numpy(refs["y"])).numpy().transpose(0, 2, 3, 1)
    )
  made["mmagic_128_ema"] = (refs, {"generator": g, "discriminator": d, "generator_ema": ema}, None)
  for name, (refs, nets, _) in made.items():
    state = {f"{prefix}.{k}": v for prefix, net in nets.items() for k, v in net.state_dict().items()}
    torch.save(
      {"meta": {"mmagic_version": "1.2.0", "iter": 1000}, "state_dict": state},
      os.path.join(out, f"{name}.pth"),
    )
    np.savez(os.path.join(out, f"{name}.npz"), **refs)


def studiogan_fixtures(out, source):
  sys.path.insert(0, source)
  resnet = importlib.import_module("models.resnet")
  torch.manual_seed(2)
  # v0.2.0's positional arguments: z dim, shared dim, image size, width, SN, attention, where,
  # activation, conditioning, classes, init, …; CIFAR-10's layout at width 4 (G 16, D 8 channels).
  g = resnet.Generator(128, "N/A", 32, 4, True, True, 2, "ReLU", "ProjGAN", 10, "ortho", "N/A", False)
  d = resnet.Discriminator(
    32, 4, True, True, 1, "ReLU", "ProjGAN", "N/A", 10, False, False, "ortho", "N/A", False
  )
  randomise(g, "sigma")
  randomise(d, "sigma")
  refs = reference(g, d, 32, 10, lambda g, z, y: g(z, y), lambda d, x, y: d(x, y))
  torch.save(
    {"seed": 2, "run_name": "fixture", "step": 500, "state_dict": g.state_dict()},
    os.path.join(out, "studiogan_cifar_G.pth"),
  )
  torch.save(
    {"seed": 2, "run_name": "fixture", "step": 500, "state_dict": d.state_dict()},
    os.path.join(out, "studiogan_cifar_D.pth"),
  )
  np.savez(os.path.join(out, "studiogan_cifar.npz"), **refs)


def studiogan_v04_fixtures(out, source):
  """The later StudioGAN (master, v0.4): conditional BN as SN'd linear maps of one-hot labels,
  the blocks handed their layers in namespaces."""
  for name in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
    del sys.modules[name]  # v0.2.0's modules of the same names
  sys.path.insert(0, source)
  resnet, ops = importlib.import_module("models.resnet"), importlib.import_module("utils.ops")
  layers = types.SimpleNamespace(
    g_conv2d=ops.snconv2d, g_deconv2d=ops.sndeconv2d, g_linear=ops.snlinear, g_embedding=ops.sn_embedding,
    d_conv2d=ops.snconv2d, d_deconv2d=ops.sndeconv2d, d_linear=ops.snlinear, d_embedding=ops.sn_embedding,
    g_bn=ops.ConditionalBatchNorm2d,
    g_act_fn=torch.nn.ReLU(inplace=True), d_act_fn=torch.nn.ReLU(inplace=True),
  )  # fmt: skip
  model = types.SimpleNamespace(info_type="N/A", g_info_injection="N/A")
  torch.manual_seed(4)
  g = resnet.Generator(128, "N/A", 32, 4, True, [2], "cBN", 10, "ortho", "N/A", False, layers, model)
  d = resnet.Discriminator(
    32, 4, True, True, [1], "PD", "W/O", "N/A", False, 10, "ortho", "N/A", False, layers, model
  )
  randomise(g, "sigma")
  randomise(d, "sigma")
  refs = reference(g, d, 32, 10, lambda g, z, y: g(z, y), lambda d, x, y: d(x, y)["adv_output"])
  torch.save({"state_dict": g.state_dict()}, os.path.join(out, "studiogan_v04_cifar_G.pth"))
  torch.save({"state_dict": d.state_dict(), "step": 700}, os.path.join(out, "studiogan_v04_cifar_D.pth"))
  np.savez(os.path.join(out, "studiogan_v04_cifar.npz"), **refs)


def full_width(out):
  """mmagic's ImageNet-128 SAGAN at its full width (42M + 39M parameters, ~330 MB), random:
  every tensor shape of the published checkpoints (not committed; SAGAN_JAX_CONVERT_FULL=DIR
  runs tests/test_convert.py's check on it)."""
  generator, discriminator = mmagic_classes()
  torch.manual_seed(3)
  g = generator(output_scale=128, num_classes=1000, base_channels=64, attention_after_nth_block=4,
                with_spectral_norm=True, init_cfg=dict(type="studio"), norm_eps=1e-4)  # fmt: skip
  d = discriminator(input_scale=128, num_classes=1000, base_channels=64, attention_after_nth_block=1,
                    with_spectral_norm=True, init_cfg=dict(type="studio"))  # fmt: skip
  randomise(g, "gamma")
  randomise(d, "gamma")
  refs = reference(g, d, 128, 1000, lambda g, z, y: g(z, label=y), lambda d, x, y: d(x, label=y), batch=2)
  state = {
    f"{p}.{k}": v for p, net in (("generator", g), ("discriminator", d)) for k, v in net.state_dict().items()
  }
  torch.save({"meta": {"iter": 1}, "state_dict": state}, os.path.join(out, "mmagic_128_full.pth"))
  np.savez(os.path.join(out, "mmagic_128_full.npz"), **refs)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--studiogan", required=True, help="folder with StudioGAN v0.2.0's models/ and utils/")
  parser.add_argument("--out", default="tests/fixtures/convert")
  parser.add_argument("--studiogan_v04", required=True, help="the same for StudioGAN's master: utils/ops.py")
  parser.add_argument("--full_width", default="", help="also write the full-width 128×128 model here")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  if args.full_width:
    os.makedirs(args.full_width, exist_ok=True)
    full_width(args.full_width)
  mmagic_fixtures(args.out)
  studiogan_fixtures(args.out, args.studiogan)
  studiogan_v04_fixtures(args.out, args.studiogan_v04)
  for name in sorted(os.listdir(args.out)):
    print(f"{os.path.getsize(os.path.join(args.out, name)):>9} {name}")


if __name__ == "__main__":
  main()
