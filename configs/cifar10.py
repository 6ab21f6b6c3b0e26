"""CIFAR-10, 32×32, 10 classes: SAGAN at the width of SNGAN/BigGAN's CIFAR models.

Attention form: the paper's (C/8 channels, no pooling), at feat16 in G and D.
"""
from configs import fashion_mnist


def get_config(variant: str = ""):
  """`--config=configs/cifar10.py` or `…:smoke`."""
  config = fashion_mnist.get_config()
  config.dataset.name = "cifar10"       # TFDS cifar10 (downloaded and prepared on the first run).
  config.dataset.data_dir = ""          # TFDS data_dir ('' = TFDS default; gs:// works on TPU).
  config.dataset.version = "3.0.2"      # TFDS cifar10 version, pinned for reproducibility.
  config.dataset.split = "train"
  config.dataset.random_flip = True     # CIFAR-10 objects face either way.
  config.model.image_channels = 3
  config.model.ch = 64                  # 256 channels per block (BigGAN's CIFAR table).
  config.model.attention_resolutions = (16,)
  config.optimizer.g_lr = 1e-4          # the paper's TTUR, not the embedded default's rates (sized to
  config.optimizer.d_lr = 4e-4          # a few thousand CPU steps).
  config.batch_size = 64
  config.num_train_steps = 100_000
  config.ema_schedule = "constant"
  config.ema_decay = 0.9999
  config.ema_start_step = 1_000
  config.log_every_steps = 100
  config.sample_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.eval_every_steps = 5_000
  config.eval_num_samples = 10_000      # periodic; the final numbers use 50k.
  config.eval_final_num_samples = 50_000
  config.eval_metrics = ("fid", "is", "intra_fid")
  config.eval_reference_split = "train"  # as the published CIFAR-10 FIDs: all 50k training images.
  config.eval_reference_samples = 50_000
  return fashion_mnist.apply_variant(config, variant)
