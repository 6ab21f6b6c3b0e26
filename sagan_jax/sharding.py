"""Device mesh, shardings, host-local batches -> global jax.Arrays, padding to the devices.

Parameters are replicated; batches are split on the ``data`` axis. Batches carry a
leading D-step axis (one slice per discriminator update), so their batch axis is 1.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def round_up(n: int, multiple: int) -> int:
  """The least multiple of ``multiple`` that holds ``n``: a batch padded to split over devices."""
  return -(-n // multiple) * multiple


def global_batch(local_batch, mesh: Mesh, batch_axis: int = 1):
  """Assembles every process's host-local numpy batch into one global sharded array."""
  sharding = batch_sharding(mesh, batch_axis)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def replicate(host_array, mesh: Mesh) -> jax.Array:
  """A host array, identical on every process, replicated over the mesh (multi-process too)."""
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, replicated(mesh), lambda index: host_array[index])
