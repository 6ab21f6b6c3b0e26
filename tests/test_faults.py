"""The faults a new user hits (issue 15, items 2-8 and the traceback class): each ends in one
clear line (`error:` and exit code 2 for a mistake), refuses before anything is written, or
is survived; nothing is lost and nothing hangs."""

import errno
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types

import numpy as np
import pytest
from PIL import Image

from sagan_jax import cli, train
from sagan_jax import config as config_lib
from sagan_jax import run as run_lib
from sagan_jax import workdir as workdir_lib
from sagan_jax.data import folder, pipeline
from sagan_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def run_tool(args, timeout=120, **kwargs):
  """python -m <args> from the repository root: (exit code, stderr)."""
  done = subprocess.run(
    [PYTHON, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
  )
  return done.returncode, done.stderr


def one_error_line(stderr: str) -> str:
  """The single `error:` line of a failed command; no traceback."""
  assert "Traceback" not in stderr, stderr
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, stderr
  return errors[0]


def exits_with_one_line(fn, capsys, *args, code=2, **kwargs) -> str:
  """cli.run(fn, ...) in-process: the exit code and the one line it printed."""
  try:
    cli.run(fn, *args, **kwargs)
  except SystemExit as e:
    assert e.code == code, (e.code, capsys.readouterr().err)
  except KeyboardInterrupt:
    pytest.fail("KeyboardInterrupt escaped cli.run")
  else:
    pytest.fail("no exit")
  lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert len(lines) == 1, lines
  return lines[0]


def files_under(path) -> list:
  return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


def smoke(fake_fmnist_dir, **fields):
  from configs import fashion_mnist

  config = fashion_mnist.get_config("smoke")
  config.dataset.data_dir = fake_fmnist_dir
  for name, value in fields.items():
    target = config
    *parents, leaf = name.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, fake_fmnist_dir):
  """A smoke run trained for 4 steps (checkpoints 2 and 4), copied by each test that changes it."""
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  train.train_and_evaluate(smoke(fake_fmnist_dir), workdir)
  return workdir


def copy_run(trained_run, tmp_path) -> str:
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run, workdir)
  return workdir


def damage(workdir, step):
  """Truncates every data file of a checkpoint (its commit markers stay)."""
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step))):
    for name in files:
      if name not in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(0)


# Tracebacks: every place a user's flag, file or signal enters ends in one line.

BAD_COMMAND_LINES = {
  "unknown field": (
    ["sagan_jax.main", "--config=configs/fashion_mnist.py:smoke", "--config.model.chh=4", "--workdir=W"],
    "--config.model.chh: the config has no field 'model.chh' (did you mean --config.model.ch?)",
  ),
  "unknown section": (
    ["sagan_jax.main", "--config=configs/fashion_mnist.py", "--config.modell.ch=4", "--workdir=W"],
    "no field 'modell' (did you mean --config.model.ch?)",
  ),
  "variant typo": (
    ["sagan_jax.main", "--config=configs/fashion_mnist.py:smok", "--workdir=W"],
    "unknown config variant 'smok'; use 'smoke' or none",
  ),
  "no such config file": (
    ["sagan_jax.main", "--config=configs/fashion_mnst.py", "--workdir=W"],
    "--config=configs/fashion_mnst.py: the config file does not load",
  ),
  "not a config file": (
    ["sagan_jax.main", "--config=README.md", "--workdir=W"],
    "--config=README.md: the config file does not load",
  ),
  "value of the wrong type": (
    ["sagan_jax.main", "--config=configs/fashion_mnist.py", "--config.model.ch=four", "--workdir=W"],
    "--config.model.ch=four: invalid literal for int()",
  ),
  "unknown flag": (
    ["sagan_jax.main", "--config=configs/fashion_mnist.py", "--workdri=W"],
    "Unknown command line flag 'workdri'",
  ),
  "missing flag": (["sagan_jax.main", "--config=configs/fashion_mnist.py"], "--workdir is required"),
  "positional argument": (
    ["sagan_jax.main", "--config=configs/fashion_mnist.py", "--workdir=W", "smoke"],
    "unexpected arguments: smoke",
  ),
  "evaluate: variant typo": (
    ["sagan_jax.evaluate", "--workdir=W", "--config=configs/cifar10.py:smoek"],
    "unknown config variant 'smoek'",
  ),
  "evaluate: a run's config.json": (
    ["sagan_jax.evaluate", "--workdir=W", "--config=experiments/results/metric_reference_points.json"],
    "a config file is Python (configs/<name>.py), not a run's config.json",
  ),
  "evaluate: bad step": (
    ["sagan_jax.evaluate", "--workdir=W", "--step=last"],
    "--step=last: a checkpoint's step (a whole number) or 'best', got 'last'",
  ),
  "visualize: bad enum": (
    ["sagan_jax.visualize", "--workdir=W", "--network=gen"],
    "--network=gen: value should be one of",
  ),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMAND_LINES))
def test_a_bad_command_line_ends_in_one_error_line(case):
  args, expected = BAD_COMMAND_LINES[case]
  code, stderr = run_tool(args)
  assert code == 2 and expected in one_error_line(stderr), stderr


