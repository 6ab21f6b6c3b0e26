"""Images from a trained run, without its dataset.

python -m sagan_jax.sample --workdir=RUN [--step=N] --out=DIR|FILE.npz
    [--per_class=10 | --num=N] [--classes=0,3,7] [--seed=0] [--truncation=T] [--npz]
    [--interpolate [--interpolation=slerp|lerp] [--interpolation_steps=8]] [--overwrite]

--out=DIR writes DIR/<class>/<index>.png (class folders named by the zero-padded label, so the
folder is itself an image-folder dataset; the run's label_map.txt is copied beside them) and,
with --npz, DIR/samples.npz; --out=FILE.npz writes one .npz (``images`` uint8 NHWC, ``labels``).
The protocol (checkpoint step, EMA G, BN statistics, truncation, seed, classes) goes into
DIR/sampling.json or FILE.json. --interpolate writes two sheets into DIR instead: classes
(each row one z, the class embedding mixed from one class to the next) and latent (each row
one class, z moved from one draw to another). --workdir may name a checkpoint folder
(RUN/checkpoints/N). An output that exists is refused unless --overwrite; the output appears
whole or not at all.
"""

import os

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while JAX loads: one line, not a traceback

import io
import json
import shutil
import sys
import time

import numpy as np

from sagan_jax import figures, sampling
from sagan_jax import workdir as workdir_lib
from sagan_jax.data.source import label_values
from sagan_jax.errors import UserError
from sagan_jax.trained import TrainedModel, load

PROTOCOL = "sampling.json"  # beside the PNGs of an output folder
NPZ = "samples.npz"  # --npz inside an output folder
SHEETS = ("interpolation_classes.png", "interpolation_latent.png")


class Progress:
  """'sampled k/n images' on stderr: redrawn in place on a terminal, every tenth otherwise."""

  def __init__(self, total: int, stream=sys.stderr):
    self.total, self.stream, self.start = total, stream, time.monotonic()
    self.tty, self.shown = stream.isatty(), -1

  def __call__(self, done: int, total: int) -> None:
    tenth = 10 * done // max(total, 1)
    if not self.tty and tenth == self.shown:
      return
    self.shown = tenth
    rate = done / max(time.monotonic() - self.start, 1e-9)
    line = f"sampled {done}/{total} images ({100 * done // max(total, 1)}%, {rate:.0f} images/s)"
    self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
    if self.tty and done == total:
      self.stream.write("\n")
    self.stream.flush()


def parse_classes(text: str, num_classes: int) -> np.ndarray:
  """--classes: '' (all) or comma-separated indices within [0, num_classes)."""
  if not text:
    return np.arange(num_classes)
  try:
    classes = np.asarray([int(c) for c in text.split(",")])
  except ValueError:
    raise UserError(f"--classes={text!r} is not a comma-separated list of class indices") from None
  bad = sorted({int(c) for c in classes if not 0 <= c < num_classes})
  if bad:
    raise UserError(f"--classes {bad} are outside [0, {num_classes}): the run has {num_classes} classes")
  return classes


def sample_inputs(model: TrainedModel, classes, per_class, num, seed, truncation):
  """(labels, z): per_class of each class in order, or num of classes drawn uniformly."""
  if num is not None:
    labels = np.random.default_rng((seed, 1)).choice(classes, num).astype(np.int32)
  else:
    labels = np.repeat(classes, per_class).astype(np.int32)
  return labels, model.noise(len(labels), seed, truncation)


