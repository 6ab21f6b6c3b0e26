"""Published PyTorch SAGAN checkpoints (mmagic, StudioGAN) as runs of this package:
``python -m sagan_jax.convert`` (sagan_jax/convert/__main__.py)."""
