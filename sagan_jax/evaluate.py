"""Evaluate a trained run, or any images:

python -m sagan_jax.evaluate --workdir=… [--step=N] [--num_samples=N] [--noise_seed=S]
    [--config=… [--config.X=…]]
python -m sagan_jax.evaluate --images=DIR|FILE.npz --config=<dataset config> | --reference=STATS.npz
    [--metrics=fid,kid,is,prdc_inception,…] [--out=FILE.jsonl] [--save_reference=STATS.npz]

A run: restores the latest (or the named) checkpoint of the workdir, scores the EMA generator
on `config.eval.metrics` and appends the result to workdir/metrics.jsonl and TensorBoard.
The config is the one training wrote to workdir/config.json, unless --config names one
(e.g. to change config.eval fields); its model must be the workdir's.

Images (another codebase's samples, or this one's from python -m sagan_jax.sample): scored
against the reference statistics of the dataset --config names (its eval fields say how: split,
reference count, KID subsets, k; cached like a run's), or of a statistics file --reference
names (written by --save_reference, which also works without --images). One JSON line with the
numbers and their full protocol goes to stdout (and is appended to --out).
"""

from sagan_jax import signals

if __name__ == "__main__":
  signals.hold_interrupts()  # a SIGINT while the libraries load: one line, not a traceback

from absl import app, flags
from ml_collections import config_flags

from sagan_jax import cli
from sagan_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file (default: the workdir's config.json); its model must match the run's. With "
  "--images: the dataset config whose reference statistics the images are scored against.",
  lock_config=True,
)
flags.DEFINE_string("workdir", None, "The training run's --workdir.")
cli.define_step_flag("Checkpoint step to evaluate (default: the latest).")
flags.DEFINE_integer("num_samples", None, "Samples to score (default: config.eval.num_samples).")
flags.DEFINE_integer(
  "noise_seed",
  None,
  "Seed of the samples' noise (default: the run's, the same at every evaluation); "
  "another seed scores other samples of the same generator.",
)
flags.DEFINE_string(
  "images", None, "A folder of images (flat, or one subfolder per integer label) or an .npz."
)
flags.DEFINE_string("reference", None, "With --images: a statistics file from --save_reference.")
flags.DEFINE_list(
  "metrics", None, "With --images or --save_reference: metrics (default config.eval.metrics)."
)
flags.DEFINE_string("out", None, "With --images: a .jsonl file the metrics line is appended to.")
flags.DEFINE_string(
  "save_reference", None, "Write the reference statistics of --config's dataset to this .npz (one per space)."
)


def evaluate_checkpoint(
  config, workdir: str, step: int | None = None, num_samples: int | None = None, noise_seed: int | None = None
) -> dict:
  """Scores the checkpoint `step` (None: the latest) of `workdir`; returns the scalars.

  ``config`` None: the run's own (workdir/config.json).
  """
  import jax
  from clu import metric_writers

  from sagan_jax.evaluation.evaluator import Evaluator
  from sagan_jax.run import open_run

  run = open_run(workdir, step, config=config)
  names = tuple(run.config.eval.metrics)
  evaluator = Evaluator(run.config, run.mesh, run.programs.sampler, workdir, run.programs.kernels, names)
  scalars = evaluator.evaluate(
    run.state, run.step, num_samples or run.config.eval.num_samples, names, noise_seed
  )
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  writer.write_scalars(run.step, scalars)
  writer.flush()
  return scalars


def _check_image_set(image_set, config, reference_key: dict | None) -> None:
  """The images against the reference's size and channels: another size is refused, named."""
  want = (
    (reference_key["resolution"], reference_key["channels"])
    if reference_key
    else (config.model.resolution, config.model.image_channels)
  )
  _, height, width, channels = image_set.images.shape
  if (height, width, channels) != (want[0], want[0], want[1]):
    raise UserError(
      f"the images of {image_set.source} are {height}x{width}x{channels}, the reference's "
      f"{want[0]}x{want[0]}x{want[1]}; score images of the reference's size (resize them as the "
      f"data pipeline does, or set --config.model.resolution / image_channels to compute a "
      f"reference of theirs)"
    )


