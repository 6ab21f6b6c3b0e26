"""Two processes (JAX's distributed runtime over loopback, gloo CPU collectives, one CPU
device each) train like one process on the same global batch.

Each process supplies only its half of every global batch (rows [i·B/2, (i+1)·B/2))
through ``sharding.global_batch``; BN statistics and gradients are then reduced across
the processes. After 3 steps the parameters must equal a single-process run's.

The test process computes the initial state once (the usual init program) and hands it
to the three processes (two distributed, one single reference, run at once), which only
compile the train step. Before the first step the two processes meet at a barrier of the
coordination service: gloo gives a collective's first connection 30 s, less than the
compile skew between two processes on a loaded 2-core machine.

Both runs use SGD, not the configs' Adam, as tests/test_sharding.py does and for the
same reason: G's conv biases sit in front of batch norm, so their exact gradient is zero
and what reaches them is rounding noise whose sign depends on the reduction order. Adam
divides by the gradient's own magnitude and turns that noise into ±lr steps that differ
between process counts although nothing is wrong; SGD's update is proportional to the
gradient, so every leaf must agree.
"""

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import flax
import jax
import numpy as np
import optax

from configs import fashion_mnist
from sagan_jax import programs, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
PARTS = ("g_params", "d_params", "ema_params", "g_batch_stats")

# argv: role ('single', '0' or '1'), coordinator port, output directory.
SCRIPT = textwrap.dedent(
  """
    import json, sys
    import jax
    role, port, out = sys.argv[1], sys.argv[2], sys.argv[3]
    distributed = role != "single"
    if distributed:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")  # (the default in 0.10)
      jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                                 process_id=int(role), initialization_timeout=120)
    import flax, numpy as np, optax
    from jax._src import distributed as jax_distributed
    from configs import fashion_mnist
    from sagan_jax import programs, sharding
    from sagan_jax.step import make_train_step
    STEPS, PARTS = STEPS_AND_PARTS
    config = fashion_mnist.get_config("smoke")
    config.ema_start_step = 0  # the EMA moves from the first step (as in test_distributed._config)
    b = config.batch_size
    rng = np.random.default_rng(0)  # the same global batches in every process
    batches = [{"image": rng.uniform(-1, 1, (1, b, 32, 32, 1)).astype(np.float32),
                "label": rng.integers(0, 10, (1, b)).astype(np.int32)} for _ in range(STEPS)]
    rows = slice(jax.process_index() * b // 2, (jax.process_index() + 1) * b // 2) if distributed \\
        else slice(0, b)
    mesh = sharding.create_mesh()  # every device of every process
    g, d = programs.build_models(config)
    g_tx, d_tx = optax.sgd(0.01), optax.sgd(0.01)
    # The initial state the test process wrote, replicated on every device of every process.
    with open(f"{out}/init_state.msgpack", "rb") as f:
      host = flax.serialization.from_bytes(
          jax.eval_shape(lambda: programs.init_state(config, g, d, g_tx, d_tx,
                                                     programs.seed_key_data(config.seed))), f.read())
    state = jax.tree.map(lambda x: jax.make_array_from_callback(
        np.shape(x), sharding.replicated(mesh), lambda index: np.asarray(x)[index]), host)
    init = np.asarray(host.d_params["linear"]["kernel"])
    local = lambda i: {k: v[:, rows] for k, v in batches[i].items()}
    first = sharding.global_batch(local(0), mesh)
    key = sharding.replicate(programs.seed_key_data(config.seed), mesh)
    update = programs.resolve_kernels(config, mesh).parameter_update
    step = make_train_step(config, g, d, g_tx, d_tx, mesh, update).lower(state, first, key).compile()
    if distributed:
      # Gloo gives the first collective 30 s to find its peer: both processes must have
      # finished compiling (tens of seconds apart on a loaded machine) before the first step.
      jax_distributed.global_state.client.wait_at_barrier("compiled", 300_000)
    losses = []
    for i in range(STEPS):
      batch = first if i == 0 else sharding.global_batch(local(i), mesh)
      state, metrics = step(state, batch, key)
      losses.append([float(metrics["d_loss"]), float(metrics["g_loss"])])
    arrays = {}
    for part in PARTS:
      for k, v in flax.traverse_util.flatten_dict(jax.device_get(getattr(state, part)), sep="/").items():
        arrays[part + "/" + k] = np.asarray(v)
    np.savez(f"{out}/{role}.npz", **arrays)
    print(json.dumps({
        "process_count": jax.process_count(), "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "param_devices": len(state.g_params["linear"]["kernel"].sharding.device_set),
        "batch_shape": list(first["image"].shape),
        "local_batch_shape": list(first["image"].addressable_shards[0].data.shape),
        "step": int(state.step), "losses": losses,
        "moved": float(np.max(np.abs(jax.device_get(state.d_params["linear"]["kernel"]) - init)))}))
    if distributed:
      jax.distributed.shutdown()
"""
).replace("STEPS_AND_PARTS", f"{STEPS}, {PARTS!r}")


