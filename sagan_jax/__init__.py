"""SAGAN in JAX: train, evaluate, look inside and sample class-conditional self-attention GANs.

``sagan_jax.load(workdir_or_checkpoint)`` gives a trained model to sample from (sagan_jax.trained);
the tools are ``python -m sagan_jax.<main|sample|evaluate|visualize|report|ablations|plan>``.
"""


def load(path, step=None, mesh=None):
  """A trained run (its workdir, or one of its checkpoint folders) ready to sample:
  sagan_jax.trained.TrainedModel. Imported on first use: ``import sagan_jax`` loads no JAX."""
  from sagan_jax import trained

  return trained.load(path, step, mesh)
