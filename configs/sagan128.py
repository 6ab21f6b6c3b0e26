"""The paper: SAGAN on ImageNet (ILSVRC2012) 128×128, 1000 classes (Zhang et al. 2018, §5).

Attention form: the paper's (f, g, h with C/8 channels, no pooling of keys/values).
The authors' released code instead uses pool_kv=True, value_channel_ratio=2; with
those and attention_resolutions=(64,), G and D have 42,017,412 and 39,448,258
parameters, exactly the public PyTorch reference (BigGAN-PyTorch's SAGAN).

Attention at feat32: Table 1's best FID, and where the released code puts G's attention.
feat64 (Table 1's other strong setting) attends over 4096 positions: its N×N map is
64 MiB per image per layer in float32 (16 GiB for a batch of 256 in G's forward alone,
more for the backward) — use model.attention_impl='dot_product_attention' with
dtype='bfloat16' on a GPU (cuDNN flash attention), 'chunked' elsewhere (TPU, float32),
or pool_kv=True there.
"""
from configs import fashion_mnist


def get_config(variant: str = ""):
  """`--config=configs/sagan128.py` or `…:smoke` (tiny widths, a few steps at 128×128)."""
  config = fashion_mnist.get_config()
  config.dataset.name = "imagenet2012"  # TFDS ImageNet (ILSVRC2012), 1000 classes.
  config.dataset.data_dir = ""          # TFDS data_dir ('' = TFDS default; gs:// works on TPU).
  config.dataset.version = "5.1.0"      # TFDS imagenet2012 version, pinned for reproducibility.
  config.dataset.manual_dir = ""        # holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
                                        # ('' = <data_dir>/downloads/manual); read once, on the first run.
  config.dataset.split = "train"        # the paper trains on ILSVRC2012 train (1.28M images).
  config.dataset.random_flip = True     # ImageNet objects face either way (BigGAN flips too).

  config.model.resolution = 128
  config.model.image_channels = 3
  config.model.num_classes = 1000
  config.model.ch = 64                  # BigGAN/SAGAN 128×128 widths: G 1024…64, D 64…1024.
  config.model.z_dim = 128
  config.model.attention_resolutions = (32,)

  config.optimizer.g_lr = 1e-4          # paper §5: lr_G 1e-4, lr_D 4e-4, Adam(0, 0.9).
  config.optimizer.d_lr = 4e-4
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.9
  config.d_steps_per_g_step = 1
  config.batch_size = 256               # paper: 256 (global, over all devices).
  config.num_train_steps = 1_000_000

  config.ema_schedule = "constant"
  config.ema_decay = 0.9999             # BigGAN's EMA, started once G is past its first phase.
  config.ema_start_step = 20_000
  config.standing_stats_batches = 16
  config.log_every_steps = 100
  config.sample_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  config.num_sample_columns = 8
  config.eval_every_steps = 10_000
  config.eval_num_samples = 10_000      # periodic; the final numbers use 50k (paper §5).
  config.eval_final_num_samples = 50_000
  config.eval_batch_size = 256
  # intra-FID over 1000 classes is 1000 matrix square roots of 2048×2048 on the host (hours):
  # final evaluation only, python -m sagan_jax.evaluate … --config.eval_metrics='("fid","is","intra_fid")'.
  config.eval_metrics = ("fid", "is")
  config.eval_reference_split = "validation"  # ILSVRC2012 val, 50 images per class.
  config.eval_reference_samples = 50_000
  if variant == "smoke":
    config = fashion_mnist.apply_variant(config, variant)
    config.model.ch = 2                 # 8 channels at feat32: C/8 = 1 for f, g, h.
    config.batch_size = 4
    config.num_sample_columns = 2
    return config
  return fashion_mnist.apply_variant(config, variant)
