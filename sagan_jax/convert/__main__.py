"""A published PyTorch SAGAN checkpoint as a run's workdir that every tool opens.

python -m sagan_jax.convert --from=mmagic --checkpoint=FILE.pth|URL --out=WORKDIR
python -m sagan_jax.convert --from=studiogan --checkpoint=G.pth|URL --discriminator=D.pth|URL --out=WORKDIR
    [--channel_order=auto|rgb|bgr] [--inplace_relu=auto|true|false] [--bn_eps=0] [--overwrite]

Writes WORKDIR/config.json (every architectural choice of the source, as this package's
config fields), one checkpoint at the source's iteration counter, and source.json (the files,
their SHA-256, what was read from them and what was not). Sampling, visualize, report,
evaluate open it like a run trained here; ``main`` fine-tunes it (fresh optimizer states: the
sources' are not converted). Reading a .pth needs no PyTorch. A URL is downloaded once into
the cache (its SHA-256 checked against the hash in mmagic's file names, or --sha256); offline
the download fails in one line naming the file to fetch by hand. docs/pretrained.md lists the
published checkpoints with the command for each.
"""

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while JAX loads: one line, not a traceback

import hashlib
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request

import jax
import numpy as np

from sagan_jax import checkpointing, programs, sharding, torch_pickle
from sagan_jax import run as run_lib
from sagan_jax import workdir as workdir_lib
from sagan_jax.convert import sources
from sagan_jax.errors import UserError

SOURCE_JSON = "source.json"
MMAGIC_HASH = re.compile(r"-([0-9a-f]{8})\.pth$")  # mmcv's publish_model: the SHA-256's first 8 hex digits
DOWNLOAD_TIMEOUT_S = 60


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def expected_hash(name: str, given: str) -> str:
  """The SHA-256 (or its prefix) a file must have: --sha256, else the hash in an mmagic name."""
  if given:
    return given.lower()
  match = MMAGIC_HASH.search(name)
  return match.group(1) if match else ""


