"""config.model.kernels: 'auto' resolved once for the target platform and CPU, named choices
kept, bad values refused; the resolved choices reach every layer and the programs' cache key."""

import jax
import pytest

from sagan_jax import kernels as kernels_lib
from sagan_jax.models import kernels as model_kernels


@pytest.mark.parametrize(
  "machine, flags, expected",
  [
    ("x86_64", "fpu sse2 avx2 fma", ("x86_64", False)),
    ("x86_64", "fpu sse2 avx2 avx512f avx512dq avx512_bf16", ("x86_64", True)),
    ("x86_64", "fpu sse2 avx2 avx512_fp16_like_but_not_f", ("x86_64", False)),  # only starts so
  ],
)
def test_cpu_kind_is_read_from_cpuinfo(tmp_path, monkeypatch, machine, flags, expected):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(
    f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
  )
  monkeypatch.setattr(kernels_lib.platform_module, "machine", lambda: machine)
  assert kernels_lib.host_cpu.__wrapped__(str(cpuinfo)) == expected
  assert kernels_lib.host_cpu.__wrapped__(str(tmp_path / "missing")) == ("x86_64", None)


AUTO = {field: "auto" for field in kernels_lib.FIELDS}


@pytest.mark.parametrize(
  "platform, cpu, expected",
  [
    ("cpu", ("x86_64", True), ("taps_1x1", "low_resolution", "hand_written", "per_channel", "flat")),
    ("cpu", ("x86_64", False), ("taps", "low_resolution", "hand_written", "per_channel", "flat")),
    ("cpu", ("aarch64", None), ("taps_1x1", "low_resolution", "hand_written", "per_channel", "flat")),
    ("cuda", ("x86_64", False), ("xla", "composed", "hand_written", "dot", "per_array")),
    ("tpu", ("x86_64", True), ("xla", "composed", "hand_written", "dot", "per_array")),
  ],
)
def test_auto_resolves_per_platform_and_cpu(platform, cpu, expected):
  resolved = kernels_lib.resolve({**AUTO, "platform": platform}, jax.devices(), cpu=cpu)
  assert resolved.platform == platform and resolved.num_devices == len(jax.devices())
  assert tuple(resolved.choices().values()) == expected


def test_auto_platform_is_the_devices_and_named_choices_stay():
  resolved = kernels_lib.resolve(
    {**AUTO, "resampling_conv": "composed", "attention_query_sums": "dot"},
    jax.devices(),
    cpu=("x86_64", True),
  )
  assert resolved.platform == "cpu"
  assert resolved.resampling_conv == "composed" and resolved.attention_query_sums == "dot"
  assert resolved.conv_kernel_grad == "taps_1x1"  # still 'auto'


def test_another_hosts_cpu_is_never_read_for_an_accelerator(monkeypatch):
  """A TPU or GPU target's choices do not depend on the host that traces them."""
  monkeypatch.setattr(kernels_lib, "host_cpu", lambda: pytest.fail("read the host's CPU"))
  kernels_lib.resolve({**AUTO, "platform": "tpu"}, jax.devices())


@pytest.mark.parametrize(
  "field, value, phrase",
  [
    ("conv_kernel_grad", "fast", "model.kernels.conv_kernel_grad 'fast' is not one of"),
    ("platform", "gpu", "model.kernels.platform 'gpu' is not one of"),
    ("turbo", "auto", "model.kernels has no field(s) ['turbo']"),
  ],
)
def test_bad_choices_are_named(field, value, phrase):
  assert phrase in kernels_lib.validate({**AUTO, field: value})
  assert kernels_lib.validate(AUTO) is None


def test_every_choice_field_has_auto_and_the_plain_form_first():
  assert set(kernels_lib.FIELDS) == {"platform", *model_kernels.CHOICES}
  plain = model_kernels.Kernels()
  for field, choices in model_kernels.CHOICES.items():
    assert getattr(plain, field) in choices
