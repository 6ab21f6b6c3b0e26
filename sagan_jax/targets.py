"""The chips a plan compiles for (``python -m sagan_jax.plan --target=NAME``): their facts, and
their devices without the hardware (JAX's deviceless ahead-of-time compilation).

A TPU slice is a libtpu topology; a GPU host a CUDA topology described by an XLA GPU target
config (written here from the card's facts); 'cpu' is this host's CPU devices. Peak figures
are dense (no sparsity), per chip, from the vendors' pages named in ``source``.
"""

import dataclasses
import os

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  platform: str  # 'tpu', 'cuda' or 'cpu'
  chips: int  # devices of the slice or host
  memory_bytes: int  # HBM per chip
  peak_bf16_tflops: float  # dense bf16 matmul peak per chip
  peak_f32_tflops: float  # what a float32 matmul/conv gets by default (TPU: bf16 passes; GPU: TF32)
  memory_tbps: float  # HBM bandwidth per chip, TB/s
  source: str
  topology: str = ""  # libtpu topology name ('v5e:2x4') or CUDA 'slices x hosts x GPUs'
  chips_per_host: tuple = ()  # TPU: the host's chip grid
  chip_config: str = "default"  # TPU: libtpu chip config (v4's megacore; v5p/v6e: megachip)
  gpu: dict = dataclasses.field(default_factory=dict)  # CUDA: the card's facts (gpu_target_config)

  def usable_bytes(self, gpu_memory_fraction: float) -> int:
    """What one program may use per chip: a GPU process gets the fraction JAX preallocates
    (XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by default); a TPU compiler refuses what its HBM
    cannot hold and reports it."""
    if self.platform == "cuda":
      return int(self.memory_bytes * gpu_memory_fraction)
    return self.memory_bytes

  def peak_tflops(self, dtype: str) -> float:
    return self.peak_bf16_tflops if dtype == "bfloat16" else self.peak_f32_tflops


_TPU_SOURCE = "cloud.google.com/tpu/docs/{} (per chip: peak bf16 compute, HBM, HBM bandwidth)"
_GPU_SOURCE = "NVIDIA {} datasheet (dense bf16 / TF32 tensor core peaks, HBM bandwidth)"

# XLA's GPU target description of each card (stream_executor.GpuTargetConfigProto fields).
_HOPPER = dict(
  core_count=132,
  fpus_per_core=128,
  clock_rate_ghz=1.98,
  l2_cache_size=52428800,
  shared_memory_per_core=233472,
  shared_memory_per_block_optin=232448,
  compute_capability=(9, 0),
)
_AMPERE = dict(
  core_count=108,
  fpus_per_core=64,
  clock_rate_ghz=1.41,
  l2_cache_size=41943040,
  shared_memory_per_core=167936,
  shared_memory_per_block_optin=166912,
  compute_capability=(8, 0),
)


def _tpu(name, chips, topology, host, memory_gib, bf16, tbps, page, chip_config="default"):
  return Target(
    name, "tpu", chips, int(memory_gib * GIB), bf16, bf16, tbps, _TPU_SOURCE.format(page),
    topology=topology, chips_per_host=host, chip_config=chip_config,
  )  # fmt: skip


def _gpu(name, chips, memory_bytes, bf16, tf32, tbps, card, facts):
  gpu = dict(facts, memory_bytes=memory_bytes, bandwidth=int(tbps * 1e12), description=card)
  return Target(
    name, "cuda", chips, memory_bytes, bf16, tf32, tbps, _GPU_SOURCE.format(card),
    topology=f"1x1x{chips}", gpu=gpu,
  )  # fmt: skip


