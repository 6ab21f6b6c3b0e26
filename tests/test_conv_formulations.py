"""experiments/conv_formulations_benchmark.py: the formulations it times compute XLA's conv."""
import os
import sys

import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
import conv_formulations_benchmark as bench  # noqa: E402


@pytest.mark.parametrize("name", sorted(bench.FORMULATIONS))
def test_formulation_equals_float64_conv_with_gradients(name):
  bench.check_against_float64(bench.FORMULATIONS[name])


def test_the_check_catches_a_wrong_formulation():
  flipped_kernel = lambda x, kernel: bench.native(x, jnp.flip(kernel, 0))
  with pytest.raises(AssertionError, match="value"):
    bench.check_against_float64(flipped_kernel)


def test_benchmark_prints_every_formulation(capsys):
  bench.main(["--shapes", "2,4,3", "--repeats", "1"])
  out = capsys.readouterr().out
  assert "equal XLA's float64 conv" in out
  for name in ("im2col", "taps", "winograd"):
    assert f"  {name} " in out
  assert out.count("speed vs native") == 3