def test_bad_data_and_run_files_end_in_one_error_line(fake_fmnist_dir, tmp_path, capsys):
  """A dataset name with a hyphen, a truncated Fashion-MNIST .gz (named), an empty, corrupt or
  foreign config.json on resume: one line each, exit 2, before the workdir is created."""
  hyphen = smoke(fake_fmnist_dir, **{"dataset.name": "fashion-mnist"})
  line = exits_with_one_line(train.train_and_evaluate, capsys, hyphen, str(tmp_path / "a"))
  assert "dataset.name 'fashion-mnist'" in line and "did you mean 'fashion_mnist'" in line

  broken = str(tmp_path / "broken_fmnist")
  shutil.copytree(fake_fmnist_dir, broken)
  images = os.path.join(broken, "train-images-idx3-ubyte.gz")
  with open(images, "r+b") as f:
    f.truncate(os.path.getsize(images) // 2)
  line = exits_with_one_line(train.train_and_evaluate, capsys, smoke(broken), str(tmp_path / "b"))
  assert f"{images} is truncated" in line and "fetch_fashion_mnist" in line
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")

  workdir = tmp_path / "run"
  workdir.mkdir()
  for text in ("", '{"model": {"ch": 4', "[1, 2]", '{"model": 3}'):
    (workdir / "config.json").write_text(text)
    line = exits_with_one_line(
      run_lib.check_same_model, capsys, smoke(fake_fmnist_dir), str(workdir), resuming=True
    )
    assert "config.json is not readable as a run's config" in line and "delete it" in line
    line = exits_with_one_line(run_lib.load_config, capsys, str(workdir))
    assert "config.json" in line


def test_sigint_during_start_up_ends_in_one_line(fake_fmnist_dir, tmp_path, monkeypatch, capsys):
  """A real SIGINT while the training sets up (here: while it builds the mesh)."""
  from sagan_jax import sharding

  real = sharding.create_mesh

  def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # Python's handler raises KeyboardInterrupt here
    return real(*args, **kwargs)

  monkeypatch.setattr(sharding, "create_mesh", interrupted)
  line = exits_with_one_line(
    train.train_and_evaluate, capsys, smoke(fake_fmnist_dir), str(tmp_path / "run"), code=128 + signal.SIGINT
  )
  assert line.startswith("stopped by SIGINT outside the training loop")
  assert "rerun the same command" in line


def test_a_dropped_keyboard_interrupt_still_stops_the_set_up(
  fake_fmnist_dir, tmp_path, request, monkeypatch, capsys, compiled
):
  """CPython drops a KeyboardInterrupt raised inside a garbage-collection callback (JAX runs
  one): the SIGINT noted by the tools' handler stops the set-up at its next check."""
  from sagan_jax import sharding, signals

  signals.forget_interrupts()
  request.addfinalizer(signals.forget_interrupts)  # the noted SIGINT must not reach later tests
  real = sharding.create_mesh
  monkeypatch.setattr(sharding, "create_mesh", lambda: (signals.note_interrupt(signal.SIGINT), real())[1])
  line = exits_with_one_line(
    train.train_and_evaluate, capsys, smoke(fake_fmnist_dir), str(tmp_path / "run"), code=128 + signal.SIGINT
  )
  assert line.startswith("stopped by SIGINT outside the training loop")
  assert compiled() == [] and not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("tool", ["sagan_jax.main", "sagan_jax.visualize", "sagan_jax.report"])
def test_sigint_while_the_libraries_load_ends_in_one_line(tool, tmp_path, fake_fmnist_dir):
  """A KeyboardInterrupt inside the import of a native extension can abort the interpreter,
  and CPython drops one raised in JAX's gc callback: the tools hold SIGINT back while
  TensorFlow and JAX load (visualize imports JAX first thing, report orbax's path layer) and
  stop right after."""
  args = (
    ["--config=configs/fashion_mnist.py:smoke", f"--config.dataset.data_dir={fake_fmnist_dir}"]
    if tool == "sagan_jax.main"
    else []
  )
  child = subprocess.Popen(
    [PYTHON, "-m", tool, f"--workdir={tmp_path / 'run'}", *args],
    cwd=ROOT,
    stderr=subprocess.PIPE,
    text=True,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"),
  )
  try:
    lines = []
    if tool == "sagan_jax.main":
      for line in child.stderr:  # TensorFlow's first words: it is loading
        lines.append(line)
        if "absl::InitializeLog" in line or "oneDNN" in line or "tensorflow" in line.lower():
          break
    else:
      time.sleep(1.0)  # visualize / report are importing JAX
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    code = child.wait(timeout=120)
  finally:
    child.kill()
  stderr = "".join(lines) + rest
  assert code == 128 + signal.SIGINT, stderr
  assert "Traceback" not in stderr and "Fatal Python error" not in stderr
  assert "stopped by SIGINT outside the training loop" in stderr.splitlines()[-1]
  assert not os.path.exists(tmp_path / "run")


def test_a_second_ctrl_c_ends_any_phase():
  """With the training's stop handler installed (the first signal only sets a flag) and the
  main thread stuck, the second SIGINT ends the process at once."""
  script = textwrap.dedent("""
      import threading
      from sagan_jax import cli, signals
      cli.parse_flags(["prog"])
      with signals.StopSignals():
        print("ready", flush=True)
        threading.Event().wait()  # a phase that never reaches the loop's flag check
  """)
  child = subprocess.Popen(
    [PYTHON, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  try:
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert child.poll() is None  # the first only asks for a stop
    child.send_signal(signal.SIGINT)
    code = child.wait(timeout=20)
  finally:
    child.kill()
  assert code == 128 + signal.SIGINT
  assert "stopped at once by a second SIGINT" in child.stderr.read()


def test_disk_full_keeps_what_was_saved_and_says_what_to_free(tmp_path):
  """On a real full disk (a 1 MiB tmpfs in a user namespace): a checkpoint save fails with one
  line, its half-written save is deleted and the earlier checkpoint stays; a PNG is written
  whole or not at all; a resume deletes a killed run's half-written save before judging the
  workdir, instead of calling a full workdir unwritable."""
  if (
    not shutil.which("unshare")
    or subprocess.run(
      ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    ).returncode
  ):
    pytest.skip("needs unprivileged user namespaces (unshare) to mount a small tmpfs")
  mount = tmp_path / "disk"
  mount.mkdir()
  script = textwrap.dedent(f"""
      import json, os, numpy as np
      from sagan_jax import checkpointing, cli, figures, train
      from sagan_jax.errors import DiskFull
      run = "{mount}/run"
      out = {{}}
      def fill(path):  # writes until the disk is full; returns the errno that stopped it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
          while True:
            os.write(fd, b"x" * 4096)
        except OSError as e:
          return e.errno
        finally:
          os.close(fd)
      ckpt = checkpointing.Checkpointer(run, 3, owner=True)
      ckpt.save(1, {{"w": np.zeros(1000, np.float32)}}); ckpt.wait()
      try:
        noise = np.random.default_rng(0).random(600_000, np.float32)  # 2.4 MB, incompressible
        ckpt.save(2, {{"w": noise}}); ckpt.wait()
        out["save"] = "no error"
      except DiskFull as e:
        out["save"] = str(e)
      ckpt.close()
      out["steps"] = checkpointing.checkpoint_steps(run)
      out["unfinished"] = [p.name for p in checkpointing.unfinished_saves(run)]
      out["fill"] = fill(f"{{run}}/filler")
      image = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
      try:
        figures.save_png(image, f"{{run}}/samples/step_1.png")
      except OSError as e:
        out["png"] = e.errno
      samples = f"{{run}}/samples"
      out["samples"] = os.listdir(samples) if os.path.isdir(samples) else []
      os.remove(f"{{run}}/filler")
      os.makedirs(f"{{run}}/checkpoints/3.orbax-checkpoint-tmp")
      fill(f"{{run}}/checkpoints/3.orbax-checkpoint-tmp/blob")  # a killed save that filled the disk
      train.open_workdir(run).release()
      out["after_resume_check"] = [p.name for p in checkpointing.unfinished_saves(run)]
      print("RESULT" + json.dumps(out))
  """)
  done = subprocess.run(
    [
      "unshare",
      "--user",
      "--map-root-user",
      "--mount",
      "sh",
      "-c",
      f'mount -t tmpfs -o size=1m tmpfs {mount} && exec {PYTHON} -c "$0"',
      script,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
  assert result, done.stdout + done.stderr
  out = json.loads(result[0][len("RESULT") :])
  assert out["save"].startswith("no space left on the device of") and "step 2" in out["save"]
  assert "half-written save is deleted" in out["save"] and "steps [1] stay" in out["save"]
  assert "free space there" in out["save"]
  assert out["steps"] == [1] and out["unfinished"] == []
  assert out["fill"] == errno.ENOSPC and out["png"] == errno.ENOSPC
  assert out["samples"] == []  # no partial PNG
  assert out["after_resume_check"] == []


def test_disk_full_anywhere_ends_in_one_line(capsys):
  def write():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/samples/step_4.png")

  line = exits_with_one_line(write, capsys)
  assert line.startswith("error: no space left on the device writing /w/samples/step_4.png")
  assert "free space there" in line


def test_tools_on_a_damaged_newest_checkpoint_use_the_newest_readable(trained_run, tmp_path, caplog):
  """evaluate, visualize and report open runs through run.open_run."""
  from sagan_jax import run

  workdir = copy_run(trained_run, tmp_path)
  damage(workdir, 4)
  opened = run.open_run(workdir)
  assert opened.step == 2
  assert "checkpoint(s) [4]" in caplog.text and "using step 2, the newest readable" in caplog.text
  with pytest.raises(
    UserError,
    match=r"checkpoint\(s\) \[4\] .* unreadable .*pass --step with one "
    r"of \[2\]",
  ):
    run.open_run(workdir, step=4)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]  # readers move nothing


def test_a_damaged_checkpoint_is_one_line_not_hundreds_of_tracebacks(trained_run, tmp_path):
  """TensorStore's reads of a checkpoint whose array data is cut (its metadata intact) fail
  one by one, each with a traceback from a thread or an abandoned coroutine (thousands of lines
  before): a tool says once that it falls back, and nothing else."""
  workdir = copy_run(trained_run, tmp_path)
  data = glob.glob(os.path.join(workdir, "checkpoints", "4", "*", "ocdbt.process_0", "d", "*"))
  assert data
  for path in data:
    os.truncate(path, os.path.getsize(path) // 2)
  code, stderr = run_tool(["sagan_jax.visualize", f"--workdir={workdir}", "--network=generator"], timeout=300)
  assert code == 0, stderr[-3000:]
  lines = [
    line
    for line in stderr.splitlines()
    if line.strip() and not line.startswith(("I0000", "WARNING: All log"))
  ]
  assert "Traceback" not in stderr and len(lines) <= 5, (len(stderr.splitlines()), lines[:8])
  assert any("checkpoint(s) [4]" in line and "using step 2" in line for line in lines), lines
  cause = next(line for line in lines if "checkpoint(s) [4]" in line)
  assert "OUT_OF_RANGE" in cause and "bound method" not in cause, cause  # TensorStore's reason


@pytest.mark.parametrize("deleted", ["whole", "half"])
def test_a_reader_beside_a_rotating_training_opens_the_newest_step(
  trained_run, tmp_path, caplog, monkeypatch, deleted
):
  """A training saves step 6 and rotates step 4 away while a tool restores step 4: the tool lists
  the steps again and opens 6 (it used to call 4 unreadable and fall back to an older step, or
  fail when rotation had taken them all). Orbax deletes file by file, so the reader may also
  find 4 half deleted: its folder still there, some of its files gone."""
  from sagan_jax import checkpointing, run

  workdir = copy_run(trained_run, tmp_path)
  directory = os.path.join(workdir, "checkpoints")
  restore = checkpointing.Checkpointer.restore
  rotations = []

  def rotated_while_read(self, step, state_like):
    if step == 4 and not rotations:  # the save of 6 and the rotation of 4 land mid-restore
      rotations.append(step)
      shutil.copytree(os.path.join(directory, "4"), os.path.join(directory, "6"))
      if deleted == "whole":
        shutil.rmtree(os.path.join(directory, "4"))
      else:  # the array data gone, the metadata still there
        step_4 = os.path.join(directory, "4")
        for name in files_under(step_4):
          if "ocdbt" in name or name.startswith(os.path.join("default", "d", "")):
            os.remove(os.path.join(step_4, name))
        return restore(self, step, state_like)  # fails for real on what is left
      raise FileNotFoundError(os.path.join(directory, "4"))
    return restore(self, step, state_like)

  monkeypatch.setattr(checkpointing.Checkpointer, "restore", rotated_while_read)
  opened = run.open_run(workdir)
  assert opened.step == 6 and rotations == [4]
  assert "unreadable" not in caplog.text


def test_readers_beside_a_training_that_rotates_its_checkpoints_every_step(tmp_path, fake_fmnist_dir):
  """A real training saves every step and keeps one checkpoint; the readers' restore opens
  the run again and again meanwhile, always a step that exists (each listed step is rotated
  away within a step)."""
  from sagan_jax import run

  workdir = str(tmp_path / "run")
  training = subprocess.Popen(
    [
      PYTHON,
      "-m",
      "sagan_jax.main",
      "--config=configs/fashion_mnist.py:smoke",
      f"--workdir={workdir}",
      f"--config.dataset.data_dir={fake_fmnist_dir}",
      "--config.num_train_steps=400",
      "--config.checkpoint_every_steps=1",
      "--config.keep_checkpoints=1",
      "--config.sample_every_steps=1000",
      "--config.log_every_steps=1000",
    ],
    cwd=ROOT,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.monotonic() + 240
    checkpoints = os.path.join(workdir, "checkpoints")
    while not (os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints))):
      assert training.poll() is None and time.monotonic() < deadline, training.stderr.read()[-3000:]
      time.sleep(0.2)
    opened = []
    while training.poll() is None and len(opened) < 6:
      opened.append(run.open_run(workdir).step)
    assert len(opened) >= 3 and opened == sorted(opened), opened
  finally:
    training.terminate()
    training.wait(timeout=120)


# Item 2: a mismatch is not damage; a workdir whose checkpoints were all set aside is not reused.


def test_a_checkpoint_of_another_model_is_refused_and_touched_not(trained_run, tmp_path, fake_fmnist_dir):
  workdir = copy_run(trained_run, tmp_path)
  os.remove(os.path.join(workdir, "config.json"))  # an older or copied run
  before = [f for f in files_under(workdir) if f != workdir_lib.LOCK]
  with pytest.raises(
    UserError,
    match=r"checkpoint 4 .* holds another model .*array\(s\) of other "
    r"shapes \(.*kernel \(.*\) saved, \(.*\) now",
  ):
    train.train_and_evaluate(smoke(fake_fmnist_dir, **{"model.ch": 8, "num_train_steps": 6}), workdir)
  after = [f for f in files_under(workdir) if f != workdir_lib.LOCK]
  assert after == before  # nothing moved aside, no config.json written


def test_a_workdir_whose_checkpoints_were_all_set_aside_is_not_reused(trained_run, tmp_path, fake_fmnist_dir):
  workdir = copy_run(trained_run, tmp_path)
  damage(workdir, 2)
  damage(workdir, 4)
  config = smoke(fake_fmnist_dir, num_train_steps=6)
  with pytest.raises(UserError, match="none of the checkpoints .* is readable"):
    train.train_and_evaluate(config, workdir)
  kept = {
    name: open(os.path.join(workdir, name), "rb").read()
    for name in ["config.json"]
    + [os.path.join("samples", s) for s in os.listdir(os.path.join(workdir, "samples"))]
  }
  with pytest.raises(
    UserError,
    match="every checkpoint of .* set aside .* use a new --workdir, or delete .*unreadable_checkpoints",
  ):
    train.train_and_evaluate(config, workdir)
  assert not os.listdir(os.path.join(workdir, "checkpoints"))
  assert {name: open(os.path.join(workdir, name), "rb").read() for name in kept} == kept


def test_a_run_without_its_checkpoints_is_not_taken_over(trained_run, tmp_path, fake_fmnist_dir):
  """checkpoints/ gone (moved, deleted, a copy without it): another config is refused before
  anything is written; the same config starts over (a run stopped before its first save)."""
  workdir = copy_run(trained_run, tmp_path)
  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  run_files = lambda: {
    p: open(os.path.join(workdir, p), "rb").read() for p in files_under(workdir) if p != ".training.lock"
  }
  before = run_files()
  other = smoke(fake_fmnist_dir, seed=3)
  with pytest.raises(
    UserError, match=r"holds a run's files \(config.json, samples, .*no checkpoint to resume.*another config"
  ):
    train.train_and_evaluate(other, workdir)
  assert run_files() == before
  shutil.rmtree(os.path.join(workdir, "samples"))
  os.remove(os.path.join(workdir, "config.json"))
  with pytest.raises(UserError, match=r"holds a run's files \(events.out.tfevents"):
    train.train_and_evaluate(other, workdir)  # its logs alone are a run's too
  same = copy_run(trained_run, tmp_path / "again")
  shutil.rmtree(os.path.join(same, "checkpoints"))
  assert int(train.train_and_evaluate(smoke(fake_fmnist_dir), same).step) == 4


# Items 3 and 5: undecodable image folders.


def write_folder(root, classes=("ant", "bee", "cat"), per_class=3, undecodable=()):
  for c, name in enumerate(classes):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      path = os.path.join(root, name, f"img{i}.png")
      if name in undecodable:
        with open(path, "wb") as f:
          f.write(b"not a png at all")
      else:
        Image.fromarray(np.full((12, 12, 3), 40 * c + i, np.uint8)).save(path)
  return str(root)


def folder_config(fake_fmnist_dir, root, num_classes=3):
  return smoke(
    fake_fmnist_dir,
    **{
      "dataset.name": "folder",
      "dataset.data_dir": root,
      "model.num_classes": num_classes,
      "model.image_channels": 3,
      "batch_size": 4,
    },
  )


def within(seconds, fn):
  """fn()'s exception (or None), failing the test instead of hanging if it does not end."""
  outcome = []

  def target():
    try:
      fn()
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  assert outcome, f"still running after {seconds} s"
  return outcome[0]


def test_a_folder_of_undecodable_files_stops_at_once_naming_it(tmp_path, fake_fmnist_dir):
  root = write_folder(tmp_path / "bad", undecodable=("ant", "bee", "cat"))
  config = folder_config(fake_fmnist_dir, root)
  error = within(60, lambda: next(pipeline.create_train_iterator(config)))
  assert isinstance(error, UserError) and f"no file of image folder {root!r} decodes" in str(error)

  # Files that go bad after the start-up check: the stream stops instead of spinning.
  good = write_folder(tmp_path / "good")
  images = folder.list_image_folder(good)
  source = folder.folder_source(images, f"image folder {good!r}")
  write_folder(tmp_path / "good", undecodable=("ant", "bee", "cat"))
  config = folder_config(fake_fmnist_dir, good)
  batches = pipeline._log_skipped(
    pipeline.train_dataset(config, source).as_numpy_iterator(), source.num_examples, source.description
  )
  error = within(60, lambda: next(batches))
  assert isinstance(error, UserError) and "decodes as an image any more" in str(error)


def test_a_class_whose_files_all_fail_to_decode_is_named(tmp_path, fake_fmnist_dir):
  root = write_folder(tmp_path / "images", undecodable=("bee",))
  with pytest.raises(
    UserError,
    match=r"class folder\(s\) 'bee' \(label 1, 3 files: 0 of 3 tried decode\) .* never be "
    r"trained",
  ):
    pipeline.create_train_iterator(folder_config(fake_fmnist_dir, root))


def test_image_folders_read_regular_files_only_nested_ones_too_and_say_what_they_pass_over(tmp_path, caplog):
  """A FIFO named like an image would block the reader (and the first Ctrl-C with it); macOS
  resource forks would count as images; nested folders and looping links went unmentioned."""
  root = write_folder(tmp_path / "images")
  os.mkfifo(os.path.join(root, "ant", "stuck.png"))
  os.makedirs(os.path.join(root, "bee", "more", "deeper"))
  Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(os.path.join(root, "bee", "more", "deeper", "x.png"))
  os.symlink(os.path.join(root, "bee"), os.path.join(root, "bee", "more", "loop"))
  os.symlink(os.path.join(root, "gone.png"), os.path.join(root, "cat", "dangling.png"))
  for hidden in ("._img0.png", ".DS_Store"):
    with open(os.path.join(root, "cat", hidden), "wb") as f:
      f.write(b"\x00\x05\x16\x07 resource fork")
  os.makedirs(os.path.join(root, ".thumbnails"))  # a hidden folder is no class

  listed = within(30, lambda: caplog.records.append(folder.list_image_folder(root)))
  assert listed is None
  images = caplog.records.pop()
  names = [os.path.relpath(p, root) for p in images.paths]
  assert images.class_names == ["ant", "bee", "cat"]
  assert names == [
    *(f"ant/img{i}.png" for i in range(3)),
    *(f"bee/img{i}.png" for i in range(3)),
    "bee/more/deeper/x.png",
    *(f"cat/img{i}.png" for i in range(3)),
  ]
  assert images.labels.tolist() == [0] * 3 + [1] * 4 + [2] * 3
  warned = caplog.text
  assert "1 image names that are not regular files" in warned and "stuck.png" in warned
  assert "1 links back into a folder already read" in warned
  assert "1 links that lead nowhere" in warned and "dangling.png" in warned


def test_a_truncated_label_map_says_where_it_parts_from_the_folders(tmp_path):
  workdir = tmp_path / "run"
  folder.write_label_map(str(workdir), ["ant", "bee", "cat"])
  label_map = workdir / workdir_lib.LABEL_MAP
  label_map.write_bytes(label_map.read_bytes()[:9])  # "0\tant\n1\tb"
  with pytest.raises(UserError, match=r"line 2 reads '1\\tb', the folders give label 1 to 'bee'.*delete it"):
    folder.write_label_map(str(workdir), ["ant", "bee", "cat"])
  label_map.write_text("0\tant\n")
  with pytest.raises(UserError, match="it ends after 1 of the 3 classes"):
    folder.write_label_map(str(workdir), ["ant", "bee", "cat"])


def test_a_class_with_a_few_good_files_among_bad_ones_is_refused_naming_it(tmp_path, fake_fmnist_dir):
  root = write_folder(tmp_path / "images")
  for i in range(3, 33):
    with open(os.path.join(root, "bee", f"img{i}.png"), "wb") as f:
      f.write(b"not a png at all")
  with pytest.raises(
    UserError,
    match=r"too few files of class folder\(s\) 'bee' \(label 1, 33 files: 1 of 16 tried decode\)",
  ):
    pipeline.create_train_iterator(folder_config(fake_fmnist_dir, root))
  config = folder_config(fake_fmnist_dir, root)
  config.dataset.min_decodable_fraction = 0.05  # the user's call: train on what decodes
  next(pipeline.create_train_iterator(config))


# Item 4: an offline TFDS name.


def test_an_unprepared_tfds_dataset_offline_is_refused_at_once(tmp_path, monkeypatch, fake_fmnist_dir):
  import tensorflow_datasets as tfds

  def unreachable(address, *args, **kwargs):
    raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

  def no_download(*args, **kwargs):
    raise AssertionError("download_and_prepare called offline")

  monkeypatch.setattr(socket, "create_connection", unreachable)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
  data_dir = str(tmp_path / "tfds")
  config = smoke(fake_fmnist_dir, **{"dataset.name": "mnist", "dataset.data_dir": data_dir})
  start = time.time()
  with pytest.raises(
    UserError,
    match=f"TFDS mnist/.* is not prepared in {data_dir} and its "
    f"download host cannot be reached .*storage.googleapis.com",
  ):
    pipeline.create_train_iterator(config)
  assert time.time() - start < 30


# Item 6: gs:// workdirs go through the path layer.


class FakeBucket:
  """etils.epath's backend for gs:// URLs, serving them from a local folder (the bucket's
  stand-in); every other path keeps its own backend."""

  METHODS = (
    "open",
    "exists",
    "isdir",
    "listdir",
    "glob",
    "walk",
    "makedirs",
    "mkdir",
    "rmtree",
    "remove",
    "rename",
    "replace",
    "copy",
    "stat",
  )

  def __init__(self, root):
    from etils.epath import backend

    self.root, self.os = str(root), backend.os_backend
    for name in self.METHODS:
      setattr(self, name, self._wrap(name))

  def local(self, path) -> str:
    path = os.fspath(path)
    assert path.startswith("gs://"), path
    return os.path.join(self.root, path[len("gs://") :])

  def _wrap(self, name):
    def method(*args, **kwargs):
      args = [
        self.local(a) if isinstance(a, (str, os.PathLike)) and os.fspath(a).startswith("gs://") else a
        for a in args
      ]
      out = getattr(self.os, name)(*args, **kwargs)
      back = lambda p: "gs://" + os.path.relpath(p, self.root)
      if name == "glob":
        return [back(p) for p in out]
      if name == "walk":
        return ((back(d), dirs, files) for d, dirs, files in out)
      return out

    return method


def test_a_gs_workdir_writes_nothing_to_the_local_disk(tmp_path, monkeypatch, fake_fmnist_dir):
  """Training, its checkpoints, config.json and sample PNGs, and reading the run back, on a
  fake bucket: epath's gs:// backend and TensorStore's gcs kvstore mapped to a folder."""
  from clu import metric_writers
  from etils.epath import gpath
  from orbax.checkpoint._src.path import gcs_utils

  from sagan_jax import run

  bucket = FakeBucket(tmp_path / "bucket")
  original = gpath._GPath._backend
  monkeypatch.setattr(
    gpath._GPath,
    "_backend",
    property(lambda self: bucket if self._uri_scheme == "gs" else original.fget(self)),
  )
  monkeypatch.setattr(
    gcs_utils, "get_kvstore_for_gcs", lambda path: {"driver": "file", "path": bucket.local(path)}
  )
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  monkeypatch.setitem(sys.modules, "google.cloud.storage", types.ModuleType("google.cloud.storage"))
  logdirs = []  # TensorBoard files go through TF's own gs:// file system: not faked here
  monkeypatch.setattr(
    metric_writers,
    "create_default_writer",
    lambda logdir, **kw: logdirs.append(logdir) or metric_writers.LoggingWriter(),
  )
  local = tmp_path / "cwd"
  local.mkdir()
  monkeypatch.chdir(local)
  config = smoke(fake_fmnist_dir, num_train_steps=2)
  train.train_and_evaluate(config, "gs://fake-bucket/run")
  assert os.listdir(local) == []  # before: ./gs:/fake-bucket/run/…
  stored = files_under(tmp_path / "bucket" / "fake-bucket" / "run")
  assert "config.json" in stored and "samples/step_00000002.png" in stored
  assert any(p.startswith("checkpoints/2/") for p in stored)
  assert logdirs == ["gs://fake-bucket/run"]
  assert run.open_run("gs://fake-bucket/run").step == 2
  assert os.listdir(local) == []


# Item 7: one training per workdir.


def test_a_second_training_on_a_workdir_is_refused_at_once(tmp_path, fake_fmnist_dir, capsys, compiled):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = workdir_lib.WorkdirLock(workdir).acquire()  # the first training
  try:
    line = exits_with_one_line(train.train_and_evaluate, capsys, smoke(fake_fmnist_dir), workdir)
  finally:
    holder.release()
  assert line.startswith(f"error: another training is running in {workdir} (pid {os.getpid()}")
  assert files_under(workdir) == [] and compiled() == []  # the holder's release deletes its lock file


def test_the_lock_file_goes_with_its_holder_and_a_waiter_never_locks_a_deleted_one(tmp_path, monkeypatch):
  """release deletes the lock file: an opener of the old file that locks it after the release
  must see it gone and lock the new one, or two trainings would each hold 'the' lock."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  first = workdir_lib.WorkdirLock(workdir).acquire()
  lock_path = os.fspath(first.path)
  opened = os.open(lock_path, os.O_RDWR)  # a second training opened it before the release
  first.release()
  assert not os.path.exists(lock_path)
  import fcntl

  fcntl.flock(opened, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old, deleted file: locks fine
  real_open, handed = os.open, []

  def stale_first(path, *args, **kwargs):
    if not handed and os.fspath(path) == lock_path:
      handed.append(path)
      return opened
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(os, "open", stale_first)
  second = workdir_lib.WorkdirLock(workdir).acquire()  # handed the old file's descriptor first
  try:
    assert handed and os.path.exists(lock_path)  # it locked a file at the path, not the deleted one
    with pytest.raises(UserError, match="another training is running"):
      workdir_lib.WorkdirLock(workdir).acquire()
  finally:
    second.release()


def test_a_killed_training_leaves_no_stuck_lock(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  child = subprocess.Popen(
    [
      PYTHON,
      "-c",
      f"from sagan_jax import workdir; workdir.WorkdirLock({workdir!r})"
      f".acquire(); print('locked', flush=True); import time; time.sleep(600)",
    ],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match="another training is running"):
      workdir_lib.WorkdirLock(workdir).acquire()
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  workdir_lib.WorkdirLock(workdir).acquire().release()


# Item 8: the validator, and the data check before anything is written or compiled.

BAD_VALUES = [
  ("optimizer.g_lr", 0.0),
  ("optimizer.g_lr", -1e-4),
  ("optimizer.d_lr", float("nan")),
  ("optimizer.d_lr", float("inf")),
  ("optimizer.b1", -0.1),
  ("optimizer.b1", 1.0),
  ("optimizer.b2", 1.0),
  ("optimizer.b2", 1.5),
  ("optimizer.eps", 0.0),
  ("optimizer.eps", -1e-8),
  ("ema_decay", 1.5),
  ("ema_start_step", -1),
  ("standing_stats_batches", 0),
  ("num_sample_columns", 0),
  ("model.num_classes", -1),
  ("model.z_dim", 0),
  ("optimizer.g_lr", "1e-4"),
  ("model.key_channel_ratio", 0),
  ("model.value_channel_ratio", -2),
  ("model.attention_query_chunk", 0),
  ("model.bn_eps", 0.0),
  ("model.image_channels", 4),
  ("model.image_channels", 3),  # Fashion-MNIST is grayscale
  ("seed", -1),
  ("seed", 2**64),
]


@pytest.mark.parametrize("field,value", BAD_VALUES)
def test_the_validator_refuses_values_that_cannot_train(field, value, fake_fmnist_dir):
  config = smoke(fake_fmnist_dir)
  target = config
  *parents, leaf = field.split(".")
  for parent in parents:
    target = target[parent]
  with target.ignore_type():
    target[leaf] = value
  with pytest.raises(UserError, match=f"^{field} must"):
    config_lib.validate_config(config)


SHIPPED_CONFIGS = ["default", "fashion_mnist", "cifar10", "sagan128"]


def shipped_config(name, variant=""):
  import importlib

  return importlib.import_module(f"configs.{name}").get_config(variant)


def leaf_fields(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from leaf_fields(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def set_field(config, field, value):
  target = config
  *parents, leaf = field.split(".")
  for parent in parents:
    target = target[parent]
  with target.ignore_type():
    target[leaf] = value


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_field_of_every_shipped_config_has_a_rule(name):
  """The validator's table covers the configs: a field added without a rule fails here."""
  for variant in ("", "smoke"):
    fields = set(leaf_fields(shipped_config(name, variant).to_dict()))
    unruled = [
      f for f in fields if f not in config_lib.RULES and not f.startswith(config_lib.STRUCTURED_FIELDS)
    ]
    assert not unruled, f"fields without a rule in config.RULES: {unruled}"
    assert set(config_lib.RULES) <= fields, set(config_lib.RULES) - fields


# Values outside each structured field's form, beside the table's own bad values.
STRUCTURED_BAD_VALUES = [
  ("augment", ("nope",), "augment"),
  ("augment", "translation", "augment"),
  ("model.attention_resolutions", (999,), "attention side(s) [999]"),
  ("model.g_attention_resolutions", ("32",), "model.g_attention_resolutions"),
  ("model.kernels.platform", "tpu_v9", "model.kernels"),
  ("eval.metrics", ("fid", "nope"), "metrics ['nope']"),
  ("evals.periodic.every_steps", -1, "evals.periodic.every_steps must"),
  ("evals.periodic.num_samples", 0, "evals.periodic.num_samples must"),
  ("evals.periodic.metrics", ("nope",), "metrics ['nope']"),
  ("best_metric", "no_such_number", "best_metric 'no_such_number' is not a number the periodic evaluations"),
]


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_field_out_of_range_ends_in_one_line_before_anything_is_written(name, tmp_path, capsys):
  """Each field of config.RULES at each of its rule's bad values (and the structured fields at
  theirs), through the training's entry point: exit 2, one line naming the field, no workdir."""
  cases = [
    (field, bad, f"{field} must") for field, rule in config_lib.RULES.items() for bad in rule.bad_values()
  ]
  workdir = tmp_path / "run"
  for field, bad, expected in cases + STRUCTURED_BAD_VALUES:
    config = shipped_config(name)
    set_field(config, field, bad)
    line = exits_with_one_line(train.train_and_evaluate, capsys, config, str(workdir))
    assert line.startswith("error: ") and expected in line, (field, bad, line)
    assert not workdir.exists(), (field, bad)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "sagan128"])
@pytest.mark.parametrize("variant", ["", "smoke"])
def test_the_validator_accepts_every_shipped_config(name, variant):
  import importlib

  config_lib.validate_config(importlib.import_module(f"configs.{name}").get_config(variant))


def test_a_label_mismatch_is_refused_before_any_file_or_compile(tmp_path, fake_fmnist_dir, compiled):
  with pytest.raises(UserError, match="has labels in \\[0, 9\\] but model.num_classes is 5"):
    train.train_and_evaluate(smoke(fake_fmnist_dir, **{"model.num_classes": 5}), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")  # no config.json, event file or checkpoint folder
  assert compiled() == []


def test_fetch_fashion_mnist_offline_ends_in_one_line(tmp_path, monkeypatch, capsys):
  from sagan_jax import fetch_fashion_mnist

  def unreachable(address, *args, **kwargs):
    raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

  monkeypatch.setattr(socket, "create_connection", unreachable)
  start = time.time()
  line = exits_with_one_line(fetch_fashion_mnist.fetch, capsys, str(tmp_path / "fm"))
  assert line.startswith("error: cannot reach fashion-mnist.s3-website")
  assert "dataset-fashion-mnist" in line and time.time() - start < 30


# Item 6 and the traceback class in the evaluator and the report.


def fake_bucket(tmp_path, monkeypatch) -> "FakeBucket":
  """epath's gs:// backend on tmp_path/bucket (orbax is not needed: no checkpoint is read)."""
  from etils.epath import gpath

  bucket = FakeBucket(tmp_path / "bucket")
  original = gpath._GPath._backend
  monkeypatch.setattr(
    gpath._GPath,
    "_backend",
    property(lambda self: bucket if self._uri_scheme == "gs" else original.fget(self)),
  )
  return bucket


def test_metrics_and_the_report_of_a_gs_workdir_go_to_the_bucket(trained_run, tmp_path, monkeypatch):
  """Evaluator.evaluate appends to gs://…/metrics.jsonl (the whole object written anew) and
  the report reads the run's files and writes report.html there; nothing is written locally.
  The event files are globbed through TensorFlow's gfile (mapped to the bucket's folder)."""
  import jax.numpy as jnp
  import tensorflow as tf

  from sagan_jax import report, sharding
  from sagan_jax.evaluation import evaluator, spaces

  bucket = fake_bucket(tmp_path, monkeypatch)
  shutil.copytree(trained_run, bucket.local("gs://fake-bucket/run"))
  globbed = []
  monkeypatch.setattr(
    tf.io.gfile,
    "glob",
    lambda pattern: globbed.append(pattern) or sorted(__import__("glob").glob(bucket.local(pattern))),
  )
  # A tiny feature space instead of the Fashion-MNIST classifier (trained once, minutes).
  features = lambda v, x: (x.reshape(x.shape[0], -1)[:, ::97] * v, x.reshape(x.shape[0], -1)[:, :10])
  monkeypatch.setattr(
    spaces,
    "fmnist_space",
    lambda config: spaces.FeatureSpace("fmnist_classifier", "test-space", features, jnp.float32(1.0), {}),
  )
  config = run_lib.load_config(trained_run)
  config.evals.periodic.num_samples, config.eval.batch_size = 20, 10
  config.eval.cache_dir = str(tmp_path / "cache")  # the reference cache is local by design
  sample = lambda state, z, y: jnp.tanh(jnp.resize(z, (z.shape[0], 32 * 32)).reshape(-1, 32, 32, 1))
  local = tmp_path / "cwd"
  local.mkdir()
  monkeypatch.chdir(local)
  scorer = evaluator.Evaluator(config, sharding.create_mesh(), sample, "gs://fake-bucket/run")
  for step in (2, 4):
    scorer.evaluate(None, step, 20)
  stored = bucket.local("gs://fake-bucket/run/metrics.jsonl")
  with open(stored) as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4]
  path = report.write_report("gs://fake-bucket/run", figures=False)
  assert path == "gs://fake-bucket/run/report.html"
  with open(bucket.local(path), encoding="utf-8") as f:
    page = f.read()
  data = json.loads(page.split('id="report-data">', 1)[1].split("</script>", 1)[0])  # page.js draws it
  assert len(data["evaluations"]["rows"]) == 2 and "data:image/png;base64," in page
  assert "d_loss" in page  # the curves of the event files
  assert globbed == ["gs://fake-bucket/run/events.out.tfevents.*"]
  assert os.listdir(local) == []
  assert not [p for p in files_under(bucket.root) if ".tmp" in p]


def test_a_full_disk_while_recording_an_evaluation_keeps_metrics_jsonl(tmp_path, monkeypatch, capsys):
  """The line is written to a file beside metrics.jsonl and renamed over: a full disk half-way
  leaves the old file whole, no temporary file, and one line saying what to free."""
  path = workdir_lib.path(tmp_path, workdir_lib.METRICS)
  workdir_lib.append_metrics_line(tmp_path, {"step": 2, "fid_fmnist": 1.5}, 2)
  before = path.read_text()
  written = type(path).write_text

  def half_then_full(self, text, *args, **kwargs):
    written(self, text[: len(text) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))

  monkeypatch.setattr(type(path), "write_text", half_then_full)
  line = exits_with_one_line(
    workdir_lib.append_metrics_line, capsys, tmp_path, {"step": 4, "fid_fmnist": 1.2}, 4
  )
  assert line.startswith(
    f"error: no space left on the device of {path} while recording the evaluation of step 4"
  )
  assert "metrics.jsonl is as it was before; free space there" in line
  assert path.read_text() == before
  assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_metrics_jsonl_with_half_a_line_gets_whole_ones_and_the_report_skips_it(tmp_path, caplog):
  """Half a line an older writer left when it was killed: the next line starts on its own and
  the report reads every whole evaluation, naming the line it skipped."""
  path = workdir_lib.path(tmp_path, workdir_lib.METRICS)
  path.write_text(json.dumps({"step": 2, "fid_fmnist": 1.5}) + '\n{"step": 4, "fid_f')
  workdir_lib.append_metrics_line(tmp_path, {"step": 6, "fid_fmnist": 1.1}, 6)
  assert [e["step"] for e in workdir_lib.read_metrics_lines(str(tmp_path))] == [2, 6]
  assert "metrics.jsonl: skipped line(s) [2]" in caplog.text


def test_a_config_file_returning_something_else_is_one_line(tmp_path):
  config_file = tmp_path / "mine.py"
  config_file.write_text("def get_config():\n  return 3\n")
  code, stderr = run_tool(["sagan_jax.main", f"--config={config_file}", f"--workdir={tmp_path / 'run'}"])
  assert code == 2 and "get_config() returned '3' (int), not an ml_collections.ConfigDict" in one_error_line(
    stderr
  )
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tool", ["sagan_jax.main", "sagan_jax.report", "sagan_jax.evaluate"])
def test_a_platform_this_host_lacks_is_one_line(tool, tmp_path):
  code, stderr = run_tool(
    [tool, f"--workdir={tmp_path / 'run'}"]
    + (["--config=configs/fashion_mnist.py:smoke"] if tool == "sagan_jax.main" else []),
    env={**os.environ, "JAX_PLATFORMS": "cuda"},
  )
  assert code == 2 and "JAX_PLATFORMS=cuda: JAX cannot start it on this machine" in one_error_line(stderr)
  assert not (tmp_path / "run").exists()


def test_a_run_folder_that_is_a_file_is_refused_before_anything_is_written(trained_run, tmp_path, capsys):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "checkpoints").write_text("not a folder")
  config = shipped_config("fashion_mnist", "smoke")
  line = exits_with_one_line(train.train_and_evaluate, capsys, config, str(workdir))
  assert line.startswith(f"error: {workdir / 'checkpoints'} is a file, where the run keeps its checkpoints")
  assert files_under(workdir) == ["checkpoints"]
  copy = copy_run(trained_run, tmp_path / "copy")
  shutil.rmtree(os.path.join(copy, "samples"))
  open(os.path.join(copy, "samples"), "w").close()
  from sagan_jax import run

  with pytest.raises(UserError, match="samples is a file, where the run keeps its sample grids"):
    run.open_run(copy)


def test_a_full_disk_at_the_probe_leaves_no_empty_file(tmp_path, monkeypatch):
  path_type = type(workdir_lib.path(tmp_path))
  written = path_type.write_text

  def empty_then_full(self, *args, **kwargs):
    written(self, "")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))

  monkeypatch.setattr(path_type, "write_text", empty_then_full)
  with pytest.raises(UserError, match="no space left on the device"):
    workdir_lib.check_writable(tmp_path, 0)
  assert os.listdir(tmp_path) == []


