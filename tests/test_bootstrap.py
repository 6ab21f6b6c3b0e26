"""tools/bootstrap.py: which JAX build `make venv` installs (dry runs: nothing is installed).

Each run gets a fake PATH (a fake nvidia-smi or none), a fake /sys and /dev (--root) and no
TPU variables, so the real host does not show through. The registry tests resolve the
accelerator installs against the package index, and skip when it cannot be reached.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "bootstrap.py")
CPU_INSTALL = "-m pip install -q -r requirements.txt"  # make venv on a CPU host: what training needs


def fake_bin(tmp_path, nvidia_smi=None):
  """A PATH folder; with nvidia_smi (a shell body) it holds a fake nvidia-smi."""
  path = tmp_path / "bin"
  path.mkdir(exist_ok=True)
  if nvidia_smi is not None:
    exe = path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + nvidia_smi + "\n")
    exe.chmod(0o755)
  return str(path)


def gpu_with_driver_cuda(version):
  """A fake nvidia-smi: `-L` lists a GPU, the plain call prints a header naming the CUDA
  version the driver runs."""
  return (
    'if [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H200 (UUID: GPU-0f0e0d0c-0000-1111-2222-333344445555)";'
    f' else echo "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: {version}   |"; fi'
  )


WORKING_GPU = gpu_with_driver_cuda("13.0")
BROKEN_DRIVER = (
  'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9'
)


def bootstrap(tmp_path, *args, path=None, env=None, root=None):
  """Runs the script's dry run in a hermetic environment (the venv's Python: this one, unless
  env names another); returns the CompletedProcess."""
  clean = {
    k: v
    for k, v in os.environ.items()
    if k not in ("ACCELERATOR", "DRY_RUN", "PYTHON") and not k.startswith("TPU_")
  }
  clean["PATH"] = path or fake_bin(tmp_path)
  clean["PYTHON"] = sys.executable
  clean.update(env or {})
  if root is None:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
  cmd = [sys.executable, SCRIPT, "--dry-run", "--venv", str(tmp_path / "venv"), f"--root={root}", *args]
  return subprocess.run(cmd, capture_output=True, text=True, env=clean, cwd=ROOT, timeout=60)


def install_line(result):
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines() if " -m pip install -q -r " in line]
  assert len(lines) == 1, result.stdout
  return lines[0]


def chosen(result):
  line = install_line(result)
  for accelerator in ("cuda12", "cuda13", "tpu"):
    if f"-r requirements-{accelerator}.txt" in line:
      return accelerator
  assert line.endswith(CPU_INSTALL), line
  return "cpu"


def test_no_accelerator_installs_exactly_the_cpu_requirements(tmp_path):
  result = bootstrap(tmp_path)
  assert chosen(result) == "cpu"
  venv_python = str(tmp_path / "venv" / "bin" / "python")
  assert result.stdout.splitlines() == [
    shlex.join([sys.executable, "-m", "venv", str(tmp_path / "venv")]),
    f"{venv_python} -m pip install -q --upgrade pip",
    f"{venv_python} {CPU_INSTALL}",
    f"{venv_python} -m pip install -q --no-deps -e .",
  ]
  assert "no NVIDIA GPU or TPU found" not in result.stdout  # reasons go to stderr only


def test_the_test_requirements_come_only_with_tests(tmp_path):
  """make train's venv has no PyTorch (requirements-test.txt: ~4 GB); make test's adds it,
  before the accelerator's file."""
  assert "requirements-test.txt" not in bootstrap(tmp_path).stdout
  line = install_line(bootstrap(tmp_path, "--tests", "--accelerator=tpu"))
  assert line.endswith(f"{CPU_INSTALL} -r requirements-test.txt -r requirements-tpu.txt")
  planner = install_line(bootstrap(tmp_path, "--tests", "--accelerator=plan"))
  assert "requirements-test.txt" not in planner  # the planner's venv never takes them


@pytest.mark.parametrize(
  "driver_cuda, accelerator", [("13.0", "cuda13"), ("13.1", "cuda13"), ("12.8", "cuda12")]
)
def test_working_nvidia_smi_picks_the_cuda_major_the_driver_runs(tmp_path, driver_cuda, accelerator):
  result = bootstrap(tmp_path, path=fake_bin(tmp_path, gpu_with_driver_cuda(driver_cuda)))
  assert install_line(result).endswith(f"{CPU_INSTALL} -r requirements-{accelerator}.txt")
  assert f"the driver runs CUDA {driver_cuda}" in result.stderr


