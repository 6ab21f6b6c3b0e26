"""The training loop: set up a run (or resume it), then per step the jitted train step
followed by named periodic actions — log, sample, checkpoint, evaluate — and the
guards against divergence and preemption.

The step itself is ``step.make_train_step``; the programs of a config come from
``programs.programs``; this module only schedules them.
"""
import collections
import logging
import os
import signal
import threading
import time

import flax
import jax
import numpy as np

from sagan_jax import accelerator, checkpointing, figures, sampling, sharding
from sagan_jax import config as config_lib
from sagan_jax.errors import Preempted, TrainingDiverged, stop_if_interrupted
from sagan_jax.programs import TrainState, programs

HISTOGRAM_BATCHES = 10  # the class histogram logged once covers this many first batches
PREFETCH = 2  # batches put on the devices ahead of the step that reads them


class _StopSignals:
  """SIGTERM/SIGINT set a flag instead of killing the process: the loop finishes its
  step, writes a checkpoint and stops. Handlers are restored on exit."""

  def __init__(self):
    self.signal_name, self.signal_number, self._previous = None, None, {}

  def _handle(self, signum, frame):
    del frame
    self.signal_name, self.signal_number = signal.Signals(signum).name, signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Training:
  """One run's loop state and its periodic actions."""

  def __init__(self, config, workdir, mesh, writer, ckpt):
    from clu import periodic_actions
    from sagan_jax import input_pipeline  # tf.data: the step and models import without TF
    self.config, self.workdir, self.mesh, self.writer, self.ckpt = config, workdir, mesh, writer, ckpt
    self.input_pipeline = input_pipeline
    self.is_chief = jax.process_index() == 0
    self.built = programs(config, mesh)
    self.evaluator = None
    if config.eval_every_steps > 0:
      from sagan_jax.evaluation.evaluator import Evaluator
      self.evaluator = Evaluator(config, mesh, self.built.sampler, workdir)
    self.report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps,
                                                  writer=writer)
    self.seen_labels = []
    self._set_up_figures()

  def _set_up_figures(self):
    put = lambda a: jax.device_put(a, sharding.batch_sharding(self.mesh))
    z, y, self.grid_rows, self.grid_cols = sampling.grid_inputs(self.config, self.mesh.size)
    self.grid_z, self.grid_y = put(z), put(y)
    self.probe_queries = None
    m = self.config.model
    if m.attention_block == "self_attention" and config_lib.attention_sides(m, "g"):
      side = max(config_lib.attention_sides(m, "g"))
      self.probe_queries = figures.query_points(side, min(4, side * side), self.config.seed)
      z, y, _ = sampling.probe_inputs(self.config, self.mesh.size)
      self.probe_z, self.probe_y = put(z), put(y)

  def device_batches(self, step: int):
    """The stacked D-step batches from ``step`` on, put on the mesh PREFETCH steps ahead
    so that host-side stacking and the transfer overlap the running step."""
    c = self.config
    host = self.input_pipeline.create_train_iterator(
        c, start_index=step * c.batch_size * c.d_steps_per_g_step,
        process_index=jax.process_index(), process_count=jax.process_count(),
        workdir=self.workdir)
    queue = collections.deque()
    while True:
      while len(queue) < PREFETCH:
        batch = self.input_pipeline.stack_d_step_batches(host, c.d_steps_per_g_step)
        self.log_class_histogram(batch)
        queue.append(sharding.global_batch(batch, self.mesh))
      yield queue.popleft()

  # Periodic actions: the only places the loop reads device values

  def due(self, step: int, every: int) -> bool:
    return step % every == 0 or step == self.config.num_train_steps

  def log_class_histogram(self, batch):
    if len(self.seen_labels) < HISTOGRAM_BATCHES:
      self.seen_labels.append(batch["label"])
      if len(self.seen_labels) == HISTOGRAM_BATCHES:
        self.input_pipeline.log_class_histogram(np.concatenate(self.seen_labels),
                                                self.config.model.num_classes)

  def log_metrics(self, step, metrics):
    scalars = jax.device_get(metrics)
    now = time.time()
    scalars["steps_per_sec"] = (step - self.last_log_step) / max(now - self.last_log_time, 1e-9)
    self.last_log_time, self.last_log_step = now, step
    self.writer.write_scalars(step, scalars)

  def write_samples(self, step, state):
    rows, cols = self.grid_rows, self.grid_cols
    images = np.asarray(self.built.sampler(state, self.grid_z, self.grid_y))[:rows * cols]
    grid = figures.image_grid(images, rows, cols)
    if self.is_chief:
      figures.save_png(grid, os.path.join(self.workdir, "samples", f"step_{step:08d}.png"))
    images = {"samples": grid[None]}
    if self.probe_queries is not None:  # G's last attention layer, as the visualize tool draws it
      probes, maps = jax.device_get(
          self.built.sampler.with_attention(state, self.probe_z, self.probe_y))
      layer = figures.last_attention_layer(maps)
      images["attention/generator"] = figures.attention_figure(
          probes[:rows], maps[layer][:rows], self.probe_queries)[None]
    self.writer.write_images(step, images)

  def save_checkpoint(self, step, state):
    self.ckpt.save(step, state)
    if not self.config.async_checkpoints:
      self.ckpt.wait()

  def evaluate(self, step, state):
    self.writer.write_scalars(step, self.evaluator.evaluate(state, step,
                                                            self.config.eval_num_samples))

  def check_divergence(self, step, metrics) -> int:
    """The current streak of skipped non-finite updates; stops the run once it persists.

    Nothing non-finite is ever applied (the step keeps the old state), so stopping loses
    nothing; and no checkpoint is written during a streak, so the last one is healthy.
    Restoring it would replay the same noise and data bit for bit: no use.
    """
    streak = int(metrics["nonfinite_streak"])
    if streak:
      losses = {k: float(metrics[k]) for k in ("d_loss", "g_loss")}
      logging.warning("step %d: non-finite loss or gradient %s; update skipped (%d in a row)",
                      step, losses, streak)
      if streak >= self.config.max_nonfinite_steps:
        last = self.ckpt.latest_step()
        raise TrainingDiverged(
            f"training diverged: {streak} consecutive non-finite updates up to step {step} "
            f"(d_loss={losses['d_loss']}, g_loss={losses['g_loss']}); none was applied or "
            + (f"saved, and the last checkpoint (step {last}) is healthy" if last is not None
               else "saved (no checkpoint yet)")
            + "; lower optimizer.d_lr / optimizer.g_lr, raise optimizer.eps or check the data, "
              "then rerun (a rerun resumes from the last checkpoint)")
    return streak

  def after_step(self, step, state, metrics, stop) -> None:
    """The periodic actions due after ``step``, each a named function."""
    c = self.config
    stopping = bool(stop.signal_name) or self.ckpt.reached_preemption(step)
    periods = {"log": c.log_every_steps, "samples": c.sample_every_steps,
               "checkpoint": c.checkpoint_every_steps, "divergence": c.max_nonfinite_steps,
               "evaluation": c.eval_every_steps if self.evaluator else 0}
    due = {name: every > 0 and self.due(step, every) for name, every in periods.items()}
    if not (stopping or any(due.values())):
      return  # no device-to-host transfer: the host queues the next step at once
    with jax.transfer_guard_device_to_host("allow"):
      healthy = self.check_divergence(step, metrics) == 0
      if stopping:
        if healthy:
          self.save_checkpoint(step, state)
        reason = stop.signal_name or "a preemption notice"
        raise Preempted(
            f"stopped by {reason} after step {step}; "
            + (f"checkpoint saved in {self.ckpt.directory}" if healthy else
               f"no checkpoint written during a non-finite streak (the last is step "
               f"{self.ckpt.latest_step()})")
            + "; rerun the same command to resume",
            exit_code=128 + (stop.signal_number or signal.SIGTERM))
      if due["log"]:
        self.log_metrics(step, metrics)
      if due["samples"]:
        with self.report.timed("samples"):
          self.write_samples(step, state)
      if due["checkpoint"]:
        if healthy:
          self.save_checkpoint(step, state)
        else:
          logging.warning("step %d: no checkpoint during a non-finite streak", step)
      if due["evaluation"]:
        with self.report.timed("evaluation"):
          self.evaluate(step, state)

  # The loop

  def run(self) -> TrainState:
    c = self.config
    # A resume restores into the state's shapes, dtypes and shardings without computing
    # (or compiling) the initial state it would overwrite.
    step, state = self.ckpt.restore_latest(jax.eval_shape(self.built.init))
    if state is None:
      state = self.built.init()
    else:
      logging.info("resumed from %s at step %d", self.ckpt.directory, step)
    if step >= c.num_train_steps:
      logging.info("already trained %d of %d steps; nothing to do", step, c.num_train_steps)
      return state
    if step == 0:
      self.writer.write_hparams({k: str(v) for k, v in flax.traverse_util.flatten_dict(
          c.to_dict(), sep=".").items()})
    logging.info("Adam β1=%s β2=%s, lr_G=%s lr_D=%s, %d D step(s) per G step, sampling BN "
                 "stats: %s", c.optimizer.b1, c.optimizer.b2, c.optimizer.g_lr, c.optimizer.d_lr,
                 c.d_steps_per_g_step, c.sample_bn_stats)
    self.last_log_time, self.last_log_step = time.time(), step
    with _StopSignals() as stop:
      for batch in self.device_batches(step):
        state, metrics = self.built.train_step(state, batch)
        step += 1
        self.report(step)
        self.after_step(step, state, metrics, stop)
        if step >= c.num_train_steps:
          break
    return state


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains (or resumes) the run in ``workdir`` up to ``config.num_train_steps``.

  Every check a user's input can fail comes before anything is written or compiled: the
  config, the data against the model (labels, classes, decodable files), the workdir (its
  lock, then that it takes a file), and on resume the model against config.json and the
  newest checkpoint's shapes. Only then are config.json, the event file and checkpoints
  written."""
  from clu import metric_writers  # with TF: the step and models import without it
  from sagan_jax import input_pipeline
  mesh = sharding.create_mesh()
  logging.info("JAX on %s: %d device(s), %s", jax.default_backend(), mesh.size,
               mesh.devices.flat[0].device_kind)
  accelerator.warn_if_jax_misses_it(jax.default_backend())
  config_lib.validate_config(config, mesh.size)
  try:
    input_pipeline.preload_source(config, process_index=jax.process_index(),
                                  process_count=jax.process_count(), workdir=workdir)
    stop_if_interrupted()  # a SIGINT whose KeyboardInterrupt CPython dropped on the way here
    lock = checkpointing.open_workdir(workdir)
  except BaseException:
    input_pipeline.forget_preloaded()
    raise
  try:
    ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, owner=True)
    try:  # one exit: every way out waits for the last save and flushes the logs
      resuming = bool(ckpt.all_steps())
      config_lib.check_config_compatible(config, workdir, resuming=resuming, write=False)
      ckpt.check_resumable(lambda: jax.eval_shape(programs(config, mesh).init))
      config_lib.check_config_compatible(config, workdir, resuming=resuming)  # records it
      writer = metric_writers.create_default_writer(workdir,
                                                    just_logging=jax.process_index() != 0)
      with metric_writers.ensure_flushes(writer):
        training = _Training(config, workdir, mesh, writer, ckpt)
        stop_if_interrupted()
        return training.run()
    finally:
      ckpt.wait()
      ckpt.close()
  finally:
    input_pipeline.forget_preloaded()
    lock.release()