def fetch(location: str, given_hash: str = "", progress=sys.stderr) -> str:
  """A local path for ``location``: a file as it is (its hash checked if one is known), a URL
  downloaded once into the cache and checked."""
  parsed = urllib.parse.urlparse(location)
  if parsed.scheme in ("", "file") and not location.startswith(("http:", "https:")):
    path = parsed.path if parsed.scheme == "file" else location
    if not os.path.isfile(path):
      raise UserError(f"{path} does not exist: pass the checkpoint file or its URL")
    _check_hash(path, expected_hash(os.path.basename(path), given_hash), location)
    return path
  name = os.path.basename(parsed.path)
  want = expected_hash(name, given_hash)
  folder = workdir_lib.cache_root() / "checkpoints"
  target = os.path.join(os.fspath(folder), name)
  if os.path.isfile(target):
    _check_hash(target, want, location)
    return target
  os.makedirs(os.fspath(folder), exist_ok=True)
  partial = f"{target}.part{os.getpid()}"
  try:
    with urllib.request.urlopen(location, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as f:
      total, done = int(response.headers.get("Content-Length") or 0), 0
      for chunk in iter(lambda: response.read(1 << 20), b""):
        f.write(chunk)
        done += len(chunk)
        if progress is not None:
          size = f" of {total / 2**20:.0f} MiB" if total else ""
          progress.write(f"\rdownloading {name}: {done / 2**20:.0f} MiB{size}")
    if progress is not None:
      progress.write("\n")
    _check_hash(partial, want, location)
    os.replace(partial, target)
  except (urllib.error.URLError, TimeoutError, OSError) as e:  # a hash mismatch passes as it is
    reason = getattr(e, "reason", e)
    raise UserError(
      f"cannot download {location} ({reason}); fetch it by hand on a machine with network and "
      f"pass --checkpoint=PATH (or put it at {target})"
    ) from None
  finally:
    if os.path.exists(partial):
      os.unlink(partial)
  return target


def _check_hash(path: str, want: str, location: str) -> None:
  if want and not sha256(path).startswith(want):
    raise UserError(
      f"{path} (from {location}) has SHA-256 {sha256(path)[:16]}…, not {want}…: a damaged or another file; "
      f"delete it and fetch it again"
    )


def build_config(checkpoint: sources.Checkpoint, model_fields: dict, bn_eps: float, inplace_relu: bool):
  """The config of the converted run: configs/default.py with the source's model."""
  from configs import default

  config = default.get_config()
  model = config.model
  for name in ("g_attention_resolutions", "d_attention_resolutions", "d_ch"):
    if model_fields.get(name) is None:
      model_fields.pop(name, None)
  model.update(model_fields)
  model.bn_eps = bn_eps
  model.d_shortcut_preactivated = inplace_relu
  config.dataset.name = {32: "cifar10", 128: "imagenet2012"}.get(model.resolution, "folder")
  config.dataset.random_flip = True
  # How each source samples for its reported numbers: mmagic in eval mode (running statistics),
  # StudioGAN with the statistics of the batch.
  config.sample_bn_stats = "running" if checkpoint.source == "mmagic" else "batch"
  config.num_train_steps = max(config.num_train_steps, checkpoint.step + 1)
  return config


def flat_to_state(config, g_tree: dict, d_tree: dict, ema_tree: dict | None, step: int):
  """The TrainState of the converted variables; every leaf checked against the model's own."""
  import flax
  import jax
  import jax.numpy as jnp

  from sagan_jax import config as config_lib

  config_lib.validate_config(config)
  abstract = programs.abstract_state(config)

  def collection(tree, name, like, what):
    got = flax.traverse_util.unflatten_dict({k[1:]: v for k, v in tree.items() if k[0] == name})
    want = flax.traverse_util.flatten_dict(flax.core.unfreeze(like))
    have = flax.traverse_util.flatten_dict(got)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = [k for k in set(want) & set(have) if tuple(np.shape(have[k])) != tuple(want[k].shape)]
    if missing or extra or wrong:
      show = lambda keys: ", ".join("/".join(k) for k in keys[:3])
      raise UserError(
        f"the {what} does not fit the model its shapes describe: missing {show(missing) or '-'}; "
        f"not in the model {show(extra) or '-'}; other shapes {show(sorted(wrong)) or '-'}"
      )
    return jax.tree.map(jnp.asarray, got)

  g_params = collection(g_tree, "params", abstract.g_params, "generator")
  d_params = collection(d_tree, "params", abstract.d_params, "discriminator")
  ema_params = collection(ema_tree, "params", abstract.ema_params, "EMA generator") if ema_tree else g_params
  g_tx, d_tx = programs.build_optimizers(config)
  return programs.TrainState(
    step=jnp.asarray(step, jnp.int32),
    g_params=g_params,
    g_batch_stats=collection(g_tree, "batch_stats", abstract.g_batch_stats, "generator"),
    g_spectral=collection(g_tree, "spectral", abstract.g_spectral, "generator"),
    g_opt_state=g_tx.init(g_params),
    d_params=d_params,
    d_spectral=collection(d_tree, "spectral", abstract.d_spectral, "discriminator"),
    d_opt_state=d_tx.init(d_params),
    ema_params=ema_params,
    nonfinite_streak=jnp.zeros((), jnp.int32),
  )


def write_workdir(out: str, config, state, provenance: dict, overwrite: bool) -> str:
  """config.json, the checkpoint and source.json, written into a hidden sibling and then put in
  place (an interrupted conversion leaves nothing at ``out``)."""
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  staging = os.path.join(parent, f".{os.path.basename(out)}.tmp{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  try:
    os.makedirs(staging)
    mesh = sharding.create_mesh()
    run_lib.record_config(config, staging, programs.resolve_kernels(config, mesh))
    saver = checkpointing.Checkpointer(staging, config.keep_checkpoints, owner=True)
    try:
      saver.save(int(state.step), jax.tree.map(lambda x: sharding.replicate(x, mesh), state))
      saver.wait()
    finally:
      saver.close()
    with open(os.path.join(staging, SOURCE_JSON), "w") as f:
      json.dump(provenance, f, indent=1)
    workdir_lib.publish(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return out


def convert(
  source: str,
  checkpoint: str,
  out: str,
  *,
  discriminator: str = "",
  channel_order: str = "auto",
  inplace_relu: str = "auto",
  bn_eps: float = 0.0,
  sha256_hash: str = "",
  overwrite: bool = False,
) -> str:
  """Converts a published checkpoint into the workdir ``out``; returns its path."""
  if source not in sources.SOURCES:
    raise UserError(f"--from={source!r}: use one of {sources.SOURCES}")
  if not out:
    raise UserError("--out is required: the workdir to write")
  if os.path.lexists(out) and not overwrite:
    raise UserError(f"{out} exists; pass --overwrite to replace it, or another --out")
  if source == "studiogan" and not discriminator:
    raise UserError("StudioGAN keeps G and D in two files: pass --discriminator=model=D-…pth too")
  if source == "mmagic" and discriminator:
    raise UserError("an mmagic checkpoint holds G and D in one file: leave --discriminator out")
  if bn_eps < 0:
    raise UserError(f"--bn_eps={bn_eps}: must be > 0 (or 0 for the source's own)")
  g_path = fetch(checkpoint, sha256_hash)
  if source == "mmagic":
    files = {"checkpoint": g_path}
    loaded = sources.read_mmagic(torch_pickle.load(g_path), g_path)
  else:
    d_path = fetch(discriminator)
    files = {"generator": g_path, "discriminator": d_path}
    loaded = sources.read_studiogan(torch_pickle.load(g_path), torch_pickle.load(d_path), g_path, d_path)
  model_fields = sources.architecture(loaded)
  bgr = channel_order == "bgr" or (channel_order == "auto" and source == "mmagic")
  relu = inplace_relu == "true" or (inplace_relu == "auto" and source == "studiogan")
  if not bn_eps:  # mmagic's default configs: 1e-4; its BigGAN-schedule run (no SN on the cBN): 1e-5
    bn_eps = 1e-5 if source == "mmagic" and not model_fields["sn_cbn_gains"] else 1e-4
  config = build_config(loaded, model_fields, bn_eps, relu)
  g_tree, g_unused = sources.generator_variables(loaded, loaded.generator, bgr)
  ema_tree = sources.generator_variables(loaded, loaded.ema, bgr)[0] if loaded.ema else None
  d_tree, d_unused = sources.discriminator_variables(loaded, bgr)
  if g_unused or d_unused:
    raise UserError(
      f"tensors this conversion does not read: {(g_unused + d_unused)[:4]}: a model of another architecture"
    )
  state = flat_to_state(config, g_tree, d_tree, ema_tree, loaded.step)
  provenance = {
    "source": source,
    "files": {k: {"path": v, "sha256": sha256(v)} for k, v in files.items()},
    "location": {"checkpoint": checkpoint, **({"discriminator": discriminator} if discriminator else {})},
    "source_step": loaded.step,
    "ema": "the source's EMA generator" if loaded.ema else "none in the source: samples use G's weights",
    "channel_order": "BGR, converted to RGB" if bgr else "RGB",
    "d_shortcut_preactivated": relu,
    "bn_eps": bn_eps,
    "sample_bn_stats": config.sample_bn_stats,
    "not_converted": "optimizer states (fresh ones are written: fine-tuning restarts Adam's moments)",
  }
  return write_workdir(out, config, state, provenance, overwrite)


def _main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  import logging

  from absl import flags

  from sagan_jax import cli, runtime

  f = flags.FLAGS

  def work():
    runtime.start(distributed=False, log_level=logging.WARNING, tensorflow=False)
    return convert(
      f["from"].value,
      f.checkpoint,
      f.out,
      discriminator=f.discriminator,
      channel_order=f.channel_order,
      inplace_relu=f.inplace_relu,
      bn_eps=f.bn_eps,
      sha256_hash=f.sha256,
      overwrite=f.overwrite,
    )

  print(cli.run(work))


if __name__ == "__main__":
  from absl import app, flags

  from sagan_jax import cli

  flags.DEFINE_enum(
    "from", None, list(sources.SOURCES), "Whose checkpoint: mmagic (and mmgeneration) or studiogan."
  )
  flags.DEFINE_string("checkpoint", None, "The checkpoint file or URL (StudioGAN: the G file).")
  flags.DEFINE_string("discriminator", "", "StudioGAN: the D file or URL.")
  flags.DEFINE_string("out", None, "The workdir to write.")
  flags.DEFINE_enum(
    "channel_order",
    "auto",
    ["auto", "rgb", "bgr"],
    "The source's image channel order ('auto': mmagic BGR, StudioGAN RGB; mmagic's convert-studio "
    "files: rgb).",
  )
  flags.DEFINE_enum(
    "inplace_relu",
    "auto",
    ["auto", "true", "false"],
    "The source's D used in-place ReLUs ('auto': StudioGAN yes, mmagic no; mmagic's wReLUinplace and "
    "convert-studio files: true).",
  )
  flags.DEFINE_float(
    "bn_eps", 0.0, "BN ε of the source's G (0: its default, 1e-4; 1e-5 for mmagic's BigGAN schedule)."
  )
  flags.DEFINE_string("sha256", "", "The SHA-256 (or a prefix) the checkpoint must have.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
  flags.mark_flags_as_required(["from", "checkpoint", "out"])
  app.run(_main, flags_parser=cli.parse_flags)
