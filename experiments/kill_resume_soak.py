"""Kill/resume soak: random SIGTERM/SIGKILL during a run, resume, compare with an uninterrupted run.

  python experiments/kill_resume_soak.py [--kills=20] [--steps=60] [--checkpoint_every=5]
      [--out=/tmp/soak] [--seed=0] [--max_minutes=40]

Runs `python -m sagan_jax.main` on the embedded default's smoke variant (data from
--data_dir, default: Debian's Fashion-MNIST), sends a random signal after a random
number of new training steps, restarts with the same workdir, and repeats until the
run completes. Prints per kill: signal, step reached, step resumed from, steps lost;
then whether the final parameters equal (bit for bit) those of an uninterrupted run.
"""
import argparse
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"\] \[(\d+)\] d_fake=")
RESUMED = re.compile(r"resumed from .* at step (\d+)")


def command(workdir, args):
  cmd = [sys.executable, "-m", "sagan_jax.main", "--config=configs/fashion_mnist.py:smoke",
         f"--workdir={workdir}", f"--config.num_train_steps={args.steps}",
         f"--config.checkpoint_every_steps={args.checkpoint_every}", "--config.log_every_steps=1",
         f"--config.sample_every_steps={args.steps}"]
  if args.data_dir:
    cmd.append(f"--config.dataset.data_dir={args.data_dir}")
  return cmd


def run_once(workdir, args, kill_after_steps=None, sig=None):
  """Runs main until done or until kill_after_steps new steps were logged; returns (rc, first, last)."""
  proc = subprocess.Popen(command(workdir, args), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  resumed, last, seen = 0, None, 0
  for line in proc.stdout:
    if m := RESUMED.search(line):
      resumed = int(m.group(1))
    if m := STEP_LINE.search(line):
      last, seen = int(m.group(1)), seen + 1
      if kill_after_steps is not None and seen == kill_after_steps:
        proc.send_signal(sig)
  return proc.wait(), resumed, last


def final_params(workdir):
  from configs import fashion_mnist
  import jax
  from sagan_jax import checkpointing, programs, sharding
  config = fashion_mnist.get_config("smoke")
  template = jax.eval_shape(programs.programs(config, sharding.create_mesh()).init)
  step, state = checkpointing.Checkpointer(workdir, 3).restore_latest(template)
  return step, [np.asarray(x) for x in jax.tree.leaves((state.g_params, state.d_params, state.ema_params))]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--checkpoint_every", type=int, default=5)
  parser.add_argument("--out", default="/tmp/sagan_soak")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max_minutes", type=float, default=40)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  os.makedirs(args.out, exist_ok=True)
  reference, soaked = (os.path.join(args.out, f"{name}_{int(time.time())}") for name in ("reference", "soaked"))
  start = time.time()
  run_once(reference, args)

  rows, rc, final_resumed = [], None, None
  while rc != 0 and time.time() - start < args.max_minutes * 60:
    if len(rows) < args.kills:
      sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
      rc, resumed, last = run_once(soaked, args, kill_after_steps=rng.randint(1, args.checkpoint_every * 2), sig=sig)
      if rc == 0:  # finished before the signal landed
        final_resumed = resumed
        break
      rows.append((sig.name, resumed, last, rc))
    else:
      rc, final_resumed, _ = run_once(soaked, args)

  print(f"{'kill':>4} {'signal':>8} {'resumed from':>12} {'step reached':>12} {'exit':>5}")
  for i, (name, resumed, last, code) in enumerate(rows):
    print(f"{i + 1:>4} {name:>8} {resumed:>12} {str(last):>12} {code:>5}")
  # steps lost by kill i = step reached − step the next run resumed from
  next_resumed = [r[1] for r in rows[1:]] + [final_resumed]
  # SIGTERM: the step in flight completes and is saved, so the run resumes one step past
  # the last logged one: nothing lost (clamped at 0).
  lost = [(name, max(0, (last or 0) - after)) for (name, _, last, _), after in zip(rows, next_resumed)
          if after is not None]
  for name in ("SIGTERM", "SIGKILL"):
    values = [l for n, l in lost if n == name]
    if values:
      print(f"{name}: {len(values)} kills, steps lost max {max(values)}, mean {np.mean(values):.2f} "
            f"(checkpoint interval {args.checkpoint_every})")
  ref_step, ref = final_params(reference)
  soak_step, got = final_params(soaked)
  equal = ref_step == soak_step and all(np.array_equal(a, b) for a, b in zip(ref, got))
  print(f"runs resumed: {len(rows)} of {len(rows)} kills; final step {soak_step} (reference {ref_step}); "
        f"final parameters bitwise equal to the uninterrupted run: {equal}; "
        f"{(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
  main()
