"""The training loop: set up a run (or resume it), then per step the jitted train step
followed by named, timed periodic actions — log, sample, checkpoint, evaluate, profile — and
the guards against divergence and preemption.

The step itself is ``step.make_train_step``; the programs of a config come from
``programs.programs``; this module only schedules them.
"""

import collections
import logging
import os
import signal
from collections.abc import Callable, Sequence

import flax
import jax
import numpy as np

from sagan_jax import accelerator, checkpointing, figures, kernels, run, sampling, sharding, signals
from sagan_jax import config as config_lib
from sagan_jax import workdir as workdir_lib
from sagan_jax.errors import Preempted, TrainingDiverged, UserError
from sagan_jax.programs import TrainState, programs

HISTOGRAM_BATCHES = 10  # the class histogram logged once covers this many first batches
PREFETCH = 2  # batches put on the devices ahead of the step that reads them
PROFILE_AFTER_STEPS = 3  # steps of a session before a profile starts: past compile and warm-up

# hook(step, state, metrics) after every train step's dispatch, before the periodic actions
Hook = Callable[[int, TrainState, dict], None]


class _Training:
  """One run's loop state and its periodic actions."""

  def __init__(self, config, workdir, mesh, writer, ckpt, source, hooks: Sequence[Hook] = (), best=None):
    from clu import periodic_actions

    from sagan_jax.data import pipeline  # tf.data: the step and models import without TF

    self.config, self.workdir, self.mesh, self.writer, self.ckpt = config, workdir, mesh, writer, ckpt
    self.best = best  # the best checkpoint's Checkpointer (config.best_metric), or None
    self.pipeline, self.source, self.hooks = pipeline, source, tuple(hooks)
    self.is_chief = jax.process_index() == 0
    self.built = programs(config, mesh)
    self.evaluations = config_lib.evaluations(config)  # {name: (every_steps, samples, metrics)}
    self.evaluator = None
    if self.evaluations:
      from sagan_jax.evaluation.evaluator import Evaluator

      self.evaluator = Evaluator(
        config,
        mesh,
        self.built.sampler,
        workdir,
        self.built.kernels,
        tuple(dict.fromkeys(m for _, _, ms in self.evaluations.values() for m in ms)),
      )
    # steps/s and the share of time each timed action took, written at every log step
    self.report = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps,
      writer=writer,
      every_steps=config.log_every_steps,
      every_secs=None,
    )
    self.seen_labels = []
    self.profiling = None  # the step a running profile stops after
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
    host = self.pipeline.create_train_iterator(
      c,
      source=self.source,
      start_index=step * c.batch_size * c.d_steps_per_g_step,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    queue = collections.deque()
    while True:
      while len(queue) < PREFETCH:
        batch = self.pipeline.stack_d_step_batches(host, c.d_steps_per_g_step)
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
        self.pipeline.log_class_histogram(np.concatenate(self.seen_labels), self.config.model.num_classes)

  def log_metrics(self, step, metrics):
    self.writer.write_scalars(step, jax.device_get(metrics))

  def write_samples(self, step, state):
    rows, cols = self.grid_rows, self.grid_cols
    images = np.asarray(self.built.sampler(state, self.grid_z, self.grid_y))[: rows * cols]
    grid = figures.image_grid(images, rows, cols)
    if self.is_chief:
      figures.save_png(grid, workdir_lib.path(self.workdir, workdir_lib.SAMPLES, workdir_lib.step_png(step)))
    images = {"samples": grid[None]}
    if self.probe_queries is not None:  # G's last attention layer, as the visualize tool draws it
      probes, maps = jax.device_get(self.built.sampler.with_attention(state, self.probe_z, self.probe_y))
      layer = figures.last_attention_layer(maps)
      images["attention/generator"] = figures.attention_figure(
        probes[:rows], maps[layer][:rows], self.probe_queries
      )[None]
    self.writer.write_images(step, images)

  def save_checkpoint(self, step, state):
    self.ckpt.save(step, state)
    if not self.config.async_checkpoints:
      self.ckpt.wait()

  def evaluate(self, step, state, name):
    _, num_samples, metric_names = self.evaluations[name]
    scalars = self.evaluator.evaluate(state, step, num_samples, metric_names, name=name)
    self.writer.write_scalars(step, scalars)
    self.keep_if_best(step, state, scalars)

  def keep_if_best(self, step, state, scalars) -> None:
    """Saves the state into workdir/best/ when config.best_metric beats the best kept so far
    (the value is saved with it: a resumed run goes on from it)."""
    metric = self.config.best_metric
    if self.best is None or metric not in scalars:
      return
    value, kept = float(scalars[metric]), self.best.best()
    if kept is None or (value < kept[1] if self.config.best_mode == "min" else value > kept[1]):
      self.best.save(step, state, metrics={metric: value})
      self.best.wait()
      logging.info("step %d: best %s so far (%.4g), kept in %s", step, metric, value, self.best.directory)

  def check_divergence(self, step, metrics) -> int:
    """The current streak of skipped non-finite updates; stops the run once it persists.

    Nothing non-finite is ever applied (the step keeps the old state), so stopping loses
    nothing; and no checkpoint is written during a streak, so the last one is healthy.
    Restoring it would replay the same noise and data bit for bit: no use.
    """
    streak = int(metrics["nonfinite_streak"])
    if streak:
      losses = {k: float(metrics[k]) for k in ("d_loss", "g_loss")}
      bad = [k for k, v in losses.items() if not np.isfinite(v)]
      what = (
        f"non-finite {' and '.join(bad)}"
        if bad
        else "a non-finite gradient or updated state (the losses are finite)"
      )
      logging.warning("step %d: %s %s; update skipped (%d in a row)", step, what, losses, streak)
      if streak >= self.config.max_nonfinite_steps:
        last = self.ckpt.latest_step()
        raise TrainingDiverged(
          f"training diverged: {streak} consecutive non-finite updates up to step {step} "
          f"(d_loss={losses['d_loss']}, g_loss={losses['g_loss']}); none was applied or "
          + (
            f"saved, and the last checkpoint (step {last}) is healthy"
            if last is not None
            else "saved (no checkpoint yet)"
          )
          + "; lower optimizer.d_lr / optimizer.g_lr, raise optimizer.eps or check the data, "
          "then rerun (a rerun resumes from the last checkpoint)"
        )
    return streak

  def profile(self, step: int, state) -> None:
    """A jax.profiler trace of config.profile_steps steps into workdir/profile/, started
    PROFILE_AFTER_STEPS steps into the session (past compile and warm-up)."""
    c = self.config
    if not c.profile_steps or not self.is_chief:
      return
    if self.profiling is None and step == self.first_step + PROFILE_AFTER_STEPS:
      where = workdir_lib.path(self.workdir, workdir_lib.PROFILE)
      logging.info("profiling steps %d-%d into %s", step + 1, step + c.profile_steps, where)
      jax.profiler.start_trace(os.fspath(where), create_perfetto_trace=True)
      self.profiling = step + c.profile_steps
    elif self.profiling is not None and step == self.profiling:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.profiling = -1  # once per session

  def after_step(self, step, state, metrics, stop) -> None:
    """The periodic actions due after ``step``, each a named, timed function."""
    c = self.config
    stopping = bool(stop.signal_name) or self.ckpt.reached_preemption(step)
    periods = {
      "log": c.log_every_steps,
      "samples": c.sample_every_steps,
      "checkpoint": c.checkpoint_every_steps,
      "divergence": c.max_nonfinite_steps,
      **{f"evaluation/{name}": every for name, (every, _, _) in self.evaluations.items()},
    }
    due = {name: every > 0 and self.due(step, every) for name, every in periods.items()}
    if not (stopping or any(due.values())):
      return  # no device-to-host transfer: the host queues the next step at once
    with jax.transfer_guard_device_to_host("allow"):
      with self.report.timed("divergence", wait_jax_async_dispatch=False):
        healthy = self.check_divergence(step, metrics) == 0
      if stopping:
        if healthy:
          self.save_checkpoint(step, state)
        reason = stop.signal_name or "a preemption notice"
        raise Preempted(
          f"stopped by {reason} after step {step}; "
          + (
            f"checkpoint saved in {self.ckpt.directory}"
            if healthy
            else f"no checkpoint written during a non-finite streak (the last is step "
            f"{self.ckpt.latest_step()})"
          )
          + "; rerun the same command to resume",
          exit_code=128 + (stop.signal_number or signal.SIGTERM),
        )
      if due["log"]:
        with self.report.timed("log", wait_jax_async_dispatch=False):
          self.log_metrics(step, metrics)
      if due["samples"]:
        with self.report.timed("samples"):
          self.write_samples(step, state)
      if due["checkpoint"]:
        with self.report.timed("checkpoint"):
          if healthy:
            self.save_checkpoint(step, state)
          else:
            logging.warning("step %d: no checkpoint during a non-finite streak", step)
      for name in self.evaluations:
        if due[f"evaluation/{name}"]:
          with self.report.timed(f"evaluation/{name}"):
            self.evaluate(step, state, name)

  # The loop

  def run(self) -> TrainState:
    c = self.config
    # A resume restores into the state's shapes, dtypes and shardings without computing
    # (or compiling) the initial state it would overwrite.
    step, state = self.ckpt.restore_latest(self.built.init.eval_shape())
    if state is None:
      state = self.built.init()
    else:
      logging.info("resumed from %s at step %d", self.ckpt.directory, step)
    if step >= c.num_train_steps:
      logging.info("already trained %d of %d steps; nothing to do", step, c.num_train_steps)
      return state
    if step == 0:
      self.writer.write_hparams(
        {k: str(v) for k, v in flax.traverse_util.flatten_dict(c.to_dict(), sep=".").items()}
      )
    logging.info(
      "Adam β1=%s β2=%s, lr_G=%s lr_D=%s, %d D step(s) per G step, sampling BN stats: %s; kernels %s",
      c.optimizer.b1,
      c.optimizer.b2,
      c.optimizer.g_lr,
      c.optimizer.d_lr,
      c.d_steps_per_g_step,
      c.sample_bn_stats,
      self.built.kernels.choices(),
    )
    self.first_step = step
    with signals.StopSignals() as stop:
      for batch in self.device_batches(step):
        state, metrics = self.built.train_step(state, batch)
        step += 1
        for hook in self.hooks:
          hook(step, state, metrics)
        self.report(step)
        self.profile(step, state)
        self.after_step(step, state, metrics, stop)
        if step >= c.num_train_steps:
          break
    if self.profiling not in (None, -1):  # the run ended inside the profiled steps
      jax.profiler.stop_trace()
    return state


def train_and_evaluate(config, workdir: str, *, hooks: Sequence[Hook] = ()) -> TrainState:
  """Trains (or resumes) the run in ``workdir`` up to ``config.num_train_steps``; each of
  ``hooks`` is called as hook(step, state, metrics) after every step's dispatch.

  Every check a user's input can fail comes before anything is written or compiled: the
  config, the data against the model (labels, classes, decodable files), the workdir (its
  lock, then that it takes a file), and on resume the model against config.json and the
  newest checkpoint's shapes. Only then are config.json, the event file and checkpoints
  written."""
  from clu import metric_writers  # with TF: the step and models import without it

  from sagan_jax.data import pipeline

  mesh = sharding.create_mesh()
  logging.info(
    "JAX on %s: %d device(s), %s", jax.default_backend(), mesh.size, mesh.devices.flat[0].device_kind
  )
  accelerator.warn_if_jax_misses_it(jax.default_backend())
  config_lib.validate_config(config, mesh.size)
  workdir = check_workdir_name(workdir)
  workdir_lib.check_folders(workdir)
  source = pipeline.load_source(
    config, process_index=jax.process_index(), process_count=jax.process_count(), workdir=workdir, write=False
  )
  signals.stop_if_interrupted()  # a SIGINT whose KeyboardInterrupt CPython dropped on the way here
  created = not workdir_lib.path(workdir).exists()
  lock = open_workdir(workdir)
  try:
    ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, owner=True)
    try:  # one exit: every way out waits for the last save and flushes the logs
      resuming = bool(ckpt.all_steps())
      run.check_same_model(config, workdir, resuming=resuming)
      ckpt.check_resumable(lambda: programs(config, mesh).init.eval_shape())
      if not resuming:  # every process reads the same files and decides alike
        run.check_no_other_run(config, workdir)
      if not resuming and jax.process_index() == 0:
        run.record_config(config, workdir, kernels.resolve(config.model.kernels, mesh.devices.flat))
      if source.class_names and jax.process_index() == 0:
        from sagan_jax.data import folder

        folder.write_label_map(workdir, list(source.class_names))
      writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
      best = None
      if config.best_metric:
        best = checkpointing.Checkpointer(
          workdir,
          1,
          owner=True,
          folder=workdir_lib.BEST,
          best_metric=config.best_metric,
          best_mode=config.best_mode,
        )
      try:
        with metric_writers.ensure_flushes(writer):
          training = _Training(config, workdir, mesh, writer, ckpt, source, hooks, best)
          signals.stop_if_interrupted()
          return training.run()
      finally:
        if best is not None:
          best.close()
    finally:
      ckpt.wait()
      ckpt.close()
  finally:
    lock.release()
    if created and jax.process_index() == 0:
      workdir_lib.remove_if_empty(workdir)  # a fresh run refused before it wrote anything


