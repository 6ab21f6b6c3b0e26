"""The paper: SAGAN on ImageNet (ILSVRC2012) 128×128, 1000 classes (Zhang et al. 2018, §5).

  python -m sagan_jax.main --config=configs/sagan128.py --workdir=gs://BUCKET/sagan128   (a TPU slice)

ImageNet through TFDS from the hand-downloaded archives (README, Data). Batch 256, 1M steps,
FID and IS every 10k steps on 10k samples, the final numbers on 50k against ILSVRC2012 val.
Attention form: the paper's (f, g, h with C/8 channels, no pooling of keys/values), at feat32:
Table 1's best FID, and where the released code puts G's attention. The authors' released code
instead uses pool_kv=True, value_channel_ratio=2; with those and attention_resolutions=(64,), G
and D have 42,017,412 and 39,448,258 parameters, exactly the public PyTorch reference
(BigGAN-PyTorch's SAGAN). Planned without the hardware (python -m sagan_jax.plan, docs/plan.md):
at batch 256 this config (feat32, float32) needs 4.4 GiB per chip of a v5e-8 and 27 GiB of one
H100; at feat64 11.3 GiB per v5e chip, but 90 GiB of one H100 in float32 — there use
dtype='bfloat16' (46 GiB), model.attention_impl='chunked' (26 GiB) or pool_kv=True (40 GiB).
Never trained to the end here (no GPU or TPU so far).
"""
from configs import default


def get_config(variant: str = ""):
  """`--config=configs/sagan128.py` or `…:smoke` (tiny widths, a few steps at 128×128)."""
  config = default.get_config()
  config.dataset.name = "imagenet2012"  # TFDS ImageNet (ILSVRC2012), 1000 classes.
  config.dataset.version = "5.1.0"      # TFDS imagenet2012 version, pinned for reproducibility.
                                        # dataset.manual_dir holds ILSVRC2012_img_train.tar and
                                        # ILSVRC2012_img_val.tar, read once, on the first run.
  # intra-FID over 1000 classes is 1000 matrix square roots of 2048×2048 on the host (hours):
  # final evaluation only, python -m sagan_jax.evaluate … --config.eval.metrics='("fid","is","intra_fid")'.
  config.eval.reference_split = "validation"  # ILSVRC2012 val, 50 images per class.
  # 8 channels at feat32 in the smoke variant: C/8 = 1 for f, g, h.
  return default.apply_variant(config, variant,
                               {"model.ch": 2, "batch_size": 4, "num_sample_columns": 2})
