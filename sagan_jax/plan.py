"""Plan a run for a chip you do not have: compile the config's real train step (and sampler)
for the target from this host, and say whether it fits and how fast it can be.

  python -m sagan_jax.plan --config=configs/sagan128.py --target=v5e-8 [--config.X=...]
      [--max_batch] [--suggest=auto|always|never] [--json_out=FILE]

Targets: sagan_jax.targets (v4-8, v5e-8, v5p-8, v6e-8, h100, h100-8, h200, h200-8, a100,
a100-8, cpu). The TPU and CUDA compilers come from `make plan-venv` (.venv-plan/bin/python):
libtpu and JAX's CUDA plugin, which need no TPU, GPU or driver to compile. Per chip it prints
the compiled program's memory (arguments, outputs, temporaries, code) against the chip's,
FLOPs and bytes per step, the compile time, and two bounds on the step time: FLOPs at the
chip's peak compute, bytes at its memory bandwidth; the slower bounds the step.
"""

from sagan_jax import signals, targets

if __name__ == "__main__":
  signals.hold_interrupts()
  targets.prepare_environment()  # before JAX starts

import json
import math
import re
import time

from absl import app, flags
from ml_collections import config_flags

from sagan_jax import cli

FLAGS = flags.FLAGS


def define_flags():
  """The tool's flags (defined when it runs, not when its functions are imported: the other
  tools define --config too)."""
  config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :variant).")
  flags.DEFINE_string("target", None, f"one of {', '.join(list(targets.TARGETS) + [targets.CPU])}")
  flags.DEFINE_bool("max_batch", False, "also search the largest global batch that fits (a compile a try)")
  flags.DEFINE_enum(
    "suggest",
    "auto",
    ["auto", "always", "never"],
    "plan the knobs that save memory (bf16, chunked or flash attention, pooled keys, half the batch): "
    "'auto' where the config does not fit",
  )
  flags.DEFINE_float(
    "gpu_memory_fraction", 0.75, "a GPU's memory a JAX process may use (XLA_PYTHON_CLIENT_MEM_FRACTION)"
  )
  flags.DEFINE_integer("cpu_devices", 0, "'cpu' target: plan over this many of the host's CPU devices")
  flags.DEFINE_string("json_out", "", "also write every plan as one JSON line to this file")
  flags.mark_flags_as_required(["config", "target"])


# The compiler's words where a TPU program does not fit, e.g. "HLO temporaries 18.34G exceed
# available HBM 15.75G" or "Used 18.9G of 15.75G hbm".
_DOES_NOT_FIT = re.compile(r"RESOURCE_EXHAUSTED|exceed(s|ed)? (the )?available|[Oo]ut of memory")


def _memory(analysis) -> dict:
  """Bytes per chip of one compiled program (donated outputs alias their arguments)."""
  a = analysis
  total = (
    a.argument_size_in_bytes
    + a.output_size_in_bytes
    - a.alias_size_in_bytes
    + a.temp_size_in_bytes
    + a.generated_code_size_in_bytes
  )
  return {
    "arguments": a.argument_size_in_bytes,
    "outputs": a.output_size_in_bytes,
    "aliased": a.alias_size_in_bytes,
    "temporaries": a.temp_size_in_bytes,
    "code": a.generated_code_size_in_bytes,
    "total": total,
  }


def _abstract_inputs(config, built, mesh):
  """(state, batch, key_data) as shapes with the step's shardings: nothing is computed."""
  import jax
  import numpy as np

  from sagan_jax import programs, sharding

  replicated = sharding.replicated(mesh)
  as_replicated = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
  key = as_replicated(jax.eval_shape(programs.seed_key_data, config.seed))
  state = jax.tree.map(as_replicated, built.init.eval_shape(key))
  m = config.model
  shape = (config.d_steps_per_g_step, config.batch_size, m.resolution, m.resolution, m.image_channels)
  batches = sharding.batch_sharding(mesh, 1)
  batch = {
    "image": jax.ShapeDtypeStruct(shape, np.float32, sharding=batches),
    "label": jax.ShapeDtypeStruct(shape[:2], np.int32, sharding=batches),
  }
  return state, batch, key


