"""Reading torch.save files without PyTorch: the Inception weights, the peers' GAN checkpoints.

Both of torch.save's formats (the zip archive, and the legacy pre-1.6 stream) are parsed with
an unpickler that builds tensors as numpy arrays and never runs code of the file: a global it
does not know becomes an inert ``Opaque`` record (or is refused, ``strict``), so an mmcv/mmengine
checkpoint's metadata (configs, numpy scalars, message hubs) reads without those packages.
"""

import collections
import os
import pickle
import struct
import zipfile
from typing import NamedTuple

import ml_dtypes
import numpy as np

from sagan_jax.errors import UserError

_STORAGE_DTYPES = {
  "DoubleStorage": np.float64,
  "FloatStorage": np.float32,
  "HalfStorage": np.float16,
  "BFloat16Storage": ml_dtypes.bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {  # torch.UntypedStorage with the dtype named beside it (torch >= 2)
  "float64": np.float64,
  "float32": np.float32,
  "float16": np.float16,
  "bfloat16": ml_dtypes.bfloat16,
  "int64": np.int64,
  "int32": np.int32,
  "int16": np.int16,
  "int8": np.int8,
  "uint8": np.uint8,
  "bool": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
  """A torch.*Storage class as the pickle names it: only its dtype matters."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _TensorRef(NamedTuple):
  """A tensor as its storage and view; materialised once every storage is filled."""

  storage: np.ndarray
  offset: int
  size: tuple
  stride: tuple

  def materialize(self) -> np.ndarray:
    itemsize = self.storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
      self.storage[self.offset :], shape=tuple(self.size), strides=tuple(s * itemsize for s in self.stride)
    )
    return np.array(view)


class Opaque:
  """An object of a class the reader does not build (mmengine's configs, numpy's scalars, …):
  its module.name and the arguments it was pickled with, nothing executed."""

  def __init__(self, name, *args, **kwargs):
    self.name, self.args, self.kwargs, self.state = name, args, kwargs, None

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"Opaque({self.name})"


def _opaque_class(name: str):
  return type("OpaqueClass", (), {"__new__": lambda cls, *a, **k: Opaque(name, *a, **k), "name": name})


def _rebuild_tensor_v2(storage, offset, size, stride, *unused_grad_hooks_metadata):
  return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *unused_grad_hooks):
  return data


_ALLOWED_GLOBALS = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles with tensors as `_TensorRef`s; other classes are refused (``strict``) or read as
  Opaque records. `storage(dtype, key, numel)` returns the flat numpy array of one storage."""

  def __init__(self, file, storage, strict: bool):
    super().__init__(file)
    self._storage, self._strict = storage, strict

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:  # a dtype beside an UntypedStorage
      return _StorageType(_TORCH_DTYPES[name])
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[module, name]
    if self._strict:
      raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a state dict")
    return _opaque_class(f"{module}.{name}")

  def persistent_load(self, pid):
    # ("storage", storage_type, key, location, numel[, view_metadata (legacy only)])
    kind, storage_type, key, _, numel = pid[:5]
    if kind != "storage" or (len(pid) > 5 and pid[5] is not None):
      raise pickle.UnpicklingError(f"unsupported persistent id {kind!r} (or a storage view)")
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
    return self._storage(storage_type.dtype, str(key), numel)


def _load_zip(path, strict):
  with zipfile.ZipFile(path) as archive:
    pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    prefix = pkl[: -len("data.pkl")]

    def storage(dtype, key, numel):
      return np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype, count=numel)

    with archive.open(pkl) as f:
      return _TorchUnpickler(f, storage, strict).load()


def _load_legacy(path, strict):
  """Pre-1.6 format: magic, protocol, sys info, the object, storage keys, raw storages."""
  with open(path, "rb") as f:

    def load_plain():
      # A fresh unpickler each time: one keeps read-ahead bytes between its loads.
      return _TorchUnpickler(f, storage=None, strict=True).load()

    if load_plain() != _LEGACY_MAGIC:
      raise pickle.UnpicklingError("not a torch.save file")
    load_plain()  # protocol version
    load_plain()  # sys info
    storages = {}

    def storage(dtype, key, numel):
      # Filled in place below: the raw bytes follow the pickled object.
      return storages.setdefault(key, np.empty(numel, dtype))

    obj = _TorchUnpickler(f, storage, strict).load()
    for key in load_plain():
      (numel,) = struct.unpack("<q", f.read(8))  # element count, then the bytes
      target = storages[key]
      data = f.read(numel * target.dtype.itemsize)
      if len(data) != numel * target.dtype.itemsize:
        raise EOFError("the file ends inside a tensor")
      target[:] = np.frombuffer(data, target.dtype)
    return obj


def _materialize(obj):
  """The loaded object with every tensor as a numpy array (dicts, lists and tuples walked)."""
  if isinstance(obj, _TensorRef):
    return obj.materialize()
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


_READ_ERRORS = (
  pickle.UnpicklingError,
  EOFError,
  KeyError,
  AttributeError,
  ValueError,
  StopIteration,
  TypeError,
)


def load(path, strict: bool = False):
  """The object a torch.save file holds, tensors as numpy arrays (UserError if it is not one)."""
  if not os.path.isfile(path):
    raise UserError(f"{path} does not exist")
  try:
    obj = _load_zip(path, strict) if zipfile.is_zipfile(path) else _load_legacy(path, strict)
    return _materialize(obj)
  except (*_READ_ERRORS, zipfile.BadZipFile) as e:
    raise UserError(f"{path} is not a complete torch.save file ({type(e).__name__}: {e})") from e


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
  """A state dict saved by torch.save (zip or legacy format) as numpy arrays; only tensors and
  ordered dicts are accepted."""
  if not os.path.isfile(path):
    raise UserError(f"the weights file {path} does not exist.")
  try:
    obj = _load_zip(path, True) if zipfile.is_zipfile(path) else _load_legacy(path, True)
    return {name: ref.materialize() for name, ref in obj.items()}
  except (*_READ_ERRORS, zipfile.BadZipFile) as e:
    raise UserError(f"{path} is not a PyTorch state dict of tensors ({e}).") from e