def test_a_driver_that_does_not_say_its_cuda_version_gets_cuda12(tmp_path):
  smi = 'if [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA A100"; else echo "no header"; fi'
  assert chosen(bootstrap(tmp_path, path=fake_bin(tmp_path, smi))) == "cuda12"
  assert chosen(bootstrap(tmp_path, env={"ACCELERATOR": "cuda"})) == "cuda12"  # no nvidia-smi


def test_broken_driver_falls_back_to_cpu_and_says_why(tmp_path):
  result = bootstrap(tmp_path, "--print-accelerator", path=fake_bin(tmp_path, BROKEN_DRIVER))
  assert result.returncode == 0 and result.stdout == "cpu\n"
  assert "nvidia-smi -L exited 9" in result.stderr and "ACCELERATOR=cuda" in result.stderr


def test_nvidia_smi_listing_no_gpu_is_cpu(tmp_path):
  result = bootstrap(tmp_path, path=fake_bin(tmp_path, 'echo "No devices were found"'))
  assert chosen(result) == "cpu"


@pytest.mark.parametrize(
  "name,value", [("TPU_ACCELERATOR_TYPE", "v5litepod-8"), ("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")]
)
def test_tpu_environment_picks_tpu(tmp_path, name, value):
  assert chosen(bootstrap(tmp_path, env={name: value})) == "tpu"


def fake_pci(root, vendor, device):
  slot = root / "sys" / "bus" / "pci" / "devices" / "0000:00:04.0"
  slot.mkdir(parents=True)
  (slot / "vendor").write_text(vendor + "\n")
  (slot / "device").write_text(device + "\n")


def test_tpu_chip_on_the_pci_bus_picks_tpu(tmp_path):
  fake_pci(tmp_path / "tpuvm", "0x1ae0", "0x006f")  # a v6e chip (its /dev nodes are vfio)
  assert chosen(bootstrap(tmp_path, root=tmp_path / "tpuvm")) == "tpu"


def test_other_google_pci_device_is_no_tpu(tmp_path):
  fake_pci(tmp_path / "gce", "0x1ae0", "0x0042")  # e.g. a GCE virtual NIC
  (tmp_path / "gce" / "dev" / "vfio").mkdir(parents=True)  # vfio alone is no TPU
  assert chosen(bootstrap(tmp_path, root=tmp_path / "gce")) == "cpu"


def test_dev_accel_picks_tpu(tmp_path):
  (tmp_path / "v4" / "dev").mkdir(parents=True)
  (tmp_path / "v4" / "dev" / "accel0").touch()
  assert chosen(bootstrap(tmp_path, root=tmp_path / "v4")) == "tpu"


@pytest.mark.parametrize("override", ["cpu", "cuda12", "cuda13", "tpu"])
def test_accelerator_overrides_detection(tmp_path, override):
  gpu = fake_bin(tmp_path, WORKING_GPU)
  assert chosen(bootstrap(tmp_path, path=gpu, env={"ACCELERATOR": override})) == override
  assert chosen(bootstrap(tmp_path, f"--accelerator={override}", path=gpu)) == override


def test_invalid_accelerator_is_one_error_line(tmp_path):
  result = bootstrap(tmp_path, env={"ACCELERATOR": "gpu"})
  assert result.returncode == 2 and result.stdout == ""
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ")
  assert "cuda, cpu, cuda12, cuda13, tpu" in lines[0]


def fake_python(bin_dir, name, version=None):
  """A fake interpreter on PATH: prints ``version`` ("3 11") as the probe asks, or fails as
  a pyenv shim of a version pyenv has not selected does."""
  exe = bin_dir / name
  body = f'echo "{version}"' if version else f'echo "pyenv: {name}: command not found" >&2; exit 127'
  exe.write_text("#!/bin/sh\n" + body + "\n")
  exe.chmod(0o755)
  return str(exe)