def _global_cost(config, kernels) -> dict:
  """XLA's cost analysis of the whole iteration as the target computes it (its resolved
  formulations), unpartitioned: global FLOPs and (unfused) bytes. Counted on one CPU device
  of this host, as compile-only devices have no cost analysis before compiling."""
  import jax

  from sagan_jax import programs, sharding

  as_on_target = config.copy_and_resolve_references()
  as_on_target.model.kernels = dict(platform=kernels.platform, **kernels.choices())
  mesh = sharding.create_mesh(jax.devices("cpu")[:1])
  built = programs.compiled_programs(as_on_target, mesh)
  state, batch, key = _abstract_inputs(as_on_target, built, mesh)
  return built.train_step.lower(state, batch, key).cost_analysis()


def _sampler_memory(config, built, mesh, state, key):
  """Memory per chip of sampling one evaluation batch (with standing statistics if used)."""
  import jax
  import numpy as np

  from sagan_jax import sharding

  sampler = built.sampler
  stats = None
  if sampler.sample_bn_stats == "standing":
    stats = jax.eval_shape(sampler.standing_stats, state, key)
    stats = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)), stats
    )
  batch = sharding.batch_sharding(mesh)
  n = config.eval.batch_size
  z = jax.ShapeDtypeStruct((n, config.model.z_dim), np.float32, sharding=batch)
  y = jax.ShapeDtypeStruct((n,), np.int32, sharding=batch)
  return _memory(sampler.generate.lower(state, stats, z, y).compile().memory_analysis())["total"]


