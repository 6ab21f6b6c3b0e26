"""Device mesh, shardings, and host-local batches -> global jax.Arrays.

Parameters are replicated; batches are split on the ``data`` axis. Batches carry a
leading D-step axis (one slice per discriminator update), so their batch axis is 1.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sagan_jax.errors import UserError

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size <= 0 or batch_size % mesh.size:
    raise UserError(f"batch_size {batch_size} must be a positive multiple of the device count "
                    f"{mesh.size}; set --config.batch_size accordingly")


def global_batch(local_batch, mesh: Mesh, batch_axis: int = 1):
  """Assembles every process's host-local numpy batch into one global sharded array."""
  sharding = batch_sharding(mesh, batch_axis)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
