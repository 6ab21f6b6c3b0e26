"""One train step over 8 simulated CPU devices equals the same step on 1 device."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from configs import fashion_mnist
    from sagan_jax import sharding, train
    assert jax.device_count() == 8, jax.devices()
    config = fashion_mnist.get_config("smoke")
    config.batch_size = 16
    config.d_steps_per_g_step = 2
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (2, 16, 32, 32, 1)).astype(np.float32),
             "label": rng.integers(0, 10, (2, 16)).astype(np.int32)}
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = sharding.create_mesh(devices)
      g, d = train.build_models(config)
      g_tx, d_tx = train.build_optimizers(config)
      state = jax.jit(lambda: train.init_state(config, g, d, g_tx, d_tx),
                      out_shardings=sharding.replicated(mesh))()
      step = train.make_train_step(config, g, d, g_tx, d_tx, mesh)
      for _ in range(2):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
      results.append((jax.device_get(state), jax.device_get(metrics),
                      len(state.g_params["block2"]["conv1"]["kernel"].sharding.device_set)))
    (s1, m1, n1), (s8, m8, n8) = results
    errs = jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-12)),
        (s1.g_params, s1.d_params, s1.g_batch_stats, s1.d_spectral, s1.ema_params),
        (s8.g_params, s8.d_params, s8.g_batch_stats, s8.d_spectral, s8.ema_params)))
    print(json.dumps({"max_rel_err": max(errs), "devices": [n1, n8],
                      "d_loss": [float(m1["d_loss"]), float(m8["d_loss"])],
                      "changed": float(np.max(np.abs(np.asarray(s1.d_params["linear"]["kernel"]))))}))
""")


@pytest.mark.xfail(strict=True, reason=(
    "known bug, open: after 2 steps the D loss agrees to 1e-7 between 1 and 8 devices but "
    "some parameter leaf differs (max rel. error ~1.9); strict, so a fix makes this fail"))
def test_eight_devices_equal_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == [1, 8]
  assert result["max_rel_err"] < 1e-4, result
  assert abs(result["d_loss"][0] - result["d_loss"][1]) < 1e-4 * max(1.0, abs(result["d_loss"][0]))