def check_workdir_name(workdir: str) -> str:
  """The workdir as given, refused when empty (an unset shell variable would train into the
  current folder) and with a leading ~ expanded (no shell expands it after --workdir=)."""
  if not workdir or not str(workdir).strip():
    raise UserError("--workdir is empty (an unset shell variable?); name the folder of the run")
  if str(workdir).startswith("~"):
    workdir = os.path.expanduser(workdir)
  logging.info("workdir %s", workdir_lib.path(workdir))
  return workdir


def open_workdir(workdir: str) -> workdir_lib.WorkdirLock:
  """Creates the workdir, takes its lock (one training per workdir), deletes the checkpoint
  saves a killed run left unfinished (ours now: we hold the lock) and only then probes that
  it takes a file: a resume on a full disk first frees what its own half-written save held.
  Returns the held lock."""
  try:
    workdir_lib.path(workdir).mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except  (gfile raises its own types for URLs)
    raise workdir_lib.unusable(workdir, e) from None
  lock = _lock_workdir(workdir)
  try:
    if jax.process_index() == 0:
      checkpointing.delete_unfinished_saves(workdir)
    workdir_lib.check_writable(workdir, jax.process_index())
  except Exception as e:  # pylint: disable=broad-except
    lock.release()
    if isinstance(e, UserError):
      raise
    raise workdir_lib.unusable(workdir, e) from None
  return lock


def _lock_workdir(workdir: str) -> workdir_lib.WorkdirLock:
  """Process 0 takes the lock; every process learns whether it got it (and refuses if not)."""
  lock = workdir_lib.WorkdirLock(workdir)
  refused = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except (UserError, OSError) as e:
      refused = e if isinstance(e, UserError) else workdir_lib.unusable(workdir, e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    if int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None))) and not refused:
      refused = UserError(
        f"another training is running in {workdir} (process 0 found its lock); "
        f"wait for it, stop it, or use another --workdir"
      )
  if refused:
    raise refused
  return lock