def bootstrap_python(tmp_path, path, python=""):
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "ACCELERATOR")}
  env["PATH"] = str(path)  # the fakes only (their #!/bin/sh needs no PATH)
  cmd = [
    sys.executable,
    SCRIPT,
    "--dry-run",
    "--accelerator=cpu",
    "--venv",
    str(tmp_path / "venv"),
    f"--python={python}",
  ]
  return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_the_venv_takes_the_newest_python_that_runs(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake_python(bin_dir, "python3.13")  # a shim that does not run
  python312 = fake_python(bin_dir, "python3.12", "3 12")
  fake_python(bin_dir, "python3", "3 11")
  result = bootstrap_python(tmp_path, bin_dir)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[0] == shlex.join([python312, "-m", "venv", str(tmp_path / "venv")])
  assert f"Python 3.12 ({python312})" in result.stderr


def test_no_python_312_is_one_error_line_saying_how_to_get_one(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  python311 = fake_python(bin_dir, "python3", "3 11")
  for python, expect in (
    ("", "no Python 3.12 or newer found"),
    (python311, "is Python 3.11; sagan_jax needs 3.12 or newer"),
  ):
    result = bootstrap_python(tmp_path, bin_dir, python)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines


def test_a_pyenv_shim_that_does_not_run_resolves_to_the_installed_version(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake_python(bin_dir, "python3.13")
  prefix = tmp_path / "pyenv" / "versions" / "3.13.0"
  (prefix / "bin").mkdir(parents=True)
  real = fake_python(prefix / "bin", "python3.13", "3 13")
  pyenv = bin_dir / "pyenv"
  pyenv.write_text(
    f'#!/bin/sh\ncase "$1" in whence) [ "$2" = python3.13 ] && echo 3.13.0;; prefix) echo "{prefix}";; esac\n'
  )
  pyenv.chmod(0o755)
  result = bootstrap_python(tmp_path, bin_dir)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[0].startswith(shlex.join([real, "-m", "venv"]))


def test_a_venv_of_an_older_python_is_made_anew(tmp_path):
  (tmp_path / "venv" / "bin").mkdir(parents=True)
  fake_python(tmp_path / "venv" / "bin", "python", "3 11")
  lines = bootstrap(tmp_path).stdout.splitlines()
  assert lines[0] == shlex.join([sys.executable, "-m", "venv", "--clear", str(tmp_path / "venv")])


def test_switching_away_uninstalls_the_other_accelerators_plugin(tmp_path):
  site = tmp_path / "venv" / "lib" / "python3.13" / "site-packages"
  for dist in ("jax_cuda12_plugin-0.12.0.1", "jax_cuda12_pjrt-0.12.0.1", "jax-0.12.0.1"):
    (site / f"{dist}.dist-info").mkdir(parents=True)
  (tmp_path / "venv" / "bin").mkdir()
  (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
  lines = bootstrap(tmp_path, env={"ACCELERATOR": "cpu"}).stdout.splitlines()
  # The venv exists: no venv creation; the CUDA plugin goes (JAX would load it), jax stays.
  assert [line.split(" -m pip ")[1] for line in lines] == [
    "install -q --upgrade pip",
    "uninstall -q -y jax_cuda12_pjrt jax_cuda12_plugin",
    CPU_INSTALL.removeprefix("-m pip "),
    "install -q --no-deps -e .",
  ]
  assert " -m pip uninstall " not in bootstrap(tmp_path, env={"ACCELERATOR": "cuda12"}).stdout
  to_cuda13 = bootstrap(tmp_path, env={"ACCELERATOR": "cuda13"}).stdout
  assert " -m pip uninstall -q -y jax_cuda12_pjrt jax_cuda12_plugin" in to_cuda13


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_makefile_stamp_names_the_accelerator(tmp_path):
  venv = tmp_path / "venv"
  venv.mkdir()
  (venv / ".installed-cpu").touch()  # newer than every requirement file

  def make(*args):
    return subprocess.run(
      ["make", "-C", ROOT, f"VENV={venv}", *args], capture_output=True, text=True, timeout=60
    )

  assert make("-q", "venv", "ACCELERATOR=cpu").returncode == 0  # up to date
  assert make("-q", "venv", "ACCELERATOR=cuda12").returncode == 1  # another choice reinstalls
  dry = make("-n", "venv", "ACCELERATOR=tpu")
  assert f"tools/bootstrap.py --venv {venv} --accelerator tpu --python=''\n" in dry.stdout
  # make test needs the test requirements on top: their own stamp
  assert make("-q", "test-venv", "ACCELERATOR=cpu").returncode == 1
  assert "--accelerator cpu --python='' --tests" in make("-n", "test-venv", "ACCELERATOR=cpu").stdout
  (venv / ".installed-cpu-tests").touch()
  assert make("-q", "test-venv", "ACCELERATOR=cpu").returncode == 0
  bad = make("-n", "venv", "ACCELERATOR=gpu")
  assert bad.returncode != 0 and "error: ACCELERATOR='gpu'" in bad.stderr


@pytest.fixture(scope="module")
def registry():
  """Skips unless the package index answers quickly (jax-cuda12-plugin is not on disk here)."""
  probe = subprocess.run(
    [
      sys.executable,
      "-m",
      "pip",
      "index",
      "versions",
      "jax-cuda12-plugin",
      "--timeout",
      "5",
      "--retries",
      "0",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  if probe.returncode != 0:
    pytest.skip(f"package index unreachable: {probe.stderr.strip().splitlines()[-1:]}")


REGISTRY_CASES = {
  "cuda12": {"jax-cuda12-plugin": "0.12.0.1", "jax-cuda12-pjrt": "0.12.0.1"},
  "cuda13": {"jax-cuda13-plugin": "0.12.0.1", "jax-cuda13-pjrt": "0.12.0.1"},
  "tpu": {"libtpu": "0.0.50.1", "google-cloud-storage": "3.17.1"},
  # the planner's venv: both compilers, no test dependencies (torch stays out)
  "plan": {"libtpu": "0.0.50.1", "jax-cuda13-plugin": "0.12.0.1", "jax-cuda13-pjrt": "0.12.0.1"},
}


@pytest.fixture(scope="module")
def resolved(registry, tmp_path_factory):
  """Each accelerator's install (what make test installs: --tests) as pip's dry run without
  dependencies, all four at once (they wait on the index as much as on the CPU):
  accelerator -> (returncode, stderr, {name: version})."""
  procs = {}
  for accelerator in REGISTRY_CASES:
    tmp_path = tmp_path_factory.mktemp(accelerator)
    cmd = shlex.split(install_line(bootstrap(tmp_path, f"--accelerator={accelerator}", "--tests")))
    at = cmd.index("install") + 1
    report = tmp_path / "report.json"
    cmd[at:at] = ["--dry-run", "--ignore-installed", "--no-deps", "--report", str(report)]
    proc = subprocess.Popen(
      [sys.executable, *cmd[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    procs[accelerator] = (proc, report)
  results = {}
  for accelerator, (proc, report) in procs.items():
    _, stderr = proc.communicate(timeout=600)
    installed = {}
    if proc.returncode == 0:
      installed = {
        item["metadata"]["name"]: item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
      }
    results[accelerator] = (proc.returncode, stderr, installed)
  return results


@pytest.mark.parametrize("accelerator", sorted(REGISTRY_CASES))
def test_accelerator_install_resolves_against_the_registry(resolved, accelerator):
  """The bootstrap's own pip command as a dry run, without dependencies: every pin exists for
  this Python and platform (a full resolve would fetch ~3 GB of CUDA wheels on every CI run)."""
  returncode, stderr, installed = resolved[accelerator]
  assert returncode == 0, stderr[-3000:]
  assert installed["jax"] == installed["jaxlib"] == "0.12.0.1"
  for name, version in REGISTRY_CASES[accelerator].items():
    assert installed[name] == version
  assert ("torch" in installed) == (accelerator != "plan")


def test_training_warns_when_jax_misses_the_hosts_accelerator(tmp_path, monkeypatch):
  from sagan_jax import accelerator

  monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
  for name in accelerator.TPU_ENV_VARS:
    monkeypatch.delenv(name, raising=False)
  assert accelerator.warn_if_jax_misses_it("cpu", str(tmp_path)) == ""
  (tmp_path / "dev").mkdir()
  (tmp_path / "dev" / "accel0").touch()
  message = accelerator.warn_if_jax_misses_it("cpu", str(tmp_path))
  assert "JAX runs on the CPU, but this host has a TPU" in message
  assert message.endswith("ACCELERATOR=tpu make venv")
  assert accelerator.warn_if_jax_misses_it("tpu", str(tmp_path)) == ""