def score_images(
  config, images: str | None, reference: str | None, metric_names, out: str | None, save_reference: str | None
) -> dict:
  """Scores the images at ``images`` against the reference of ``config``'s dataset or the
  statistics file ``reference``; writes the references used to ``save_reference``. Returns the
  metrics line."""
  import json

  import numpy as np

  from sagan_jax import config as config_lib
  from sagan_jax import sharding
  from sagan_jax import workdir as workdir_lib
  from sagan_jax.data import image_files
  from sagan_jax.evaluation import references, registry
  from sagan_jax.evaluation.evaluator import Evaluator

  names = tuple(metric_names or config.eval.metrics)
  for name in names:
    registry.get(name)
  config_lib.validate_config(config)
  used = list(dict.fromkeys(registry.get(n).space for n in names))
  stored = references.read_file(reference) if reference else None
  if stored and used != [stored.space]:
    raise UserError(
      f"--reference={reference} holds statistics in the {stored.space} space only; "
      f"--metrics={','.join(names)} need {used}"
    )
  image_set = image_files.read(images) if images else None
  if image_set:
    _check_image_set(image_set, config, stored.key if stored else None)
    unlabelled = [n for n in names if registry.get(n).needs_labels and image_set.labels is None]
    if unlabelled:
      raise UserError(
        f"{unlabelled} need each image's class: put the images in subfolders named by their label "
        f"or save 'labels' in the .npz"
      )
  evaluator = Evaluator(config, sharding.create_mesh(), None, None, metric_names=names)
  if stored:
    evaluator.use_reference(stored)
  for space in used:
    evaluator.reference(space)
  if save_reference:
    for space in used:
      target = save_reference if len(used) == 1 else save_reference.replace(".npz", f"-{space}.npz")
      references.write_file(evaluator.reference(space), target)
      print(f"reference statistics in the {space} space: {target}")
  if not image_set:
    return {}
  evaluator.check_num_samples(len(image_set.images), names)
  features = evaluator.image_features(image_set.images.astype(np.float32) / 127.5 - 1.0)
  labels = image_set.labels if image_set.labels is not None else np.full(len(image_set.images), -1)
  scalars, details = evaluator.score(features, labels, names)
  line = {
    "images": image_set.source,
    "num_samples": len(image_set.images),
    **scalars,
    **details,
    **evaluator.data_protocol(names, used),
  }
  if out:
    path = workdir_lib.path(out)
    previous = path.read_text() if path.exists() else ""
    workdir_lib.write_atomic(path, previous + json.dumps(line) + "\n")
  return line


def _evaluate():
  from sagan_jax import runtime

  runtime.start(distributed=True)
  if FLAGS.num_samples is not None and FLAGS.num_samples <= 0:
    raise UserError(
      f"--num_samples={FLAGS.num_samples}: score at least one sample (default: config.eval.num_samples)"
    )
  if FLAGS.images or FLAGS.save_reference:
    if FLAGS.workdir:
      raise UserError("--workdir scores a run, --images a set of images: give one of them")
    if not FLAGS.config and not FLAGS.reference:
      raise UserError(
        "--images needs the reference: --config=<the dataset's config> or --reference=STATS.npz"
      )
    if FLAGS.reference and FLAGS.save_reference:
      raise UserError("--save_reference writes the statistics of --config's dataset: drop --reference")
    config = FLAGS.config
    if config is None:
      from configs import default

      config = default.get_config()
    return score_images(config, FLAGS.images, FLAGS.reference, FLAGS.metrics, FLAGS.out, FLAGS.save_reference)
  if not FLAGS.workdir:
    raise UserError("--workdir is required (or --images to score a set of images)")
  return evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step, FLAGS.num_samples, FLAGS.noise_seed)


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  import json

  from sagan_jax import cli

  result = cli.run(_evaluate)
  if FLAGS.images:
    print(json.dumps(result))  # the metrics line with its protocol
  elif result:
    print(", ".join(f"{k}={v:.4g}" for k, v in result.items()))  # the one-line result


if __name__ == "__main__":
  from sagan_jax import cli

  app.run(main, flags_parser=cli.parse_flags)