def plan(config, target: targets.Target, devices, gpu_memory_fraction: float = 0.75) -> dict:
  """One config on one target: memory, FLOPs, bytes, compile time, step-time bounds."""
  from sagan_jax import config as config_lib
  from sagan_jax import programs, sharding

  mesh = sharding.create_mesh(devices)
  config_lib.validate_config(config, num_devices=len(devices))
  built = programs.compiled_programs(config, mesh)
  state, batch, key = _abstract_inputs(config, built, mesh)
  chips = len(devices)
  usable = target.usable_bytes(gpu_memory_fraction)
  row = {
    "target": target.name,
    "chips": chips,
    "batch_size": config.batch_size,
    "dtype": config.dtype,
    "d_steps_per_g_step": config.d_steps_per_g_step,
    "attention": _attention_form(config),
    "kernels": built.kernels.choices(),
    "usable_bytes": usable,
  }
  lowered = built.train_step.lower(state, batch, key)
  global_cost = _global_cost(config, built.kernels)
  model_flops = global_cost.get("flops", math.nan) / chips
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  (the compiler's refusal is the answer)
    if not _DOES_NOT_FIT.search(str(e)):
      raise
    row.update(fits=False, compile_s=time.perf_counter() - start, refusal=_refusal(str(e)))
    return row
  row["compile_s"] = time.perf_counter() - start
  memory = _memory(compiled.memory_analysis())
  cost = compiled.cost_analysis() if target.platform != "cuda" else None  # none from the GPU compiler
  # Per chip, after partitioning and fusion. The GPU compiler reports none: the unfused
  # program's count is recorded there, far above what a fused program moves.
  fused_bytes = (cost or {}).get("bytes accessed")
  bytes_per_chip = fused_bytes or global_cost.get("bytes accessed", math.nan) / chips
  row.update(memory=memory, fits=fits(memory, target, gpu_memory_fraction))
  row["sampler_bytes"] = _sampler_memory(config, built, mesh, state, key)
  row.update(flops_per_chip=model_flops, bytes_per_chip=bytes_per_chip, bytes_fused=bool(fused_bytes))
  if target.peak_f32_tflops:
    compute_s = model_flops / (target.peak_tflops(config.dtype) * 1e12)
    memory_s = bytes_per_chip / (target.memory_tbps * 1e12)
    row.update(compute_bound_s=compute_s, memory_bound_s=memory_s)
    if fused_bytes:  # both are lower bounds on the step: the slower one bounds it
      row["limited_by"] = "memory bandwidth" if memory_s > compute_s else "compute"
      row["images_per_s"] = config.batch_size / max(compute_s, memory_s)
    else:  # the unfused program's bytes are no bound (2-10× what fusion leaves): compute only
      row["limited_by"] = "compute (no byte count from this compiler)"
      row["images_per_s"] = config.batch_size / compute_s
  return row


def fits(memory: dict, target: targets.Target, gpu_memory_fraction: float) -> bool:
  """Whether a compiled program's memory per chip fits the target's usable memory (a CPU's
  is not checked: the host's RAM is shared with everything else)."""
  return target.platform == targets.CPU or memory["total"] <= target.usable_bytes(gpu_memory_fraction)


def _attention_form(config) -> str:
  """e.g. 'paper form, G[64] D[64], xla': where the layers sit and how they compute."""
  from sagan_jax import config as config_lib

  m = config.model
  sides = {net: list(config_lib.attention_sides(m, net)) for net in ("g", "d")}
  form = "pooled keys/values" if m.pool_kv else "paper form"
  return f"{form}, G{sides['g']} D{sides['d']}, {m.attention_impl}"


def _refusal(message: str) -> str:
  lines = [line.strip() for line in message.splitlines() if _DOES_NOT_FIT.search(line)]
  return " ".join((lines[0] if lines else message.splitlines()[0]).split())[:300]


def variants(config, target: targets.Target) -> list:
  """(what, overrides) of the knobs that save memory, each alone, for this target."""
  out = []
  if config.dtype != "bfloat16":
    out.append(("bfloat16", {"dtype": "bfloat16"}))
  if config.model.attention_resolutions or config.model.g_attention_resolutions:
    if target.platform == "cuda":
      flash = {"dtype": "bfloat16", "model.attention_impl": "dot_product_attention"}
      out.append(("bfloat16 + cuDNN flash attention", flash))
    if config.model.attention_impl != "chunked":
      out.append(("chunked attention", {"model.attention_impl": "chunked"}))
    if not config.model.pool_kv:
      out.append(("pooled keys/values (released code)", {"model.pool_kv": True}))
  half = config.batch_size // 2
  if half >= target.chips and half % target.chips == 0:
    out.append((f"batch {half}", {"batch_size": half}))
  return out


def with_overrides(config, overrides: dict):
  """A copy of ``config`` with the dotted fields of ``overrides`` set."""
  config = config.copy_and_resolve_references()
  config.update_from_flattened_dict(overrides)
  return config


def largest(fits, start: int, multiple: int, ceiling: int) -> int | None:
  """The largest multiple of ``multiple`` (within 1/8 of it, at most ``ceiling``) for which
  ``fits`` holds, searched from ``start`` by doubling or halving, then bisecting; None if not
  even ``multiple`` fits. Each call of ``fits`` is a compile."""
  lo, hi = None, None
  b = max(multiple, start // multiple * multiple)
  while lo is None or hi is None:
    if fits(b):
      lo = b
      if b * 2 > ceiling:
        return lo
      b *= 2
    else:
      hi = b
      if b <= multiple:
        return None
      b = max(multiple, b // 2 // multiple * multiple)
  while hi - lo > max(multiple, lo // 8):
    mid = (lo + hi) // 2 // multiple * multiple
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def max_batch(config, target, devices, fraction, report) -> int | None:
  """The largest global batch whose step fits the target (a multiple of its chips)."""

  def fits(batch):
    ok = plan(with_overrides(config, {"batch_size": batch}), target, devices, fraction)["fits"]
    report(f"  batch {batch}: {'fits' if ok else 'does not fit'}")
    return ok

  return largest(fits, config.batch_size, len(devices), ceiling=64 * config.batch_size)


def format_row(row: dict) -> str:
  gib = lambda b: f"{b / 2**30:.2f} GiB"
  head = (
    f"{row['target']} ×{row['chips']}, batch {row['batch_size']}, {row['dtype']}, "
    f"D:G {row['d_steps_per_g_step']}:1, attention {row['attention']}"
  )
  if "refusal" in row:
    return f"{head}\n  does not fit: the compiler says {row['refusal']!r} ({row['compile_s']:.0f} s)"
  m = row["memory"]
  verdict = "fits" if row["fits"] else "does NOT fit"
  margin = row["usable_bytes"] - m["total"]
  lines = [
    head,
    f"  memory per chip: {gib(m['total'])} of {gib(row['usable_bytes'])} usable: {verdict}"
    + (f" ({gib(abs(margin))} {'to spare' if margin >= 0 else 'over'})" if row["usable_bytes"] else ""),
    f"    arguments {gib(m['arguments'])}, outputs {gib(m['outputs'])} ({gib(m['aliased'])} donated), "
    f"temporaries {gib(m['temporaries'])}, code {gib(m['code'])}; "
    f"sampling a batch: {gib(row['sampler_bytes'])}",
    f"  per chip per step: {row['flops_per_chip'] / 1e12:.3f} TFLOP, {row['bytes_per_chip'] / 1e9:.1f} GB "
    f"accessed{'' if row['bytes_fused'] else ' (unfused program: far above the fused one)'}; "
    f"compiled in {row['compile_s']:.0f} s",
  ]
  if "images_per_s" in row and row["bytes_fused"]:
    lines.append(
      f"  step ≥ {row['compute_bound_s'] * 1e3:.1f} ms at peak compute, "
      f"≥ {row['memory_bound_s'] * 1e3:.1f} ms at memory bandwidth: {row['limited_by']}-bound, "
      f"≤ {row['images_per_s']:,.0f} images/s"
    )
  elif "images_per_s" in row:
    lines.append(
      f"  step ≥ {row['compute_bound_s'] * 1e3:.1f} ms at peak compute: ≤ {row['images_per_s']:,.0f} "
      f"images/s (this compiler reports no byte count: no bandwidth bound)"
    )
  return "\n".join(lines)


def _run():
  config = FLAGS.config
  name = FLAGS.target
  if name == targets.CPU:
    devices = targets.devices(targets.cpu_target(0), FLAGS.cpu_devices)
    target = targets.cpu_target(len(devices))
  elif name in targets.TARGETS:
    target = targets.TARGETS[name]
    try:
      devices = targets.devices(target)
    except RuntimeError as e:
      from sagan_jax.errors import UserError

      raise UserError(str(e)) from e
  else:
    from sagan_jax.errors import UserError

    raise UserError(f"--target={name!r} is not one of {', '.join(list(targets.TARGETS) + [targets.CPU])}")
  print(
    f"target {target.name}: {len(devices)} × {devices[0].device_kind}; peaks: {target.source}", flush=True
  )

  def emit(row, what=""):
    print((f"[{what}] " if what else "") + format_row(row), flush=True)
    if FLAGS.json_out:  # as each plan ends: a long search keeps what it has found
      with open(FLAGS.json_out, "a") as f:
        f.write(json.dumps(dict(row, variant=what)) + "\n")

  base = plan(config, target, devices, FLAGS.gpu_memory_fraction)
  emit(base)
  if FLAGS.suggest == "always" or (FLAGS.suggest == "auto" and not base["fits"]):
    for what, overrides in variants(config, target):
      try:
        row = plan(with_overrides(config, overrides), target, devices, FLAGS.gpu_memory_fraction)
      except Exception as e:  # pylint: disable=broad-except  (one knob that cannot be planned here)
        print(f"[{what}] not planned: {_first_line(e)}", flush=True)
        continue
      emit(row, what)
  if FLAGS.max_batch:
    print("largest batch that fits:", flush=True)
    best = max_batch(config, target, devices, FLAGS.gpu_memory_fraction, lambda s: print(s, flush=True))
    print(f"  {best if best else 'none: not even one example per chip'}", flush=True)
    emit_search = {"target": target.name, "variant": "max_batch", "max_batch": best}
    if FLAGS.json_out:
      with open(FLAGS.json_out, "a") as f:
        f.write(json.dumps(emit_search) + "\n")


def _first_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  if "cuDNN not found" in text:
    return (
      "cuDNN is not installed in this environment (JAX reads its version while tracing cuDNN "
      "attention); .venv-plan/bin/pip install nvidia-cudnn-cu13 adds it"
    )
  return " ".join(text.splitlines()[0].split())[:300]


def main(argv):
  del argv
  cli.run(_run)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