# Cloud TPU names count chips for v5e/v6e and TensorCores (two per chip) for v4/v5p.
TARGETS = {
  t.name: t
  for t in (
    _tpu("v4-8", 4, "v4:2x2x1", (2, 2, 1), 32, 275.0, 1.2, "v4", chip_config="megacore"),
    _tpu("v5e-8", 8, "v5e:2x4", (2, 4, 1), 16, 197.0, 0.819, "v5e"),
    _tpu("v5p-8", 4, "v5p:2x2x1", (2, 2, 1), 95, 459.0, 2.765, "v5p", chip_config="megachip_tccontrol"),
    _tpu("v6e-8", 8, "v6e:2x4", (2, 4, 1), 32, 918.0, 1.64, "v6e", chip_config="megachip_tccontrol"),
    _gpu("h100", 1, 84942979072, 989.4, 494.7, 3.35, "H100 SXM5 80GB", _HOPPER),
    _gpu("h100-8", 8, 84942979072, 989.4, 494.7, 3.35, "H100 SXM5 80GB", _HOPPER),
    _gpu("h200", 1, 151397597184, 989.4, 494.7, 4.8, "H200 SXM 141GB", _HOPPER),
    _gpu("h200-8", 8, 151397597184, 989.4, 494.7, 4.8, "H200 SXM 141GB", _HOPPER),
    _gpu("a100", 1, 85100068864, 312.0, 156.0, 2.039, "A100 SXM4 80GB", _AMPERE),
    _gpu("a100-8", 8, 85100068864, 312.0, 156.0, 2.039, "A100 SXM4 80GB", _AMPERE),
  )
}
CPU = "cpu"  # this host's CPU devices (no peaks: no step-time bound)


def gpu_target_config(target: Target) -> str:
  """The XLA GPU target config (text proto) of ``target``'s card: what the CUDA compiler reads
  instead of querying a device."""
  g = target.gpu
  major, minor = g["compute_capability"]
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {g["shared_memory_per_core"]}
  threads_per_core_limit: 2048
  core_count: {g["core_count"]}
  fpus_per_core: {g["fpus_per_core"]}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {g["bandwidth"]}
  l2_cache_size: {g["l2_cache_size"]}
  clock_rate_ghz: {g["clock_rate_ghz"]}
  device_memory_size: {g["memory_bytes"]}
  shared_memory_per_block_optin: {g["shared_memory_per_block_optin"]}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
device_description_str: "NVIDIA {g["description"]}"
"""


def prepare_environment() -> None:
  """What a deviceless compile needs before JAX starts: libtpu without the GCE metadata server,
  the CUDA plugin without its driver checks (no GPU here), CPU as the default backend."""
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # libtpu's start-up warnings about a host that is no TPU VM: expected here, and not the user's
  os.environ.setdefault("TPU_STDERR_LOG_LEVEL", "3")
  os.environ.setdefault("TPU_MIN_LOG_LEVEL", "3")


def devices(target: Target, cpu_devices: int = 0):
  """The compile-only devices of ``target`` (this host's for 'cpu'). RuntimeError with what to
  install where the compiler for it is missing."""
  import jax

  if target.platform == CPU:
    found = jax.devices("cpu")
    return found[:cpu_devices] if cpu_devices else found
  from jax.experimental import topologies

  try:
    if target.platform == "tpu":
      topology = topologies.get_topology_desc(
        platform="tpu",
        topology_name=target.topology,
        chip_config_name=target.chip_config,
        chips_per_host_bounds=target.chips_per_host,
        num_slices=1,
      )
    else:
      topology = topologies.get_topology_desc(
        platform="cuda", topology_name=target.name, topology=target.topology,
        target_config=gpu_target_config(target),
      )  # fmt: skip
  except (RuntimeError, NotImplementedError) as e:
    package = "libtpu" if target.platform == "tpu" else "jax-cuda13-plugin"
    raise RuntimeError(
      f"no {target.platform} compiler in this environment ({package} missing or failing: "
      f"{str(e).splitlines()[0][:200]}); run `make plan-venv` and use .venv-plan/bin/python"
    ) from e
  return topology.devices


def cpu_target(chips: int) -> Target:
  return Target(CPU, CPU, chips, 0, 0.0, 0.0, 0.0, "this host")
