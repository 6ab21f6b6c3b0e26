"""The embedded default: class-conditional SAGAN on Fashion-MNIST, 32×32, on a CPU.

Runs offline from Debian's `dataset-fashion-mnist` IDX files. The model is the
paper's (attention in G and D, SN in both, hinge loss, TTUR, conditional BN,
projection D) at a width a 2-core CPU trains in minutes. Attention form: the
paper's (f, g, h with C/8 channels, no pooling).
"""
import ml_collections
from ml_collections import config_dict


def get_config(variant: str = ""):
  """`--config=configs/fashion_mnist.py` or `…:smoke` for the tiny smoke variant."""
  config = ml_collections.ConfigDict()
  config.seed = 0                      # seeds parameters, noise and data order.

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "fashion_mnist"   # 'fashion_mnist' (IDX files), 'folder' (data_dir/<class>/*.jpg|png)
                                          # or a TFDS name ('imagenet2012', 'cifar10', …).
  config.dataset.data_dir = ""         # fashion_mnist: folder of the four IDX .gz files ('' = Debian's, then
                                       # the cache); folder: the image folder; TFDS: data_dir ('' = TFDS default, gs:// works).
  config.dataset.version = ""          # TFDS version, e.g. '5.1.0' ('' = the builder's default).
  config.dataset.manual_dir = ""       # TFDS manual_dir, hand-downloaded archives ('' = <data_dir>/downloads/manual).
  config.dataset.split = "train"       # fashion_mnist: 'train' (60k) or 'test' (10k); TFDS: e.g. 'train', 'train[:90%]'; folder: unused.
  config.dataset.random_flip = False   # random horizontal flip; off: Fashion-MNIST footwear faces left (a flip changes the data).
  config.augment = ()                  # DiffAugment policies on every image D sees, real and generated:
                                       # of 'color', 'translation', 'cutout'; () = none.

  config.model = ml_collections.ConfigDict()
  config.model.resolution = 32         # image side; 32, 64, 128 or 256.
  config.model.image_channels = 1      # output channels of G / input channels of D.
  config.model.num_classes = 10        # labels must lie in [0, num_classes).
  config.model.ch = 8                  # width unit: blocks have ch × 4 = 32 channels (ch=4 stays blurry and off-class).
  config.model.d_ch = config_dict.placeholder(int)  # D's width unit if not ch (BigGAN's D_ch).
  config.model.z_dim = 128             # noise dimension.
  config.model.attention_resolutions = (16,)  # feature sides with attention in G and D; () = none.
  config.model.g_attention_resolutions = config_dict.placeholder(tuple)  # overrides for G only.
  config.model.d_attention_resolutions = config_dict.placeholder(tuple)  # overrides for D only.
  config.model.key_channel_ratio = 8   # f, g get C/8 channels (paper).
  config.model.value_channel_ratio = 8  # h gets C/8 channels (paper); the released code uses 2.
  config.model.pool_kv = False         # released code max-pools keys/values 2×2; the paper does not.
  config.model.attention_impl = "xla"  # 'xla' (explicit softmax), 'dot_product_attention' (cuDNN
                                       # flash attention on CUDA GPUs with bf16), or 'chunked' (the
                                       # explicit softmax over query chunks: B×chunk×N scores, any backend).
  config.model.attention_query_chunk = 256  # 'chunked': queries per chunk (B×chunk×N float32
                                       # scores alive: 4 GiB at feat128, batch 256).
  config.model.attention_block = "self_attention"  # at those sides: 'self_attention', or 'residual' (Table 1's
                                       # control: a residual block with the same parameter count).
  config.model.g_spectral_norm = True  # SN on every G conv/linear (paper §4.1).
  config.model.d_spectral_norm = True  # SN on every D conv/linear and the projection embedding.
  config.model.sn_cbn_gains = False    # SN on G's class-conditional BN gains (released code: no).

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.g_lr = 2e-4         # TTUR (paper §4.2: lr_G 1e-4); doubled so the CPU run converges in minutes …
  config.optimizer.d_lr = 1.6e-3       # … and lr_D 8× lr_G (paper 4×): a faster D keeps more modes (coverage);
                                       # 3300 steps make its samples class-correct (README Results).
  config.optimizer.b1 = 0.0            # Adam β1 (paper: 0).
  config.optimizer.b2 = 0.9            # Adam β2 (paper: 0.9; the released code used TF's 0.999).
  config.optimizer.eps = 1e-8          # Adam ε.

  config.loss = "hinge"                # paper: hinge; see sagan_jax.losses for ablation losses.
  config.d_steps_per_g_step = 1        # D updates per G update (paper: 1).
  config.batch_size = 32               # global batch per D step; divisible by the device count.
  config.num_train_steps = 3300        # G updates: sized to `make train`'s 15 minutes on 2 cores, with margin (README, Results).
  config.dtype = "float32"             # compute dtype of G and D ('float32' or 'bfloat16').

  # EMA of G's weights; the EMA G makes every sample. 'power': decay (1 - 1/t)^(γ+1) at step t
  # (EDM2), an average over the last ~10% of training at γ=6.94, so it keeps up with a G that is
  # still improving fast (a constant 0.999 lagged: class accuracy 0.76 vs 0.90, README Results);
  # 'constant': ema_decay from ema_start_step on, a copy of G before.
  config.ema_schedule = "power"
  config.ema_power_gamma = 6.94        # 'power' only.
  config.ema_decay = 0.999             # 'constant' only.
  config.ema_start_step = 800          # 'constant' only.
  config.sample_bn_stats = "standing"  # BN statistics when sampling: 'standing', 'running' or 'batch'.
  config.standing_stats_batches = 8    # batches of fresh samples that measure standing statistics.

  config.log_every_steps = 50          # scalars (losses, D outputs, γ, grad norms, steps/s).
  config.sample_every_steps = 600      # sample grid PNG under workdir/samples/.
  config.checkpoint_every_steps = 600  # orbax checkpoint; also written at the end.
  config.keep_checkpoints = 3          # checkpoints kept on disk.
  config.async_checkpoints = False     # False: a save completes before training goes on, so a hard kill
                                       # loses at most checkpoint_every_steps; True: training continues
                                       # while it is written (a kill meanwhile loses that save too).
  config.max_nonfinite_steps = 10      # consecutive skipped non-finite steps before restoring the last checkpoint.
  config.num_sample_columns = 10       # samples per class row in the grid.

  # Evaluation (sagan_jax/evaluation/evaluator.py): EMA samples scored against real data,
  # one line per evaluation in workdir/metrics.jsonl (and TensorBoard).
  config.eval_every_steps = 0          # evaluate every N steps and at the end; 0 = never (keeps `make train` under 15 min;
                                       # score a run with `python -m sagan_jax.evaluate`).
  config.eval_num_samples = 5000       # samples per periodic evaluation.
  config.eval_final_num_samples = 10000  # default of `python -m sagan_jax.evaluate` (final numbers).
  config.eval_batch_size = 512         # samples per sharded batch; a multiple of the device count.
  config.eval_metrics = ("fid_fmnist", "class_accuracy", "prdc")  # of 'fid', 'is', 'intra_fid' (FID Inception) and 'fid_fmnist'
                                       # (offline: the project's Fashion-MNIST classifier; not an FID).
  config.eval_reference_split = "test"  # real data of the reference statistics (never flipped).
  config.eval_reference_samples = 10000  # real images in them (a fixed random subset if the split is larger).
  config.eval_is_splits = 10           # IS splits (10 as most papers; the released SAGAN code: 1).
  config.eval_cache_dir = ""           # reference stats, classifier, Inception weights ('' = ~/.cache/sagan_jax).
  config.inception_weights = ""        # path of pt_inception-2015-12-05-6726825d.pth ('' = cache, else download).
  config.eval_fmnist_classifier_epochs = 4   # training budget of the fid_fmnist classifier (cached by it) …
  config.eval_fmnist_classifier_num_train = 0  # … and its training images (0 = all 60k).
  return apply_variant(config, variant)


def apply_variant(config, variant):
  """Variants shared by every config: '' (as is) or 'smoke' (a few tiny CPU steps)."""
  if variant == "":
    return config
  if variant != "smoke":
    raise ValueError(f"unknown config variant {variant!r}; use 'smoke' or none")
  config.model.ch = 4
  config.model.z_dim = 16
  config.batch_size = 8
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.sample_every_steps = 4
  config.checkpoint_every_steps = 2
  config.standing_stats_batches = 2
  config.num_sample_columns = 2
  config.eval_every_steps = 0          # off: it would train the fid_fmnist classifier or need the Inception weights.
  return config
