"""Shared fixtures: a tiny Fashion-MNIST-format dataset the tests write themselves."""

import gzip
import os
import signal
import struct
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# PyPI's Linux torch (the reference tests' dependency) brings Triton, whose native library
# crashes the process when imported after TensorFlow's; torch imports it only to probe for
# GPU kernels, and treats an ImportError as "no Triton", which a CPU test wants anyway.
sys.modules.setdefault("triton", None)
# Tests compile many small programs and run each a few times: XLA's LLVM backend at -O0
# (with its expensive passes off) halves compile time. Set before jax is imported, so
# xdist workers and every subprocess a test starts inherit it; =0 tests at full optimisation.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# A shell starts background jobs (`make test &`, nohup in a script) with SIGINT ignored, and
# every child inherits that: the Ctrl-C tests would then see their signal vanish. Here it is
# handled again, and processes the tests start get the default disposition (exec resets a handler).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)


_COMPILED = []  # the name of every program compiled (or loaded from the persistent cache)


def _record_compile(event: str, duration: float, **kwargs):
  del duration
  if event == "/jax/core/compile/backend_compile_duration":
    name = kwargs.get("fun_name", "")
    _COMPILED.append(name[4:-1] if name.startswith("jit(") and name.endswith(")") else name)


@pytest.fixture
def compiled():
  """compiled() -> the names of the functions whose programs XLA compiled (or loaded from the
  persistent cache) in this process since the test began ('train_step' for jit(train_step)),
  through jax.monitoring's public events."""
  start = len(_COMPILED)
  return lambda: list(_COMPILED[start:])


# The integration tier: files whose tests train, compile train steps, or start the tools as
# processes. Every other file is the unit tier (`make test-fast`, pytest -m "not integration").
INTEGRATION = {
  "test_benchmark.py",
  "test_convert.py",
  "test_cpu_devices.py",
  "test_distributed.py",
  "test_docs.py",
  "test_divergence.py",
  "test_ema.py",
  "test_ema_schedule_experiment.py",
  "test_end_to_end.py",
  "test_evaluator.py",
  "test_faults.py",
  "test_input_pipeline.py",
  "test_precision.py",
  "test_recompile.py",
  "test_report.py",
  "test_robustness.py",
  "test_sample.py",
  "test_score_images.py",
  "test_sharding.py",
  "test_soak.py",
  "test_sweeps.py",
  "test_unconditional.py",
  "test_visualize.py",
}


def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.path.name in INTEGRATION:
      item.add_marker(pytest.mark.integration)


def pytest_configure(config):
  """Identical train steps compiled by different tests load from one persistent cache."""
  import tempfile

  import jax

  jax.monitoring.register_event_duration_secs_listener(_record_compile)
  config.addinivalue_line("markers", "integration: trains, compiles train steps or starts the tools")
  # One cache for the session: xdist workers inherit it from the controller, and
  # `python -m sagan_jax.main` subprocesses read it through SAGAN_JAX_XLA_CACHE.
  cache = os.environ.get("SAGAN_JAX_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="sagan_jax_xla_")
  os.environ["SAGAN_JAX_TEST_XLA_CACHE"] = os.environ["SAGAN_JAX_XLA_CACHE"] = cache
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def write_idx(path, array):
  """Writes an IDX file (the format of the original MNIST/Fashion-MNIST .gz files)."""
  array = np.asarray(array, np.uint8)
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def make_fake_fashion_mnist(directory, n_train=200, n_test=50, num_classes=10, seed=0):
  """Class-dependent blobs, so a label mix-up would be visible."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for split, n in (("train", n_train), ("t10k", n_test)):
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 50, (n, 28, 28))
    for i, label in enumerate(labels):
      images[i, 2 * label : 2 * label + 8, 4:24] = 200
    write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), images)
    write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), labels)
  return directory


@pytest.fixture(scope="session")
def fake_fmnist_dir(tmp_path_factory):
  return make_fake_fashion_mnist(str(tmp_path_factory.mktemp("fmnist")))


@pytest.fixture
def smoke_config(fake_fmnist_dir):
  from configs import fashion_mnist

  config = fashion_mnist.get_config("smoke")
  config.dataset.data_dir = fake_fmnist_dir
  return config


_INSTALL = "the reference tests need pip install -r requirements-test.txt"


def import_pytorch_fid(module: str):
  """(torch, pytorch_fid.<module>), or skip the test when they are not installed."""
  torch = pytest.importorskip("torch", reason=f"torch is not installed; {_INSTALL}", exc_type=ImportError)
  return torch, pytest.importorskip(
    f"pytorch_fid.{module}", reason=f"pytorch-fid is not installed; {_INSTALL}", exc_type=ImportError
  )
