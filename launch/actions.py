"""The host work between compiled calls, as small actions with a cadence (TF Model Garden Orbit's shape).

The controller (launch/controller.py) asks every action after every ``Trainer.run`` call, in list order. An action
with a cadence (``every`` steps, and the run's last step) acts only when ``is_due``; the others look at every
call (the non-finite policy, the stop-request check). Each action also tells the controller the next step at
which it wants a call to end (``next_step``) and what the last step of such a call must measure (``measure``:
gradient norms for the log line, gradients for histograms), so compiled calls are as long as they can be.

An action returns ``DISCARD`` when the call's result must not reach the actions after it (a rolled-back call).
All of this runs on the host; only the chief writes files (the Monitor and the checkpoint store know).
"""

import os

import numpy as np
import tensorflow as tf

from genscale import images as image_lib
from launch import checkpoints
from launch import metrics as metrics_lib
from launch import rundir
from launch.sampling import Previewer, Sampler, grid_labels, has_previews
from launch.signals import Preempted
from launch.trainer import GRAD_NORMS, GRADIENTS
from models.base import variable_names

DISCARD = "discard"


class NonFiniteLoss(Exception):
  """A loss became NaN or infinite; the run stopped without saving."""


def is_due(step, every, total):
  """Whether a cadence of ``every`` steps (0: off) falls on ``step``; the run's last step always counts."""
  return bool(every) and (step % int(every) == 0 or step == total)