def _config():
  config = fashion_mnist.get_config("smoke")
  config.ema_start_step = 0
  return config


def _write_initial_state(path):
  """The SGD runs' initial state, computed once here rather than compiled in every process.

  Parameters do not depend on the optimizer, so this is the smoke config's usual init
  (the very program train_and_evaluate and other tests compile, shared through the
  session's persistent cache) with SGD's (empty) optimizer states put in.
  """
  config = _config()
  g, d = programs.build_models(config)
  mesh = sharding.create_mesh(jax.devices()[:1])
  state = jax.jit(
    functools.partial(programs.init_state, config, g, d, *programs.build_optimizers(config)),
    out_shardings=sharding.replicated(mesh),
  )(programs.seed_key_data(config.seed))
  sgd = optax.sgd(0.01)
  state = state.replace(g_opt_state=sgd.init(state.g_params), d_opt_state=sgd.init(state.d_params))
  with open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(state)))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_all(roles, port, out, timeout):
  """Starts every role at once; returns {role: (returncode, stdout, stderr)}; kills all on exit."""
  # One device per process (XLA_FLAGS cleared); the -O0 compile of conftest is inherited.
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  procs, logs = {}, {}
  try:
    for role in roles:
      logs[role] = (
        open(os.path.join(out, f"{role}.out"), "w+"),
        open(os.path.join(out, f"{role}.err"), "w+"),
      )
      procs[role] = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, role, str(port), out],
        cwd=ROOT,
        env=env,
        stdout=logs[role][0],
        stderr=logs[role][1],
      )
    deadline = time.monotonic() + timeout
    # Until all are done, one fails (its peer would wait on it until its own timeouts) or
    # time is up; whatever still runs then is killed below and its stderr reported.
    while time.monotonic() < deadline:
      codes = [proc.poll() for proc in procs.values()]
      if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
        break
      time.sleep(0.5)
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  results = {}
  for role, (stdout, stderr) in logs.items():
    stdout.seek(0), stderr.seek(0)
    results[role] = (procs[role].returncode, stdout.read(), stderr.read())
    stdout.close(), stderr.close()
  return results


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  # relative to the leaf's scale, with a floor for leaves that stay ~0 (those biases)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-3))


def test_two_processes_train_like_one(tmp_path):
  out = str(tmp_path)
  _write_initial_state(os.path.join(out, "init_state.msgpack"))
  results = _run_all(("0", "1", "single"), _free_port(), out, timeout=300)
  for role, (code, _, stderr) in results.items():
    assert code == 0, f"process {role} exited with {code}:\n{stderr[-3000:]}"
  r = {role: json.loads(stdout.strip().splitlines()[-1]) for role, (_, stdout, _) in results.items()}
  b = _config().batch_size
  for role in ("0", "1"):
    assert r[role]["process_count"] == 2 and r[role]["devices"] == 2, r[role]
    assert r[role]["local_devices"] == 1 and r[role]["param_devices"] == 2, r[role]
    assert r[role]["batch_shape"] == [1, b, 32, 32, 1], r[role]
    assert r[role]["local_batch_shape"] == [1, b // 2, 32, 32, 1], r[role]  # each supplied half
  assert r["single"]["devices"] == 1 and r["single"]["local_batch_shape"] == [1, b, 32, 32, 1]
  assert all(r[role]["step"] == STEPS for role in r), r
  assert r["single"]["moved"] > 1e-3, r  # the steps did change the parameters

  single, p0, p1 = (np.load(os.path.join(out, f"{role}.npz")) for role in ("single", "0", "1"))
  assert sorted(single.files) == sorted(p0.files) == sorted(p1.files)
  assert len(single.files) > 100 and {k.split("/")[0] for k in single.files} == set(PARTS)
  errs = {k: _rel_err(p0[k], single[k]) for k in single.files}
  worst = max(errs, key=errs.get)
  assert errs[worst] < 1e-4, (worst, errs[worst])
  # The processes hold replicas of one result.
  replica_errs = {k: _rel_err(p1[k], p0[k]) for k in single.files}
  assert max(replica_errs.values()) < 1e-6, max(replica_errs.items(), key=lambda kv: kv[1])
  for (d0, g0), (d1, g1) in zip(r["single"]["losses"], r["0"]["losses"], strict=True):
    assert abs(d0 - d1) < 1e-4 * max(1.0, abs(d0)) and abs(g0 - g1) < 1e-4 * max(1.0, abs(g0)), r