def test_evaluate_refuses_zero_samples():
  code, stderr = run_tool(["sagan_jax.evaluate", "--workdir=W", "--num_samples=0"])
  assert code == 2 and "--num_samples=0: score at least one sample" in one_error_line(stderr)


REPORT_BAD_COMMAND_LINES = {
  "unknown flag": (
    ["sagan_jax.report", "--workdir=W", "--no_such_flag"],
    "Unknown command line flag 'no_such_flag'",
  ),
  "missing workdir": (["sagan_jax.report"], "--workdir is required"),
  "bad number": (
    ["sagan_jax.report", "--workdir=W", "--columns=many"],
    "--columns=many: invalid literal for int()",
  ),
  "positional argument": (["sagan_jax.report", "--workdir=W", "now"], "unexpected arguments: now"),
}


@pytest.mark.parametrize("case", sorted(REPORT_BAD_COMMAND_LINES))
def test_a_bad_report_command_line_ends_in_one_error_line(case):
  args, expected = REPORT_BAD_COMMAND_LINES[case]
  code, stderr = run_tool(args)
  assert code == 2 and expected in one_error_line(stderr), stderr


def test_report_of_a_folder_without_a_run_is_one_error_line(tmp_path):
  code, stderr = run_tool(["sagan_jax.report", f"--workdir={tmp_path}", "--figures=false"])
  assert code == 2 and "holds no training run (no config.json)" in one_error_line(stderr), stderr
  assert os.listdir(tmp_path) == []