def next_due(step, every, total):
  """The first step after ``step`` on which a cadence of ``every`` steps falls (``total`` at the latest)."""
  return min(total, (step // int(every) + 1) * int(every)) if every else total


class Action:
  """Host work after a compiled call.

  Attributes:
    every: cadence in steps (0: none; the action then looks at every call and decides itself).
    measure: what the last step of a call ending on a due step must measure (trainer.GRAD_NORMS, GRADIENTS).
  """
  every = 0
  measure = ()

  def __init__(self, total):
    self.total = int(total)

  def due(self, step):
    return is_due(step, self.every, self.total)

  def next_step(self, step):
    """The next step after ``step`` where this action wants a call to end, or None."""
    return next_due(step, self.every, self.total) if self.every else None

  def begin(self, step):
    """Called once, before the first call, with the step the run starts at."""

  def __call__(self, result):
    if self.due(result.step):
      return self.run(result)
    return None

  def run(self, result):
    raise NotImplementedError


class NonFinitePolicy(Action):
  """A call that ended on a non-finite loss: stop (``on_nonfinite=stop``), or roll back to the newest checkpoint and
  skip the data of the diverged steps (``rollback``, at most ``max_rollbacks`` times in a process)."""

  def __init__(self, total, trainer, store, monitor, config, workdir):
    super().__init__(total)
    self.trainer, self.store, self.monitor, self.workdir = trainer, store, monitor, workdir
    self.rollback = config.on_nonfinite == "rollback"
    self.max_rollbacks, self.rollbacks = int(config.max_rollbacks), 0

  def __call__(self, result):
    if result.finite:
      return None
    bad = {k: v for k, v in result.values().items() if not np.isfinite(v)}
    name, value = next(iter(bad.items())) if bad else ("loss", float("nan"))
    where = f"non-finite {name}={value} at step {result.step - 1}"
    self.store.wait()
    chief = self.trainer.runtime.is_chief
    if not self.rollback or self.rollbacks >= self.max_rollbacks:
      latest = checkpoints.latest(self.workdir) if chief else None
      if chief:
        rundir.write_status(self.workdir, "failed: non-finite loss", result.step - 1, detail=where)
      raise NonFiniteLoss(f"{where}; stopped without saving, the last checkpoint ({latest or 'none'}) is intact"
                          + (f" (after {self.rollbacks} rollbacks)" if self.rollbacks else ""))
    bad_position = self.trainer.position() - 1
    restored = self.store.restore_latest(warn=self.monitor.print)
    if restored is None:
      raise NonFiniteLoss(f"{where}; no checkpoint to roll back to")
    self.trainer.skip_data_to(bad_position + 1)
    self.rollbacks += 1
    self.monitor.print(f"{where}: rolled back to step {restored} (rollback {self.rollbacks} of "
                       f"{self.max_rollbacks}), skipping the data of the diverged steps")
    return DISCARD


class StageLog(Action):
  """A line when a named stage (a growing GAN's resolution or fade) starts training in this process."""

  def __init__(self, total, trainer, monitor):
    super().__init__(total)
    self.trainer, self.monitor = trainer, monitor

  def __call__(self, result):
    if result.stage_start is None or not result.stage.name:
      return
    height, width = self.trainer.resolution(result.stage)
    step, nimg = result.stage_start
    self.monitor.print(f"stage {result.stage.name}: {height}x{width} images, batch {self.trainer.global_batch}, "
                       f"from step {step} (kimg {nimg / 1000:.1f})")


class LogLine(Action):
  """Every ``log_every`` steps: a console line and TensorBoard scalars of the metrics averaged since the last line,
  with rates (after the first call, which includes tracing), learning rates, the EMA decay and model state."""
  measure = (GRAD_NORMS,)

  def __init__(self, total, every, trainer, monitor):
    super().__init__(total)
    self.every, self.trainer, self.monitor = int(every), trainer, monitor
    self.window = {}
    self.clock_started = False
    self.seconds_per_step = {}  # stage key -> seconds per step, measured by the log windows that stayed in it
    self._window_stage = None  # the stage at the start of the current window

  def __call__(self, result):
    if not self.clock_started:  # rates start after the first call: it includes tracing and compilation
      self.monitor.start_clock(result.step, result.nimg)
      self._window_stage = result.stage.key
      self.clock_started = True
    self.monitor.advance(result.step)
    self.window = metrics_lib.merge(self.window, result.metrics)
    return super().__call__(result)

  def run(self, result):
    trainer = self.trainer
    extra = {"progress/ema_beta": float(trainer.ema_beta().numpy())}
    extra.update(trainer.optimizer_stats())
    extra.update({f"model/{k}": float(v) for k, v in trainer.model.scalars().items()})
    self.monitor.log(result.step, metrics_lib.values(self.window), nimg=result.nimg, extra=extra,
                     eta=self.eta(result))
    self.window = {}

  def eta(self, result):
    """Seconds left, stage by stage (``Stages.seconds_left``): each stage at its own measured pace, the stages not
    reached yet scaled from the current one by their pixels per step. None before a window was timed."""
    key, pace = result.stage.key, self.monitor.pace(result.step)
    if pace is not None and key == self._window_stage:
      self.seconds_per_step.pop(key, None)  # re-inserted last: the stage timed most recently
      self.seconds_per_step[key] = pace
    self._window_stage = key
    return self.trainer.stages.seconds_left(result.nimg, self.total - result.step, self.seconds_per_step)


class Histograms(Action):
  """Every ``histogram_every`` steps: weight histograms, and the summed gradients of the call's last step."""
  measure = (GRADIENTS,)

  def __init__(self, total, every, trainer, monitor):
    super().__init__(total)
    self.every, self.trainer, self.monitor = int(every or 0), trainer, monitor

  def run(self, result):
    model = self.trainer.model
    weights = model.trainable_variables
    self.monitor.histograms(result.step, dict(zip(variable_names(model, weights), (v.numpy() for v in weights))),
                            "weights")
    for phase in self.trainer.phases:
      if phase.name in result.gradients:
        names = variable_names(model, phase.variables)
        self.monitor.histograms(result.step, dict(zip(names, result.gradients[phase.name])),
                                f"gradients/{phase.name}")


class SampleGrids(Action):
  """Every ``sample_every`` steps: grids of the raw and EMA generators from fixed latents (and labels), to
  TensorBoard and, for the EMA generator, ``samples/ema_<step>.png``; and the model's previews of a fixed batch of
  training images (reconstructions, interpolations: ``GenerativeModel.preview``), ``samples/<name>_<step>.png``.
  A new run also shows its reals and step 0."""

  PREVIEW_BATCHES = 4  # global batches of training images each preview sees (a 2-D latent map shows them all)

  def __init__(self, total, every, trainer, monitor, grid_count):
    super().__init__(total)
    self.every, self.trainer, self.monitor, self.count = int(every), trainer, monitor, int(grid_count)
    model = trainer.model
    num_classes = getattr(model, "num_classes", 0)
    self.labels = grid_labels(self.count, num_classes)
    self.columns = num_classes if num_classes else None
    self.samplers = {}
    if model.samples_from_prior:
      self.samplers = {"ema": Sampler(trainer.runtime, model, self.count, ema=True)}
      if model.ema_pairs:  # without an EMA copy (a VAE) both grids would be the same
        self.samplers["raw"] = Sampler(trainer.runtime, model, self.count, ema=False)
    self.previewer = Previewer(trainer.runtime, model, trainer.seed) if has_previews(model) else None
    self.preview_batches = None

  def begin(self, step):
    if step:
      return
    trainer = self.trainer
    reals = next(iter(trainer.dataset(0, resolution=trainer.config.resolution)))
    local = trainer.runtime.strategy.experimental_local_results(reals)
    first = np.concatenate([r["image"].numpy() for r in local])
    self.monitor.image_grid(0, "data/reals", image_lib.grid(image_lib.to_uint8(first[:self.count])),
                            path="samples/reals.png")
    self.write(0)  # the starting point, so even a short run shows its grids change

  def write(self, step):
    for kind, sampler in self.samplers.items():
      images = sampler.batch([self.trainer.seed, 0x5A4D], self.labels)[:self.count]
      pixels = image_lib.grid(image_lib.to_uint8(images), self.columns)
      self.monitor.image_grid(step, f"samples/{kind}", pixels,
                              path=f"samples/{kind}_{step:07d}.png" if kind == "ema" else None)
    if self.previewer is not None:
      for name, pixels in self.previews().items():
        self.monitor.image_grid(step, f"previews/{name}", pixels, path=f"samples/{name}_{step:07d}.png")

  def previews(self):
    """{name: uint8 picture} of the model's previews of the first training batches."""
    if self.preview_batches is None:  # the same images at every step: the first batches of the data order
      iterator = iter(self.trainer.dataset(0, resolution=self.trainer.config.resolution))
      self.preview_batches = [next(iterator) for _ in range(self.PREVIEW_BATCHES)]
    outputs, labels = self.previewer(self.preview_batches)
    pictures = {}
    for name, values in outputs.items():
      if values.ndim == 2 and values.shape[1] == 2:
        pictures[name] = image_lib.scatter(values, labels)
      else:
        strips = values.shape[2] > 4 * values.shape[1]  # one strip per line; pairs tile as a square
        rows = values[:max(1, self.count // (4 if strips else 2))]
        pictures[name] = image_lib.grid(image_lib.to_uint8(rows), 1 if strips else None)
    return pictures

  def run(self, result):
    self.write(result.step)


class SaveCheckpoint(Action):
  """Every ``checkpoint_every`` steps (and at the end): a checkpoint, written in the background."""

  def __init__(self, total, every, store):
    super().__init__(total)
    self.every, self.store = int(every), store

  def run(self, result):
    self.store.save(result.step)


class Evaluate(Action):
  """Every ``eval_every`` steps (and at the end): FID and the other scores of the EMA generator, as scalars; the
  time it takes is left out of the training rates."""

  def __init__(self, total, evaluation, monitor):
    super().__init__(total)
    self.every, self.evaluation, self.monitor = evaluation.every, evaluation, monitor

  def run(self, result):
    scalars = self.evaluation(result.step)
    self.monitor.scalars(result.step, scalars)
    self.monitor.exclude_time(scalars["perf/eval_sec"])  # img/s counts training time only


class StopOnRequest(Action):
  """After every call: when any worker got SIGTERM/SIGINT, every worker saves the current step and stops together
  (raises ``Preempted``)."""

  def __init__(self, total, signals, store, runtime, monitor, workdir):
    super().__init__(total)
    self.signals, self.store, self.runtime, self.monitor, self.workdir = signals, store, runtime, monitor, workdir

  def __call__(self, result):
    if not self.runtime.any_worker(self.signals.requested):  # a collective: every worker asks, every call
      return
    reason = self.signals.requested = self.signals.requested or "a stop request from another worker"
    if self.store.last_saved_step != result.step:
      self.store.save(result.step)
    self.store.wait()
    if self.runtime.is_chief:
      rundir.write_status(self.workdir, "preempted", result.step, signal=reason)
    self.monitor.print(f"{reason}: saved step {result.step} and stopped; rerun the same command to resume")
    self.runtime.any_worker(False)  # leave together (see launch/loop.py)
    raise Preempted(f"stopped by {reason} at step {result.step}")


class Profile(Action):
  """``profile_steps=A,B``: a profiler trace of the steps from A to B, for TensorBoard's Profile tab (chief only).
  The trace starts after the host work of step A and ends after that of step B."""

  def __init__(self, total, window, workdir, monitor, enabled):
    super().__init__(total)
    self.first, self.last = window
    self.logdir, self.monitor, self.enabled = os.path.join(workdir, "tensorboard"), monitor, enabled

  def next_step(self, step):
    upcoming = [s for s in (self.first, self.last) if s > step]
    return min(upcoming) if upcoming else None

  def begin(self, step):
    if step == self.first and self.enabled:
      tf.profiler.experimental.start(self.logdir)

  def __call__(self, result):
    if not self.enabled:
      return
    if result.step == self.last:
      tf.profiler.experimental.stop()
      self.monitor.print(f"profiled steps {self.first}..{self.last}: open the Profile tab of TensorBoard")
    self.begin(result.step)
