"""A run's own config, read from its workdir: to fine-tune a converted checkpoint
(python -m sagan_jax.convert) or resume any run without its config file.

  python -m sagan_jax.main --config=configs/from_run.py:runs/sagan128_mmagic --workdir=runs/sagan128_mmagic \
      [--config.dataset.data_dir=…] [--config.optimizer.g_lr=…]

The variant after ':' is the workdir whose config.json is read; fields not in it (added since
it was written) take the values that reproduce it; --config.X=… overrides as for any config.
"""
from sagan_jax import run


def get_config(workdir: str = ""):
  if not workdir:
    raise ValueError("name the run: --config=configs/from_run.py:WORKDIR")
  return run.load_config(workdir)
