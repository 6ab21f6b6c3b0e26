"""Reference points of the offline Fashion-MNIST metrics: what a number means.

Scores sets of real, blurred and noise images exactly as the evaluator scores generator
samples — the same classifier (trained once and cached, eval.fmnist_classifier_epochs of
the config), the same reference (eval.reference_samples images of eval.reference_split,
the test split by default), the same code (Evaluator.image_features, Evaluator.score) — for
fid_fmnist, class_accuracy, precision, recall, density and coverage (k=5).

The sets, each standing where the generator's samples stand:
  real train          held-out real images: a fixed random subset of the *train* split, so
                      that real vs the (test) reference is two independent samples, not one
                      set with itself; labels: their own. The classifier was trained on the
                      train split, so their class accuracy is its training accuracy.
  blurred σ=1 / σ=2   those train images blurred with a Gaussian of σ=1 / 2 px (on the
                      32×32 canvas in [-1, 1], background -1 beyond the border).
  uniform noise       pixels uniform in [-1, 1]; labels cycling through the classes as the
                      evaluator's samples do.
  real test (itself)  the reference images scored against themselves: the ceiling (FID 0,
                      precision = recall = coverage = 1, density 1, the test accuracy).
  real test blurred   the reference images themselves blurred (at the reference's size
                      only): each sits next to its own original, which flatters coverage and
                      recall against an independent set; listed because issue 14 states its
                      targets against "real test images blurred".
Each set is scored at every --num_samples (its first N images; the reference stays whole):
precision, recall and coverage depend on N (coverage of two samples of one distribution is
~0.97 at N = 10k, ~0.60 at N = 2k against a 10k reference).

  python experiments/metric_reference_points.py [--num_samples=10000,5000,2000] \
      [--out=experiments/results/metric_reference_points.json] [--markdown=/tmp/table.md]
"""

import json
import pathlib
import tempfile
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from scipy import ndimage

from sagan_jax import sharding
from sagan_jax.evaluation import evaluator as evaluator_lib
from sagan_jax.evaluation import fmnist_classifier, metrics

config_flags.DEFINE_config_file(
  "config", "configs/fashion_mnist.py", "config whose eval_* fields define the evaluation"
)
_NUM_SAMPLES = flags.DEFINE_list(
  "num_samples", ["10000", "5000", "2000"], "sample counts to score each set at (at most --num_real)"
)
_NUM_REAL = flags.DEFINE_integer("num_real", 10000, "held-out real train images (the largest set)")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the train subset and of the noise")
_OUT = flags.DEFINE_string(
  "out", "experiments/results/metric_reference_points.json", "JSON file of the results ('' = none)"
)
_MARKDOWN = flags.DEFINE_string("markdown", "", "also write the tables to this Markdown file")