def interpolation_sheets(model: TrainedModel, classes, steps: int, method: str, seed: int, truncation):
  """{file name: uint8 sheet} of the class and the latent interpolations (an unconditional
  model's: the latent one, a row per entry of ``classes``, all label 0)."""
  if len(classes) < 2 and model.num_classes:
    raise UserError("--interpolate needs at least two classes (--classes=A,B,…)")
  if steps < 2:
    raise UserError(f"--interpolation_steps={steps}: need at least 2 (both ends)")
  weights = np.linspace(0.0, 1.0, steps)
  ends = model.noise(2 * len(classes), seed + 1, truncation).reshape(len(classes), 2, -1)
  z = np.concatenate([sampling.interpolate(a, b, weights, method) for a, b in ends])
  latent_images = model.generate(np.repeat(classes, steps).astype(np.int32), z, output="float")
  sheets = {SHEETS[1]: figures.image_grid(latent_images, len(classes), steps)}
  if model.num_classes:
    pairs = list(zip(classes[:-1], classes[1:], strict=True))
    z_rows = model.noise(len(pairs), seed, truncation)
    labels = np.concatenate([model.class_weights(int(a), int(b), weights) for a, b in pairs])
    class_images = model.generate(labels, np.repeat(z_rows, steps, axis=0), output="float")
    sheets = {SHEETS[0]: figures.image_grid(class_images, len(pairs), steps), **sheets}
  return sheets


def check_output(out: str, overwrite: bool, interpolate: bool) -> None:
  if not out:
    raise UserError("--out is required: a folder for PNGs, or a FILE.npz")
  if "://" in out:
    raise UserError(f"--out={out}: write to a local path, then copy (gsutil, gcloud storage)")
  if interpolate and out.endswith(".npz"):
    raise UserError("--interpolate writes PNG sheets: give --out a folder, not a .npz")
  targets = [out] + ([out.removesuffix(".npz") + ".json"] if out.endswith(".npz") else [])
  existing = [t for t in targets if os.path.lexists(t)]
  if existing and not overwrite:
    raise UserError(f"{existing[0]} exists; pass --overwrite to replace it, or another --out")
  if out.endswith(".npz") and os.path.isdir(out):
    raise UserError(f"--out={out} is a folder; name a file, or a folder without .npz")


def npz_bytes(images, labels) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, images=images, labels=labels)
  return buffer.getvalue()


