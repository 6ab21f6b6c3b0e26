"""CIFAR-10, 32×32, 10 classes: SAGAN at the width of SNGAN/BigGAN's CIFAR models.

  python -m sagan_jax.main --config=configs/cifar10.py --workdir=runs/cifar10

TFDS prepares cifar10 on the first run (a download). 100k steps at batch 64 with the paper's
TTUR; FID, IS every 5k steps on 10k samples, the final numbers (python -m sagan_jax.evaluate)
on 50k against all 50k training images, as the published CIFAR-10 FIDs. Not trained to the end
here (no GPU so far). Attention form: the paper's (C/8 channels, no pooling), at feat16.
"""
from configs import default


def get_config(variant: str = ""):
  """`--config=configs/cifar10.py` or `…:smoke`."""
  config = default.get_config()
  config.dataset.name = "cifar10"       # TFDS cifar10 (downloaded and prepared on the first run).
  config.dataset.version = "3.0.2"      # TFDS cifar10 version, pinned for reproducibility.
  config.model.resolution = 32
  config.model.num_classes = 10
  config.model.ch = 64                  # 256 channels per block (BigGAN's CIFAR table).
  config.model.attention_resolutions = (16,)
  config.batch_size = 64
  config.num_train_steps = 100_000
  config.ema_decay = 0.9999
  config.ema_start_step = 1_000
  config.standing_stats_batches = 8
  config.sample_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.num_sample_columns = 10
  config.evals.periodic.every_steps = 5_000
  config.evals.periodic.num_samples = 10_000  # periodic; the final numbers use 50k.
  config.evals.periodic.metrics = ("fid", "is")
  config.eval.metrics = ("fid", "is", "intra_fid")
  config.eval.batch_size = 512
  return default.apply_variant(config, variant)
