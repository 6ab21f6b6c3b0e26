"""The base of every config: the paper's SAGAN on your own class-labelled images, 128×128.

  python -m sagan_jax.main --config=configs/default.py --workdir=runs/mine \
      --config.dataset.data_dir=PATH --config.model.num_classes=K

PATH holds one folder of JPEG/PNG images per class. The model and recipe are the paper's
(Zhang et al. 2018, §3–§5): attention in G and D (at feat32), spectral norm in both, hinge
loss, TTUR (Adam β1 0, β2 0.9, lr_G 1e-4, lr_D 4e-4, one D step per G step), conditional BN in
G, projection D, batch 256, BigGAN's EMA of G. Attention form: the paper's (f, g, h with C/8
channels, no pooling). The other configs (fashion_mnist, cifar10, sagan128) change only what
differs; every field is commented here. ``:smoke`` (every config has it) trains a few tiny
steps, to check that a setup works.
"""
import ml_collections
from ml_collections import config_dict


def get_config(variant: str = ""):
  """`--config=configs/default.py` or `…:smoke`."""
  config = ml_collections.ConfigDict()
  config.seed = 0                      # seeds parameters, noise and data order.

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "folder"       # 'fashion_mnist' (IDX files), 'folder' (data_dir/<class>/*.jpg|png)
                                       # or a TFDS name ('imagenet2012', 'cifar10', …).
  config.dataset.data_dir = ""         # fashion_mnist: folder of the four IDX .gz files ('' = Debian's,
                                       # then the cache); folder: the image folder; TFDS: data_dir
                                       # ('' = TFDS default; gs:// works).
  config.dataset.version = ""          # TFDS version, e.g. '5.1.0' ('' = the builder's default).
  config.dataset.manual_dir = ""       # TFDS manual_dir, hand-downloaded archives
                                       # ('' = <data_dir>/downloads/manual).
  config.dataset.split = "train"       # fashion_mnist: 'train' (60k) or 'test' (10k); TFDS: e.g. 'train',
                                       # 'train[:90%]'; folder: unused.
  config.dataset.random_flip = True    # random horizontal flip of training images (BigGAN's and SAGAN's).
  config.dataset.min_decodable_fraction = 0.5  # folder: of the files of each class tried at start (up
                                       # to 16), the share that must decode, or the class is refused.
  config.augment = ()                  # DiffAugment policies on every image D sees, real and generated:
                                       # of 'color', 'translation', 'cutout'; () = none.

  config.model = ml_collections.ConfigDict()
  config.model.resolution = 128        # image side; 32, 64, 128 or 256.
  config.model.image_channels = 3      # output channels of G / input channels of D.
  config.model.num_classes = 1000      # labels must lie in [0, num_classes); 0: unconditional (plain BN in
                                       # G, no projection in D; a flat image folder or a label-free TFDS set).
  config.model.ch = 64                 # width unit (BigGAN/SAGAN 128×128: G 1024…64, D 64…1024 channels).
  config.model.d_ch = config_dict.placeholder(int)  # D's width unit if not ch (BigGAN's D_ch).
  config.model.z_dim = 128             # noise dimension.
  config.model.attention_resolutions = (32,)  # feature sides with attention in G and D; () = none.
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
  # How convs and attention are computed (the same math; sagan_jax/models/kernels.py): 'auto'
  # picks what was measured faster on the platform the program is built for (sagan_jax/kernels.py).
  config.model.kernels = ml_collections.ConfigDict(dict(
      platform="auto",              # 'cpu', 'cuda', 'rocm', 'tpu' ('auto': the devices').
      conv_kernel_grad="auto",      # 'xla', 'taps_1x1', 'taps'.
      resampling_conv="auto",       # 'composed', 'low_resolution'.
      attention_backward="auto",    # 'autodiff', 'hand_written'.
      attention_query_sums="auto",  # 'dot', 'per_channel'.
      parameter_update="auto",      # 'per_array', 'flat' (the optimizer and EMA on one vector).
  ))
  config.model.attention_block = "self_attention"  # at those sides: 'self_attention', or 'residual'
                                       # (Table 1's control: a residual block with the same parameter count).
  config.model.g_spectral_norm = True  # SN on every G conv/linear (paper §4.1).
  config.model.d_spectral_norm = True  # SN on every D conv/linear and the projection embedding.
  config.model.sn_cbn_gains = False    # SN on G's class-conditional BN gains (released code: no).
  config.model.bn_eps = 1e-5           # ε of G's batch norms (mmagic's and StudioGAN's SAGAN: 1e-4).
  config.model.d_shortcut_preactivated = False  # D's blocks after the first add a shortcut of relu(x)
                                       # (what PyTorch's in-place ReLU computes: StudioGAN's SAGAN).

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.g_lr = 1e-4         # TTUR (paper §4.2): lr_G 1e-4 …
  config.optimizer.d_lr = 4e-4         # … and lr_D 4e-4.
  config.optimizer.b1 = 0.0            # Adam β1 (paper: 0).
  config.optimizer.b2 = 0.9            # Adam β2 (paper: 0.9; the released code used TF's 0.999).
  config.optimizer.eps = 1e-8          # Adam ε.

  config.loss = "hinge"                # paper: hinge; see sagan_jax.losses for ablation losses.
  config.d_steps_per_g_step = 1        # D updates per G update (paper: 1).
  config.batch_size = 256              # global batch per D step (paper: 256); divisible by the device count.
  config.num_train_steps = 1_000_000   # G updates.
  config.dtype = "float32"             # compute dtype of G and D ('float32' or 'bfloat16').

  # EMA of G's weights; the EMA G makes every sample. 'constant': ema_decay from ema_start_step on,
  # a copy of G before (BigGAN's 0.9999 once G is past its first phase); 'power': decay
  # (1 - 1/t)^(γ+1) at step t (EDM2), an average over the last ~10% of training at γ=6.94, which
  # keeps up with a G that is still improving fast (short runs).
  config.ema_schedule = "constant"
  config.ema_power_gamma = 6.94        # 'power' only.
  config.ema_decay = 0.9999            # 'constant' only.
  config.ema_start_step = 20_000       # 'constant' only.
  config.sample_bn_stats = "standing"  # BN statistics when sampling: 'standing', 'running' or 'batch'.
  config.standing_stats_batches = 16   # batches of fresh samples that measure standing statistics.

  config.log_every_steps = 100         # scalars (losses, D outputs, γ, grad norms, steps/s).
  config.sample_every_steps = 5_000    # sample grid PNG under workdir/samples/.
  config.checkpoint_every_steps = 5_000  # orbax checkpoint; also written at the end.
  config.keep_checkpoints = 3          # checkpoints kept on disk.
  config.best_metric = ""              # a scalar of the periodic evaluations (e.g. 'fid', 'coverage'):
                                       # its best value's checkpoint is kept in workdir/best/ ('' = none).
  config.best_mode = "min"             # 'min' (FID, KID) or 'max' (IS, coverage) for best_metric.
  config.async_checkpoints = False     # False: a save completes before training goes on, so a hard kill
                                       # loses at most checkpoint_every_steps; True: training continues
                                       # while it is written (a kill meanwhile loses that save too).
  config.max_nonfinite_steps = 10      # consecutive skipped (never applied) non-finite updates before
                                       # the run stops.
  config.num_sample_columns = 8        # samples per class row in the grid.
  config.profile_steps = 0             # > 0: a jax.profiler trace of that many steps (from the 4th step of
                                       # a session on) in workdir/profile/ (TensorBoard, Perfetto).
  config.cpu_devices = 0               # JAX devices a CPU host is split into (0: one per core, at most 4,
                                       # dividing the batch sizes); no effect on GPUs and TPUs.

  # Evaluation (sagan_jax/evaluation/): EMA samples scored against real data, one line per
  # evaluation in workdir/metrics.jsonl (and TensorBoard). How samples are scored:
  config.eval = ml_collections.ConfigDict()
  config.eval.metrics = ("fid", "is")  # registry names: 'fid', 'kid', 'is', 'intra_fid', 'prdc_inception'
                                       # (FID Inception), 'fid_fmnist', 'class_accuracy', 'prdc' (offline:
                                       # the project's Fashion-MNIST classifier; not an FID).
  config.eval.num_samples = 50_000     # default of `python -m sagan_jax.evaluate` (final numbers; paper §5).
  config.eval.batch_size = 256         # samples per sharded batch; a multiple of the device count.
  config.eval.reference_split = "train"  # real data of the reference statistics (never flipped).
  config.eval.reference_samples = 50_000  # real images in them (a fixed random subset of a larger split).
  config.eval.is_splits = 10           # IS splits (10 as most papers; the released SAGAN code: 1).
  config.eval.kid_subsets = 100        # KID: random subset pairs averaged (torch-fidelity's 100) …
  config.eval.kid_subset_size = 1000   # … of this many samples per set (torch-fidelity's 1000).
  config.eval.prdc_k = 5               # k of the k-NN balls of prdc and prdc_inception (Naeem et al.: 5).
  config.eval.cache_dir = ""           # reference stats, classifier, Inception weights ('' = the cache root,
                                       # $XDG_CACHE_HOME/sagan_jax or ~/.cache/sagan_jax).
  config.eval.inception_weights = ""   # path of pt_inception-2015-12-05-6726825d.pth ('' = the cache,
                                       # else a download).
  config.eval.fmnist_classifier_epochs = 4   # training budget of the fid_fmnist classifier (cached by it) …
  config.eval.fmnist_classifier_num_train = 0  # … and its training images (0 = all 60k).
  # When a training evaluates: named entries, each with its own schedule, sample count and
  # metrics (() = eval.metrics); every_steps 0 = never (score a run with python -m sagan_jax.evaluate).
  config.evals = ml_collections.ConfigDict()
  config.evals.periodic = ml_collections.ConfigDict(dict(every_steps=10_000, num_samples=10_000,
                                                         metrics=()))
  return apply_variant(config, variant)


def apply_variant(config, variant: str, smoke_fields: dict | None = None):
  """'' (as is) or 'smoke': a few tiny CPU steps of the same config, to check a setup works.
  ``smoke_fields`` ({dotted name: value}) set what a config's smoke variant needs beyond the
  common ones."""
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
  config.evals.periodic.every_steps = 0  # off: it would train the fid_fmnist classifier or need the
                                         # Inception weights.
  for name, value in (smoke_fields or {}).items():
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config
