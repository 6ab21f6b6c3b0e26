"""One train step over 8 simulated CPU devices equals the same step on 1 device.

The step runs under SGD, not the configs' Adam, on purpose: G's conv biases sit in
front of batch norm, so their gradient is zero in exact arithmetic and what reaches
them is rounding noise whose sign depends on the reduction order. Adam divides by the
gradient's own magnitude and turns that noise into ±lr steps that differ between
device counts although nothing is wrong (those biases are inert: BN removes them).
SGD's update is proportional to the gradient, so every leaf must agree.

At 1:1: the program of the earlier D updates of n:1 runs the same D update function
(tests/test_recompile.py checks it against the 1:1 program's on one device), and compiling
both for two meshes doubled this test's time.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json
    import flax, jax, numpy as np, optax
    from configs import fashion_mnist
    from sagan_jax import programs, sharding
    from sagan_jax.step import make_train_step
    assert jax.device_count() == 8, jax.devices()
    config = fashion_mnist.get_config("smoke")
    config.batch_size = 16
    config.ema_start_step = 0
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (1, 16, 32, 32, 1)).astype(np.float32),
             "label": rng.integers(0, 10, (1, 16)).astype(np.int32)}

    mesh1, mesh8 = sharding.create_mesh(jax.devices()[:1]), sharding.create_mesh(jax.devices())

    def run(mesh):
      g, d = programs.build_models(config)
      g_tx, d_tx = optax.sgd(0.01), optax.sgd(0.01)
      key = sharding.replicate(programs.seed_key_data(config.seed), mesh)
      state = jax.jit(lambda k: programs.init_state(config, g, d, g_tx, d_tx, k),
                      out_shardings=sharding.replicated(mesh))(key)
      kernel0 = np.asarray(state.d_params["linear"]["kernel"])
      update = programs.resolve_kernels(config, mesh).parameter_update  # what training runs
      step = make_train_step(config, g, d, g_tx, d_tx, mesh, update)
      step = step.lower(state, sharding.global_batch(batch, mesh), key).compile()
      hlo = step.as_text()
      collectives = {op: hlo.count(f" {op}(") + hlo.count(f" {op}-start(")
                     for op in ("all-reduce", "all-to-all", "all-gather", "collective-permute")}
      for _ in range(2):
        state, metrics = step(state, sharding.global_batch(batch, mesh), key)
      n = len(state.g_params["block2"]["conv1"]["kernel"].sharding.device_set)
      return jax.device_get(state), jax.device_get(metrics), n, kernel0, collectives

    (s1, m1, n1, s0_kernel, _), (s8, m8, n8, _, collectives) = run(mesh1), run(mesh8)
    errs = {}
    for part in ("g_params", "d_params", "g_batch_stats", "g_spectral", "d_spectral", "ema_params"):
      f1 = flax.traverse_util.flatten_dict(getattr(s1, part), sep="/")
      f8 = flax.traverse_util.flatten_dict(getattr(s8, part), sep="/")
      for k in f1:
        a, b = np.asarray(f1[k], np.float64), np.asarray(f8[k], np.float64)
        # relative to the leaf's scale, with a floor for leaves that stay ~0 (those biases)
        errs[part + "/" + k] = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-3))
    worst = max(errs, key=errs.get)
    moved = float(np.max(np.abs(s1.d_params["linear"]["kernel"] - s0_kernel)))
    print(json.dumps({
        "devices": [n1, n8], "leaves": len(errs), "worst_leaf": worst, "max_rel_err": errs[worst],
        "metrics": {k: [float(m1[k]), float(m8[k])] for k in ("d_loss", "g_loss", "d_real", "d_fake")},
        "moved": moved, "collectives": collectives}))
""")


def test_eight_devices_equal_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=ROOT)
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["devices"] == [1, 8], r
  assert r["leaves"] > 100, r
  assert r["moved"] > 1e-3, r  # the step did change the parameters
  assert r["max_rel_err"] < 1e-4, r
  # Data parallelism sums gradients and BN statistics and moves no batch between devices
  # (D's real+fake pass is concatenated shard by shard).
  c = r["collectives"]
  assert c["all-reduce"] > 0 and c["all-to-all"] == c["all-gather"] == c["collective-permute"] == 0, c
  for name, (one, eight) in r["metrics"].items():
    assert abs(one - eight) < 1e-4 * max(1.0, abs(one)), (name, one, eight)


def test_concat_by_shard_keeps_every_shards_rows_and_splits_back():
  import numpy as np

  from sagan_jax.step import concat_by_shard, split_by_shard

  a = np.arange(8 * 3).reshape(8, 3)
  b = -np.arange(8 * 3).reshape(8, 3) - 100
  both = np.asarray(concat_by_shard(a, b, 4))
  # shard i of the 16 rows (4 rows each) is a's rows 2i, 2i+1 then b's: a device's own rows
  for i in range(4):
    np.testing.assert_array_equal(
      both[4 * i : 4 * i + 4], np.concatenate([a[2 * i : 2 * i + 2], b[2 * i : 2 * i + 2]])
    )
  back_a, back_b = split_by_shard(both, 4)
  np.testing.assert_array_equal(back_a, a)
  np.testing.assert_array_equal(back_b, b)
  np.testing.assert_array_equal(np.asarray(concat_by_shard(a, b, 1)), np.concatenate([a, b]))