METRIC_NAMES = ("fid_fmnist", "class_accuracy", "precision", "recall", "density", "coverage")
BLUR_SIGMAS = (1.0, 2.0)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of (N, H, W, C) images in [-1, 1], the background (-1) beyond the border."""
  return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="constant", cval=-1.0).astype(
    np.float32
  )


def image_sets(config, num_real: int, seed: int) -> dict:
  """{name: (images (N, 32, 32, 1) in [-1, 1], labels (N,))}, see the module docstring."""
  data_dir = config.dataset.data_dir
  train_x, train_y = fmnist_classifier.load_fashion_mnist("train", data_dir)
  rng = np.random.default_rng(seed)
  held_out = rng.permutation(len(train_x))[:num_real]
  real_x, real_y = train_x[held_out], train_y[held_out]
  sets = {"real train": (real_x, real_y)}
  for sigma in BLUR_SIGMAS:
    sets[f"real train blurred σ={sigma:g} px"] = (blur(real_x, sigma), real_y)
  noise = rng.uniform(-1.0, 1.0, real_x.shape).astype(np.float32)
  sets["uniform noise"] = (noise, np.arange(num_real) % config.model.num_classes)
  return sets


def main(argv):
  del argv
  config = flags.FLAGS.config
  config.eval.metrics = ("fid_fmnist", "class_accuracy", "prdc")
  counts = sorted({int(n) for n in _NUM_SAMPLES.value}, reverse=True)
  if counts[0] > _NUM_REAL.value:
    raise app.UsageError(f"--num_samples {counts[0]} exceeds --num_real {_NUM_REAL.value}")
  mesh = sharding.create_mesh()
  with tempfile.TemporaryDirectory() as workdir:  # nothing is written there: no evaluate()
    evaluation = evaluator_lib.Evaluator(config, mesh, sampler=None, workdir=workdir)
  space = evaluation.spaces["fmnist_classifier"]
  reference = evaluation.reference("fmnist_classifier")
  print(
    f"classifier {space.id} (test accuracy {space.info['test_accuracy']:.4f}); reference: "
    f"{len(reference.labels)} images of the {config.eval.reference_split} split; k={config.eval.prdc_k}"
  )

  sets = image_sets(config, _NUM_REAL.value, _SEED.value)
  test_x, test_y = fmnist_classifier.load_fashion_mnist(config.eval.reference_split, config.dataset.data_dir)
  results = {n: {} for n in counts}
  for name, (images, labels) in sets.items():
    features, logits = evaluation.image_features(images)["fmnist_classifier"]
    for n in counts:
      start = time.time()
      scalars, details = evaluation.score(
        {"fmnist_classifier": (features[:n], logits[:n])}, labels[:n], config.eval.metrics
      )
      results[n][name] = {
        **scalars,
        "class_accuracy_per_class": details["class_accuracy_per_class"],
        "seconds": round(time.time() - start, 2),
      }
      print(f"N={n:5d} {name:28s} " + " ".join(f"{k}={scalars[k]:.4f}" for k in METRIC_NAMES), flush=True)
  # The reference images themselves, as they are and blurred (only at the reference's size).
  paired = {}
  if len(test_y) == len(reference.labels):
    for name, images in [("real test (the reference itself)", test_x)] + [
      (f"real test blurred σ={sigma:g} px (paired)", blur(test_x, sigma)) for sigma in BLUR_SIGMAS
    ]:
      features, logits = evaluation.image_features(images)["fmnist_classifier"]
      scalars, details = evaluation.score(
        {"fmnist_classifier": (features, logits)}, test_y, config.eval.metrics
      )
      paired[name] = {**scalars, "class_accuracy_per_class": details["class_accuracy_per_class"]}
      print(
        f"N={len(test_y):5d} {name:28s} " + " ".join(f"{k}={scalars[k]:.4f}" for k in METRIC_NAMES),
        flush=True,
      )

  protocol = {
    "classifier": space.id,
    "classifier_test_accuracy": space.info["test_accuracy"],
    "classifier_epochs": config.eval.fmnist_classifier_epochs,
    "reference": {
      "split": config.eval.reference_split,
      "num_samples": len(reference.labels),
      "cache_file": reference.path.name,
    },
    "k": config.eval.prdc_k,
    "sets": {
      "real train": f"{_NUM_REAL.value} train images, a random subset (seed {_SEED.value}), "
      "their own labels; the classifier was trained on the train split",
      "blurred": "those images, Gaussian blur (scipy.ndimage.gaussian_filter, truncate 4) "
      "on the 32x32 canvas in [-1, 1], cval -1",
      "uniform noise": "pixels uniform in [-1, 1], labels cycling through the classes",
      "paired": "the reference images themselves (blurred): not independent of the reference",
    },
    "coverage_if_identical": {
      n: metrics.expected_coverage_of_identical(len(reference.labels), n) for n in counts
    },
  }
  tables = markdown_tables(results, paired, protocol)
  print(tables)
  if _MARKDOWN.value:
    pathlib.Path(_MARKDOWN.value).write_text(tables)
  if _OUT.value:
    out = {
      "protocol": protocol,
      "results": {str(n): r for n, r in results.items()},
      "reference images themselves (as they are, blurred)": paired,
    }
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {_OUT.value}")


def markdown_tables(results: dict, paired: dict, protocol: dict) -> str:
  lines = []
  header = "| samples (N) | set | " + " | ".join(METRIC_NAMES) + " |"
  lines += [header, "|" + "---|" * (len(METRIC_NAMES) + 2)]
  for n, by_set in results.items():
    for name, scalars in by_set.items():
      cells = [f"{scalars[k]:.2f}" if k == "fid_fmnist" else f"{scalars[k]:.3f}" for k in METRIC_NAMES]
      lines.append(f"| {n} | {name} | " + " | ".join(cells) + " |")
  for name, scalars in paired.items():
    cells = [f"{scalars[k]:.2f}" if k == "fid_fmnist" else f"{scalars[k]:.3f}" for k in METRIC_NAMES]
    lines.append(f"| {protocol['reference']['num_samples']} | {name} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(
    "Coverage of two independent samples of one distribution (Naeem et al. 2020, "
    "Lemma 2), reference of "
    f"{protocol['reference']['num_samples']}: "
    + ", ".join(f"N={n}: {c:.3f}" for n, c in protocol["coverage_if_identical"].items())
  )
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