def write_folder(out, model, labels, images, protocol, with_npz: bool, sheets=None) -> list:
  """Writes everything into a hidden sibling of ``out``, then puts it in place."""
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  staging = os.path.join(parent, f".{os.path.basename(os.path.abspath(out))}.tmp{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  try:
    os.makedirs(staging)
    if sheets:
      for name, sheet in sheets.items():
        figures.save_png(sheet, os.path.join(staging, name), scale=max(1, 64 // model.resolution))
    else:
      width = len(str(label_values(model.num_classes) - 1))
      for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        figures.save_png(image, os.path.join(staging, f"{label:0{width}d}", f"{index:06d}.png"))
      if with_npz:
        workdir_lib.write_atomic(workdir_lib.path(staging, NPZ), npz_bytes(images, labels))
      label_map = workdir_lib.path(model.workdir, workdir_lib.LABEL_MAP)
      if label_map.exists():
        shutil.copyfile(os.fspath(label_map), os.path.join(staging, workdir_lib.LABEL_MAP))
    with open(os.path.join(staging, PROTOCOL), "w") as f:
      json.dump(protocol, f, indent=1)
    workdir_lib.publish(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return [out]


def write_npz(out, images, labels, protocol) -> list:
  json_path = out.removesuffix(".npz") + ".json"
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  staged = []
  try:
    for target, data in ((out, npz_bytes(images, labels)), (json_path, json.dumps(protocol, indent=1))):
      tmp = os.path.join(
        os.path.dirname(os.path.abspath(target)), f".{os.path.basename(target)}.tmp{os.getpid()}"
      )
      with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
      staged.append((tmp, target))
    for tmp, target in staged:
      workdir_lib.publish(tmp, target)
  finally:
    for tmp, _ in staged:
      if os.path.lexists(tmp):
        os.unlink(tmp)
  return [out, json_path]


def check_request(out, per_class, num, seed, truncation, interpolate, overwrite) -> None:
  """What the command line alone decides, before any model is loaded."""
  if truncation is not None and not truncation > 0:
    raise UserError(f"--truncation={truncation}: must be > 0 (leave it out for untruncated z)")
  if per_class is not None and num is not None:
    raise UserError("--per_class and --num exclude each other: give one")
  if (per_class is not None and per_class < 1) or (num is not None and num < 1):
    raise UserError("--per_class and --num must be at least 1")
  if seed < 0:
    raise UserError(f"--seed={seed}: must be ≥ 0")
  check_output(out, overwrite, interpolate)


def sample(
  workdir,
  out,
  *,
  step=None,
  per_class=None,
  num=None,
  classes="",
  seed=0,
  truncation=None,
  npz=False,
  interpolate=False,
  interpolation="slerp",
  interpolation_steps=8,
  overwrite=False,
  progress=True,
) -> list:
  """Writes the samples (or the interpolation sheets) of a run's checkpoint; returns the paths."""
  check_request(out, per_class, num, seed, truncation, interpolate, overwrite)
  model = load(workdir, step)
  chosen = parse_classes(classes, label_values(model.num_classes))
  protocol = model.protocol(
    seed=seed,
    truncation=truncation,
    classes="all" if not classes else [int(c) for c in chosen],
  )
  if interpolate:
    if not classes:
      chosen = sampling.grid_classes(model.num_classes)
    sheets = interpolation_sheets(model, chosen, interpolation_steps, interpolation, seed, truncation)
    protocol.update(
      classes=[int(c) for c in chosen],
      interpolation=interpolation,
      interpolation_steps=interpolation_steps,
      sheets=list(sheets),
    )
    return write_folder(out, model, None, None, protocol, False, sheets)
  labels, z = sample_inputs(
    model, chosen, 10 if per_class is None and num is None else per_class, num, seed, truncation
  )
  protocol.update(
    per_class=None if num is not None else int(len(labels) // len(chosen)), num=int(len(labels))
  )
  report = Progress(len(labels)) if progress else None
  images = model.generate(labels, z, progress=report)
  if out.endswith(".npz"):
    return write_npz(out, images, labels, protocol)
  return write_folder(out, model, labels, images, protocol, npz)


def _main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  import logging

  from absl import flags

  from sagan_jax import cli, runtime

  f = flags.FLAGS

  def work():
    check_request(f.out, f.per_class, f.num, f.seed, f.truncation, f.interpolate, f.overwrite)
    # no TensorFlow: sampling reads no data; the XLA cache: a large G compiles once per machine
    runtime.start(distributed=False, log_level=logging.WARNING, tensorflow=False, compilation_cache=True)
    return sample(
      f.workdir,
      f.out,
      step=f.step,
      per_class=f.per_class,
      num=f.num,
      classes=f.classes,
      seed=f.seed,
      truncation=f.truncation,
      npz=f.npz,
      interpolate=f.interpolate,
      interpolation=f.interpolation,
      interpolation_steps=f.interpolation_steps,
      overwrite=f.overwrite,
    )

  for path in cli.run(work):
    print(path)


if __name__ == "__main__":
  from absl import app, flags

  from sagan_jax import cli

  flags.DEFINE_string("workdir", None, "A run's --workdir, or one of its checkpoints (RUN/checkpoints/N).")
  flags.DEFINE_string("out", None, "Output: a folder (PNGs in class folders) or FILE.npz.")
  cli.define_step_flag("Checkpoint step (default: the newest readable).")
  flags.DEFINE_integer("per_class", None, "Images per class, classes in order (default 10).")
  flags.DEFINE_integer("num", None, "Images in all, classes drawn uniformly (instead of --per_class).")
  flags.DEFINE_string("classes", "", "Comma-separated class indices (default: all).")
  flags.DEFINE_integer("seed", 0, "Seed of z (and of the drawn classes).")
  flags.DEFINE_float("truncation", None, "Truncate z at ±T by resampling (BigGAN's trick); off if absent.")
  flags.DEFINE_bool("npz", False, "With a folder --out: also write samples.npz into it.")
  flags.DEFINE_bool("interpolate", False, "Write the class and latent interpolation sheets instead.")
  flags.DEFINE_enum("interpolation", "slerp", ["slerp", "lerp"], "How z moves in the latent sheet.")
  flags.DEFINE_integer("interpolation_steps", 8, "Images per interpolation row (both ends included).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(_main, flags_parser=cli.parse_flags)
