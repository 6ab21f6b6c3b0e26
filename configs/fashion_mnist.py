"""The embedded default: class-conditional SAGAN on Fashion-MNIST, 32×32, on a CPU.

  make train   (= python -m sagan_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist,
                then python -m sagan_jax.evaluate and python -m sagan_jax.report on that workdir)

Runs offline from Debian's `dataset-fashion-mnist` IDX files. The model is the paper's
(attention in G and D, SN in both, hinge loss, TTUR, conditional BN, projection D; attention
form: f, g, h with C/8 channels, no pooling) at a width a 2-core CPU trains in minutes: 3300
steps, a 10×10 grid of samples per class in runs/fashion_mnist/samples/, and the offline
metrics (fid_fmnist, class accuracy, precision/recall/density/coverage) of 10k samples. README
gives the figures over seeds and the time on a 2-core CPU.
"""
from configs import default


def get_config(variant: str = ""):
  """`--config=configs/fashion_mnist.py` or `…:smoke` for the tiny smoke variant."""
  config = default.get_config()
  config.dataset.name = "fashion_mnist"  # the IDX files ('' data_dir: Debian's, then the cache)
  config.dataset.random_flip = False   # Fashion-MNIST footwear faces left: a flip changes the data.

  config.model.resolution = 32
  config.model.image_channels = 1
  config.model.num_classes = 10
  config.model.ch = 8                  # blocks of ch × 4 = 32 channels (ch=4 stays blurry and off-class).
  config.model.attention_resolutions = (16,)

  config.optimizer.g_lr = 2e-4         # the paper's lr_G doubled so the CPU run converges in minutes …
  config.optimizer.d_lr = 1.6e-3       # … and lr_D 8× lr_G (paper 4×): a faster D keeps more modes
                                       # (coverage); 3300 steps make its samples class-correct (README).
  config.batch_size = 32
  config.num_train_steps = 3300        # sized to `make train`'s time on 2 cores, with margin (README).

  # A constant 0.999 lagged behind a G still improving fast (class accuracy 0.76 vs 0.90, README).
  config.ema_schedule = "power"
  config.ema_decay = 0.999
  config.ema_start_step = 800
  config.standing_stats_batches = 8

  config.log_every_steps = 50
  config.sample_every_steps = 600
  config.checkpoint_every_steps = 600
  config.num_sample_columns = 10

  config.eval.metrics = ("fid_fmnist", "class_accuracy", "prdc")
  config.eval.num_samples = 10000
  config.eval.batch_size = 512
  config.eval.reference_split = "test"
  config.eval.reference_samples = 10000
  config.evals.periodic.every_steps = 0  # keeps `make train` short (python -m sagan_jax.evaluate scores
                                         # the run).
  config.evals.periodic.num_samples = 5000
  return default.apply_variant(config, variant)
