"""The one training loop, for every model family.

``train(config, workdir)`` reads top to bottom: config and workdir, runtime, inputs, build, restore, then the loop
that alternates compiled multi-step calls on the devices with host work between them (logs, summaries, samples,
checkpoints). ``Trainer`` holds the state of a run and its compiled step; tests and benchmarks use it directly.

One training step, for the global batch:
  for each phase of the model (in order; a phase with interval k only on steps divisible by k):
    per replica: loss and gradients (XLA-compiled when runtime.xla), then the optimizer update, which sums the
    gradients over replicas (losses are divided by the global batch, so the sum is the global mean);
  per replica: the EMA of the generator's weights;
  the step and image counters advance.
Several steps run per compiled call (runtime.steps_per_loop). A non-finite loss ends the call at that step, and
the run stops with a message; the last checkpoint stays as it was.

Stages: a model may split a run into stages (``GenerativeModel.stage``), each with its own image resolution and
global batch, e.g. one per resolution of a growing GAN. The Trainer keeps one traced step per stage (traced on
first use), the input is rebuilt when the stage changes, and no compiled call crosses a stage's end. The data
position is counted in examples: a stage of batch B starts at step ceil(nimg / B) of its own stream, so a resumed
run reads exactly what an unbroken one reads (see ``Trainer.position``). Most models have one stage.
"""

import contextlib
import dataclasses
import functools
import json
import os
import signal
import socket
import threading
import time

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from evaluation import periodic as periodic_eval
from genscale import images as image_lib
from genscale.errors import UserError, require
from launch import checkpoints
from launch import lock as lock_lib
from launch import monitor as monitor_lib
from launch import runtime as runtime_lib
from launch import storage
from launch.sampling import Sampler, grid_labels
from models.base import BatchRng, variable_names
import models
import pipelines


_NUM, _DEN = "/__numerator", "/__denominator"


class NonFiniteLoss(Exception):
  """A loss became NaN or infinite; the run stopped without saving."""


def _segments(phases):
  """Groups consecutive phases with the same interval: each group runs as one ``strategy.run``."""
  groups = []
  for phase in phases:
    if groups and groups[-1][0] == phase.interval:
      groups[-1][1].append(phase)
    else:
      groups.append((phase.interval, [phase]))
  return groups


def _unique(variables):
  seen, out = set(), []
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      out.append(v)
  return out


class Trainer:
  """A model, its optimizers and counters under a strategy, and the compiled training call.

  Args:
    config: the resolved ConfigDict (see ``prepare_config``).
    runtime: the Runtime.
    info: the DataInfo of the training data.
  """

  def __init__(self, config, runtime, info):
    self.config = config
    self.runtime = runtime
    strategy = runtime.strategy
    # global_batch and per_replica_batch are those of the current stage (set by enter_stage).
    self.global_batch = int(config.batch_size)
    replicas = runtime.num_replicas
    require(self.global_batch % replicas == 0,
            f"--config.batch_size {self.global_batch} is not divisible by {replicas} replicas; "
            f"use a multiple of {replicas}")
    self.per_replica_batch = self.global_batch // replicas
    self.seed = int(config.seed)

    # ---- build: every variable is created under the strategy's scope.
    with strategy.scope():
      self.model = models.build(config, info, runtime.compute_dtype)
      if runtime.loss_scaling:
        import keras  # pylint: disable=g-import-not-at-top
        for name in list(self.model.optimizers):
          self.model.optimizers[name] = keras.optimizers.LossScaleOptimizer(self.model.optimizers[name])
      # A stage may train only some of the variables (a growing GAN's current layers): the phases are the
      # model's for each stage, and every optimizer is built for what it updates in any stage.
      self._stage_phases = self._phases_of_every_stage()
      every_phase = [p for phases in self._stage_phases.values() for p in phases]
      for name, optimizer in self.model.optimizers.items():
        owned = _unique(v for p in every_phase if p.optimizer == name for v in p.variables)
        optimizer.build(owned)
      counter = dict(dtype=tf.int64, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.step = tf.Variable(0, name="step", **counter)
      self.nimg = tf.Variable(0, name="nimg", **counter)
      # Data and random draws follow the stream position step + position_offset; the offset only moves when
      # a non-finite rollback skips the data of the diverged steps.
      self.position_offset = tf.Variable(0, name="position_offset", **counter)
    self.checkpoint = tf.train.Checkpoint(model=self.model, step=self.step, nimg=self.nimg,
                                          position_offset=self.position_offset)

    self._accumulators = {}
    self._input_wait = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    with strategy.scope():
      self._phase_runs = {p.name: tf.Variable(0, dtype=tf.int64, trainable=False, name=f"runs_{p.name}",
                                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                          for p in every_phase}
    self.stage = None  # the current Stage
    self._compiled = {}  # stage key -> (gradient functions by phase, training call, diagnostic calls)
    self.enter_stage()
    self._input_stage = self.stage.key  # the stage the caller's input was last built for
    self.last_gradients = {}
    self.mark_start()

  # ---- stages (host)

  def _stage_batch(self, stage):
    return int(stage.global_batch or self.config.batch_size)

  def _phases_of_every_stage(self):
    """{stage key: the model's phases in that stage}, walking the stages from the first; refuses, before any
    compute, a stage batch that the replicas can't share."""
    replicas, nimg, phases = self.runtime.num_replicas, 0, {}
    while True:
      stage = self.model.stage(nimg)
      batch = self._stage_batch(stage)
      require(batch % replicas == 0, f"the batch size {batch} of training stage {stage.name or stage.key} is not "
              f"divisible by {replicas} replicas; use a multiple of {replicas}")
      self.model.enter_stage(stage)
      phases[stage.key] = self.model.phases()
      if stage.end_nimg is None or len(phases) > 10_000:
        return phases
      nimg = int(stage.end_nimg)

  def enter_stage(self):
    """Makes the stage of the next step (from the image count) current. Returns True when the stage changed.

    Sets the global and per-replica batch, tells the model, and selects the stage's compiled functions, which
    trace on their first call (so a stage never reuses another stage's trace).
    """
    stage = self.model.stage(int(self.nimg.numpy()))
    if self.stage is not None and stage.key == self.stage.key:
      return False
    self.stage = stage
    self.global_batch = self._stage_batch(stage)
    self.per_replica_batch = self.global_batch // self.runtime.num_replicas
    self.model.enter_stage(stage)
    if stage.key not in self._stage_phases:  # a stage the walk from nimg 0 didn't meet
      self._stage_phases[stage.key] = self.model.phases()
    self.phases = self._stage_phases[stage.key]
    self._segments = _segments(self.phases)
    if stage.key not in self._compiled:
      # functools.partial gives each stage's functions their own identity: TensorFlow counts traces per Python
      # function, and would warn of "excessive retracing" for a few traces that are one per stage by design.
      grads = {p.name: self.runtime.compile(functools.partial(self._gradient_fn(p))) for p in self.phases}
      self._compiled[stage.key] = (grads, tf.function(functools.partial(self._train_steps)), {})
    self._grads, self._train, self._diagnostic = self._compiled[stage.key]
    return True

  def steps_left_in_stage(self):
    """Steps until the current stage ends (at least 1; a large number when it never ends)."""
    self.enter_stage()
    if self.stage.end_nimg is None:
      return 2**62
    return max(1, -(-(int(self.stage.end_nimg) - int(self.nimg.numpy())) // self.global_batch))

  def trace_counts(self):
    """How many times each stage's training call has been traced: {stage key: count} (for tests)."""
    return {key: train.experimental_get_tracing_count() for key, (_, train, _) in self._compiled.items()}

  # ---- per replica

  def _gradient_fn(self, phase):
    """Loss and gradients of one phase for one replica. Pure: no variable writes, so XLA can compile it."""
    optimizer = self.model.optimizers[phase.optimizer]
    global_batch, replicas = self.global_batch, self.runtime.num_replicas

    def contribution(value):
      # Per-example values sum to the global mean; per-replica scalars average over replicas.
      value = tf.cast(value, tf.float32)
      return tf.reduce_sum(value) / global_batch if value.shape.rank else value / replicas

    def gradients(batch, key, replica_id):
      rng = BatchRng(key, replica_id, self.per_replica_batch, replicas)
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(phase.variables)
        per_example, metrics = phase.loss(batch, rng)
        if per_example.shape.rank != 1 or per_example.shape[0] not in (None, self.per_replica_batch):
          raise ValueError(f"phase {phase.name}: the loss must have one value per example, shape "
                           f"[{self.per_replica_batch}], but has shape {per_example.shape}")
        loss = contribution(per_example)
        scaled = optimizer.scale_loss(loss) if self.runtime.loss_scaling else loss
      grads = tape.gradient(scaled, phase.variables)
      # Lookups (class embeddings) give sparse gradients; dense ones all-reduce and unscale the same on every
      # strategy, and the tables they come from are small.
      grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
      missing = [v.name for v, g in zip(phase.variables, grads) if g is None]
      if missing:
        raise ValueError(f"phase {phase.name}: no gradient for {', '.join(missing)}")
      out = {f"{phase.name}/loss": loss}
      for name, value in metrics.items():
        if isinstance(value, tuple):  # (numerator, denominator) per example: a ratio of sums, e.g. a bucket mean
          out[name + _NUM] = tf.reduce_sum(tf.cast(value[0], tf.float32))
          out[name + _DEN] = tf.reduce_sum(tf.cast(value[1], tf.float32))
        else:
          out[name] = contribution(value)
      return out, grads

    return gradients

  def _replica_phases(self, phases, diagnostics, batch, position):
    """Runs phases for one replica; with ``diagnostics``, also the global gradient norm and gradients."""
    context = tf.distribute.get_replica_context()
    key = tf.stack([tf.constant(self.seed, tf.int64), position])
    out, gradients = {}, {}
    for phase in phases:
      optimizer = self.model.optimizers[phase.optimizer]
      metrics, grads = self._grads[phase.name](batch, key, context.replica_id_in_sync_group)
      if diagnostics:
        # The optimizer sums gradients over replicas inside apply_gradients; this extra sum, on diagnostic steps
        # only, gives the norm of the gradient actually applied (unscaled when loss scaling is on).
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        scale = tf.cast(optimizer.dynamic_scale, tf.float32) if self.runtime.loss_scaling else 1.0
        total = [tf.cast(g, tf.float32) / scale for g in total]
        metrics[f"grad_norm/{phase.name}"] = tf.linalg.global_norm(total) / self.runtime.num_replicas
        gradients[phase.name] = total
      optimizer.apply_gradients(zip(grads, phase.variables))
      self._phase_runs[phase.name].assign_add(1)
      out.update(metrics)
    return out, gradients

  def _replica_ema(self, beta):
    for ema, var in self.model.ema_pairs:
      ema.assign(var + (ema - var) * tf.cast(beta, var.dtype))

  # ---- cross-replica, inside the compiled call

  def ema_beta(self):
    """EMA decay per step from the half-life in kimg (for the current stage's batch), with the ramp-up limiting it
    early in training."""
    halflife = tf.constant(float(self.config.ema_halflife_kimg) * 1000.0, tf.float64)
    if self.config.get("ema_rampup") is not None:
      halflife = tf.minimum(halflife, tf.cast(self.nimg, tf.float64) * float(self.config.ema_rampup))
    beta = tf.pow(tf.constant(0.5, tf.float64), self.global_batch / tf.maximum(halflife, 1e-8))
    return tf.cast(beta, tf.float32)

  def _accumulate(self, name, value):
    if name not in self._accumulators:
      with tf.init_scope():
        self._accumulators[name] = (tf.Variable(0.0, trainable=False), tf.Variable(0.0, trainable=False))
    total, count = self._accumulators[name]
    total.assign_add(value)
    count.assign_add(1.0)

  def _run_segment(self, phases, batch, step, position, diagnostics=False):
    """Runs a group of phases on every replica; returns (all metrics finite, gradients when diagnostics)."""
    strategy = self.runtime.strategy
    per_replica, gradients = strategy.run(functools.partial(self._replica_phases, phases, diagnostics),
                                          args=(batch, position))
    finite = tf.constant(True)
    reduced = {}
    for name, value in per_replica.items():
      value = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
      self._accumulate(name, value)
      reduced[name] = value
      finite = tf.logical_and(finite, tf.math.is_finite(value))
    # Model state that follows global statistics (ADA's p, the path-length mean) is updated here, from the
    # step's metrics reduced over all replicas, outside any compiled region.
    self.model.update_state(step, self.nimg, reduced)
    # Summed gradients are the same on every replica: keep the first local copy.
    return finite, tf.nest.map_structure(lambda g: strategy.experimental_local_results(g)[0], gradients)

  def _next_batch(self, iterator, previous_step_done):
    """The next distributed batch, and the seconds the step waited for it (including the copy to the devices).

    The clock starts when the previous step has finished, and the returned wait is what the step's counter and
    random key hang on, so no work of the step runs before its batch arrives: the interval is idle time, not
    time the executor spent on other ready work.
    """
    with tf.control_dependencies([previous_step_done]):
      start = tf.timestamp()
    with tf.control_dependencies([start]):
      batch = next(iterator)
    with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
      waited = tf.timestamp() - start
    self._input_wait.assign_add(waited)
    return batch, waited

  def _one_step(self, iterator, previous_step_done, diagnostics=False):
    """One training step; returns (all metrics finite, the new step counter value, diagnostic gradients).

    With ``diagnostics``, the phases that run every step also report their global gradient norm and return
    their summed gradients (lazy phases are logged by their losses only).
    """
    strategy = self.runtime.strategy
    batch, waited = self._next_batch(iterator, previous_step_done)
    with tf.control_dependencies([waited]):
      step = tf.identity(self.step)
    position = step + self.position_offset
    finite = tf.constant(True)
    gradients = {}
    for interval, phases in self._segments:
      if interval == 1:
        ok, grads = self._run_segment(phases, batch, step, position, diagnostics)
        gradients.update(grads)
      else:
        ok = tf.cond(step % interval == 0, lambda p=phases: self._run_segment(p, batch, step, position)[0],
                     lambda: tf.constant(True))
      finite = tf.logical_and(finite, ok)
    if self.model.ema_pairs:
      strategy.run(self._replica_ema, args=(self.ema_beta(),))
    self.nimg.assign_add(self.global_batch)
    return finite, self.step.assign_add(1), gradients

  def _train_steps(self, iterator, num_steps):
    finite = tf.constant(True)
    done = tf.constant(0, tf.int64)
    for _ in tf.range(num_steps):
      finite, done, _ = self._one_step(iterator, done)
      if not finite:
        break
    return finite

  def _diagnostic_step(self, iterator, histograms):
    finite, _, gradients = self._one_step(iterator, tf.constant(0, tf.int64), diagnostics=True)
    return finite, gradients if histograms else {}

  # ---- host

  def run(self, iterator, num_steps, diagnostics=False, histograms=False):
    """Runs up to ``num_steps`` steps in compiled calls, stopping early at the end of the current stage. Returns
    (mean metrics, finite); ``step`` tells how far it went.

    ``iterator`` must come from ``dataset()`` built in the current stage. The metrics include
    ``perf/input_wait_sec``: seconds spent waiting for input batches. With ``diagnostics``, the last step also
    measures gradient norms (``grad_norm/<phase>``); with ``histograms`` its summed gradients are kept in
    ``last_gradients`` ({phase: [numpy array per variable]}).
    """
    self.enter_stage()
    if self.stage.key != self._input_stage:
      raise ValueError(f"the training stage changed to {self.stage.name or self.stage.key}: build its input with "
                       "Trainer.dataset(source) before running it")
    num_steps = min(int(num_steps), self.steps_left_in_stage())
    for total, count in self._accumulators.values():
      total.assign(0.0)
      count.assign(0.0)
    self._input_wait.assign(0.0)
    self.last_gradients = {}
    plain = int(num_steps) - (1 if diagnostics else 0)
    finite = bool(self._train(iterator, tf.constant(plain, tf.int64))) if plain > 0 else True
    if diagnostics and finite:
      if histograms not in self._diagnostic:
        self._diagnostic[histograms] = tf.function(functools.partial(self._diagnostic_step, histograms=histograms))
      ok, gradients = self._diagnostic[histograms](iterator)
      finite = bool(ok)
      self.last_gradients = tf.nest.map_structure(lambda g: g.numpy(), gradients)
    means = {"perf/input_wait_sec": float(self._input_wait.numpy())}
    self.last_counts = {}
    for name, (total, count) in self._accumulators.items():
      if name.endswith(_DEN) or count.numpy() == 0:
        continue
      if name.endswith(_NUM):
        base = name[:-len(_NUM)]
        denominator = float(self._accumulators[base + _DEN][0].numpy())
        if denominator > 0:
          means[base] = float(total.numpy()) / denominator
          self.last_counts[base] = denominator  # weight for averaging over calls
      else:
        means[name] = float(total.numpy() / count.numpy())
        self.last_counts[name] = float(count.numpy())
    return means, finite

  def optimizer_stats(self):
    """Learning rate, loss scale and the count of updates skipped for non-finite gradients, per optimizer (host).

    An update counts as skipped when a phase ran but its (loss-scaling) optimizer did not step. Counted in this
    process: phase runs are not checkpointed, the optimizer's step count is.
    """
    stats = {}
    for name, optimizer in self.model.optimizers.items():
      inner = getattr(optimizer, "inner_optimizer", optimizer)
      stats[f"optimizer/{name}/lr"] = float(tf.convert_to_tensor(inner.learning_rate).numpy())
      if self.runtime.loss_scaling:
        stats[f"optimizer/{name}/loss_scale"] = float(optimizer.dynamic_scale.numpy())
        runs = sum(int(self._phase_runs[p.name].numpy()) for p in self.phases if p.optimizer == name)
        applied = int(inner.iterations.numpy()) - self._iterations_at_start[name]
        stats[f"optimizer/{name}/skipped_nonfinite"] = float(runs - applied)
    return stats

  def mark_start(self):
    """Records the optimizers' step counts after a restore, for ``optimizer_stats``."""
    self._iterations_at_start = {
        name: int(getattr(o, "inner_optimizer", o).iterations.numpy()) for name, o in self.model.optimizers.items()}
    for runs in self._phase_runs.values():
      runs.assign(0)

  def position(self):
    """The data-stream position of the next step, in steps of the current stage's batch B (host).

    ceil(nimg / B) + position_offset: the examples already shown, rounded up to whole batches. With one batch size
    this is the step (plus the offset); when a stage changes the batch, the new stream starts at the first whole
    batch past the examples shown (at most B - 1 examples skipped), and a run resumed inside that stage lands on
    the same position. The offset only moves when a non-finite rollback skips the data of the diverged steps.
    """
    self.enter_stage()
    return -(-int(self.nimg.numpy()) // self.global_batch) + int(self.position_offset.numpy())

  def skip_data_to(self, position):
    """Moves the data position of the next step to ``position`` (a rollback's way past the diverged data)."""
    self.position_offset.assign_add(int(position) - self.position())

  def _resolution(self):
    if self.stage.resolution:
      return pipelines.parse_resolution(self.stage.resolution)
    return pipelines.parse_resolution(self.config.resolution)

  def dataset_spec(self):
    """The TensorSpec of one replica's batch in the current stage."""
    self.enter_stage()
    self._input_stage = self.stage.key
    height, width = self._resolution()
    shape = [self.per_replica_batch, height, width, int(self.config.channels)]
    return {"image": tf.TensorSpec(shape, tf.float32), "label": tf.TensorSpec([self.per_replica_batch], tf.int32)}

  def dataset(self, source, start_step=None, resolution=None):
    """The distributed training input of the current stage, from ``start_step`` (default: ``position()``).

    ``resolution`` overrides the stage's (the grid of real images shows the target size).
    """
    self.enter_stage()
    if resolution is None:
      self._input_stage = self.stage.key
    c = self.config
    resolution = self._resolution() if resolution is None else pipelines.parse_resolution(resolution)
    return pipelines.distribute(self.runtime.strategy, source, global_batch=self.global_batch, seed=self.seed,
                                start_step=self.position() if start_step is None else start_step,
                                resolution=resolution,
                                channels=int(c.channels), flip=bool(c.flip))


# ---- config and workdir


def prepare_config(config):
  """Validates a config and fills defaults that depend on other keys. Raises UserError."""
  config = ml_collections.ConfigDict(config.to_dict())  # a private, unlocked copy
  runtime_lib.validate(config.runtime)
  require(int(config.steps) >= 0, f"--config.steps={config.steps} must be non-negative")
  require(int(config.batch_size) >= 1, f"--config.batch_size={config.batch_size} must be positive")
  for key in ("log_every", "sample_every", "checkpoint_every"):
    require(int(config[key]) >= 1, f"--config.{key}={config[key]} must be at least 1")
  require(config.on_nonfinite in ("stop", "rollback"),
          f"unknown --config.on_nonfinite={config.on_nonfinite!r}: choose stop or rollback")
  _profile_window(config)
  require(int(config.channels) in (1, 3), f"--config.channels={config.channels} must be 1 or 3")
  pipelines.parse_resolution(config.resolution)
  pipelines.InputOptions.from_config(config.get("input"))
  periodic_eval.check_config(config)
  return models.resolve(config)


def _shape_signature(config):
  keys = {"resolution": config.resolution, "channels": config.channels, "model.name": config.model.name}
  for key in models.shape_keys(config):
    keys[f"model.{key}"] = config.model.get(key)
  return keys


def check_resume_compatible(config, workdir):
  """Refuses a config that changes variable shapes of the run stored in ``workdir``."""
  path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    stored = ml_collections.ConfigDict(json.load(f))
  if stored.model.name != config.model.name:
    raise UserError(f"--workdir {workdir} holds a {stored.model.name} run, not {config.model.name}; "
                    "use a new --workdir")
  old, new = _shape_signature(stored), _shape_signature(config)
  changed = [k for k in new if old.get(k) != new[k]]
  if changed:
    k = changed[0]
    raise UserError(f"--workdir {workdir} holds a run with {k}={old.get(k)}, but this config has {k}={new[k]}; "
                    f"resume with --config.{k}={old.get(k)} or use a new --workdir")


def write_config(config, info, workdir):
  """Writes the resolved config and what the model needs to know of its data, for resume and sampling."""
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2, sort_keys=True))
  with tf.io.gfile.GFile(os.path.join(workdir, "data_info.json"), "w") as f:
    json.dump(dataclasses.asdict(info), f, indent=2)


def read_run(workdir):
  """(config, DataInfo) of the run stored in ``workdir``. Raises UserError when there is none."""
  path = os.path.join(workdir, "config.json")
  require(tf.io.gfile.exists(path), f"no run in --workdir {workdir}: {path} is missing")
  with tf.io.gfile.GFile(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with tf.io.gfile.GFile(os.path.join(workdir, "data_info.json")) as f:
    info = pipelines.DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f).items()})
  return config, info


class MetricWindow:
  """Averages the metrics of several compiled calls between two log lines (host only)."""

  def __init__(self):
    self.sums, self.counts, self.input_wait = {}, {}, 0.0

  def add(self, means, counts):
    self.input_wait += means.get("perf/input_wait_sec", 0.0)
    for name, count in counts.items():
      self.sums[name] = self.sums.get(name, 0.0) + means[name] * count
      self.counts[name] = self.counts.get(name, 0.0) + count

  def means(self):
    return {name: self.sums[name] / self.counts[name] for name in self.sums}


def _next_event(step, config, total, profile=None):
  """The next step at which the host has work: a log, samples, a checkpoint, a histogram, an evaluation, a profile
  boundary."""
  upcoming = [total] + [s for s in (profile or ()) if s > step]
  for key in ("log_every", "sample_every", "checkpoint_every", "histogram_every", "eval_every"):
    every = int(config.get(key) or 0)
    if every:
      upcoming.append((step // every + 1) * every)
  return min(upcoming)


def _profile_window(config):
  """(first, last) step of ``config.profile_steps`` ("A,B"), or None."""
  value = config.get("profile_steps")
  if not value:
    return None
  parts = [int(p) for p in str(value).replace(" ", "").split(",")] if not isinstance(value, (tuple, list)) else [
      int(p) for p in value]
  require(len(parts) == 2 and 0 <= parts[0] < parts[1],
          f"--config.profile_steps={value!r}: give two steps A,B with A < B, e.g. 100,110")
  return parts[0], parts[1]


def _due(step, every, total):
  return step % int(every) == 0 or step == total


# ---- stopping on request


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; the run saved a checkpoint at its current step and stopped."""


class StopSignals:
  """SIGTERM and SIGINT set ``requested``; the loop checks it between compiled calls. A second SIGINT interrupts
  at once (KeyboardInterrupt), for a user who doesn't want to wait for the save."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None
    self._previous = {}

  def _handle(self, number, frame):
    del frame
    if self.requested and number == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(number).name

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in self.SIGNALS:
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc):
    for number, handler in self._previous.items():
      signal.signal(number, handler)


def write_status(workdir, status, step, **extra):
  """``<workdir>/status.json``: how the last process on this run ended (for ``launch.runs list``)."""
  storage.write_json(os.path.join(workdir, "status.json"), dict(
      status=status, step=int(step), time=time.time(), host=socket.gethostname(), pid=os.getpid(), **extra))


def _dump_weights(trainer, runtime):
  """Diagnostics for distributed runs: with GENSCALE_DUMP_WEIGHTS=DIR, every worker writes its copy of the
  model's variables to DIR/worker-<index>.npz at the end of training, so copies can be compared."""
  directory = os.environ.get("GENSCALE_DUMP_WEIGHTS")
  if not directory:
    return
  os.makedirs(directory, exist_ok=True)
  values = {f"{i:04d}:{v.name}": v.numpy() for i, v in enumerate(trainer.model.variables)}
  np.savez(os.path.join(directory, f"worker-{runtime.worker_index}.npz"), **values)


# ---- the loop


def train(config, workdir, break_lock=False):
  """Trains (or resumes) the run in ``workdir`` to ``config.steps``. Returns the final metrics.

  Raises UserError for bad input (before any compute), NonFiniteLoss when a loss diverges (the last checkpoint
  stays as it was), and Preempted after saving on SIGTERM/SIGINT.
  """
  # ---- config and workdir
  config = prepare_config(config)
  total = int(config.steps)
  check_resume_compatible(config, workdir)
  done = checkpoints.committed_steps(workdir)
  if done and done[0] >= total:
    print(f"{workdir} already reached step {done[0]} (steps={total}); nothing to do", flush=True)
    return {}
  source = pipelines.open_source(config.data, config.get("input"))
  runtime = runtime_lib.create(config.runtime)
  if runtime.is_chief:
    storage.preflight(workdir)  # before anything is built; only the chief writes to the workdir
  holds_lock = lock_lib.WorkdirLock(workdir, break_stale=break_lock) if runtime.is_chief else contextlib.nullcontext()
  with holds_lock, StopSignals() as signals:
    return _train(config, workdir, runtime, source, signals)


def _train(config, workdir, runtime, source, signals):
  total = int(config.steps)

  # ---- build
  trainer = Trainer(config, runtime, source.info)
  if runtime.is_chief:
    write_config(config, source.info, workdir)
  monitor = monitor_lib.Monitor(workdir, total, 0, trainer.global_batch, enabled=runtime.is_chief)

  # ---- restore
  store = checkpoints.Store(workdir, trainer.checkpoint, config.keep_checkpoints, config.milestone_every,
                            runtime.is_chief, asynchronous=config.async_checkpoints)
  store.remove_orphans()
  store.restore_latest(warn=monitor.print)
  trainer.mark_start()
  step = int(trainer.step.numpy())
  monitor.progress.start_done = monitor.progress.done = step
  monitor.print(f"genscale: {config.model.name} on {source.info.spec} ({source.info.count} images), "
                f"{runtime.describe()}, {'resuming at step ' + str(step) if step else 'new run'} -> step {total}")
  iterator = None  # built in the loop, for the current stage

  # ---- samples: fixed latents (and labels), raw and EMA generator
  num_classes = getattr(trainer.model, "num_classes", 0)
  grid_count = int(config.sample_grid)
  labels = grid_labels(grid_count, num_classes)
  columns = num_classes if num_classes else None
  samplers = {"ema": Sampler(runtime, trainer.model, grid_count, ema=True),
              "raw": Sampler(runtime, trainer.model, grid_count, ema=False)}
  # Scores (FID, KID...) every config.eval_every steps; None when off.
  evaluation = periodic_eval.PeriodicEvaluation.from_config(config, runtime, trainer.model, source.info, workdir,
                                                            monitor.print)

  def write_samples(at):
    for kind, sampler in samplers.items():
      pixels = image_lib.grid(image_lib.to_uint8(sampler.batch([trainer.seed, 0x5A4D], labels)[:grid_count]),
                              columns)
      monitor.image_grid(at, f"samples/{kind}", pixels,
                         path=f"samples/{kind}_{at:07d}.png" if kind == "ema" else None)

  if step == 0:
    reals = next(iter(trainer.dataset(source, 0, resolution=config.resolution)))
    first = np.concatenate([r["image"].numpy() for r in runtime.strategy.experimental_local_results(reals)])
    monitor.image_grid(0, "data/reals", image_lib.grid(image_lib.to_uint8(first[:grid_count])),
                       path="samples/reals.png")
    write_samples(0)  # the starting point, so even a short run shows its grids change
  monitor.text(step, "run/config", "```\n" + config.to_json(indent=2, sort_keys=True) + "\n```")
  monitor.text(step, "run/versions", monitor_lib.versions() + f"\n- runtime: {runtime.describe()}")
  monitor.hparams(config, os.path.basename(workdir.rstrip("/")) or workdir)
  histogram_every = int(config.get("histogram_every") or 0)
  profile = _profile_window(config)

  # ---- loop: compiled calls on the devices, host work in between.
  metrics = {}
  window = MetricWindow()
  first_call = True
  rollbacks = 0
  try:
    while step < total:
      # ---- stages: a new stage (and the first call, and after a restore) gets its own input and trace.
      if trainer.enter_stage() or iterator is None:
        iterator = iter(trainer.dataset(source))
        monitor.global_batch = trainer.global_batch
        if trainer.stage.name:
          height, width = trainer._resolution()  # pylint: disable=protected-access
          monitor.print(f"stage {trainer.stage.name}: {height}x{width} images, batch {trainer.global_batch}, "
                        f"from step {step} (kimg {int(trainer.nimg.numpy()) / 1000:.1f})")
      num = min(runtime.steps_per_loop, _next_event(step, config, total, profile) - step,
                trainer.steps_left_in_stage())
      log_due = _due(step + num, config.log_every, total)
      histograms_due = bool(histogram_every) and _due(step + num, histogram_every, total)
      if profile and step == profile[0] and runtime.is_chief:
        tf.profiler.experimental.start(os.path.join(workdir, "tensorboard"))
      metrics, finite = trainer.run(iterator, num, diagnostics=log_due or histograms_due,
                                    histograms=histograms_due)
      step = int(trainer.step.numpy())
      if profile and step == profile[1] and runtime.is_chief:
        tf.profiler.experimental.stop()
        monitor.print(f"profiled steps {profile[0]}..{profile[1]}: open the Profile tab of TensorBoard")
      if not first_call:  # the first call includes tracing and compilation
        window.add(metrics, trainer.last_counts)

      # ---- non-finite losses: stop (default), or roll back to the last checkpoint and skip the bad data
      if not finite:
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
        name, value = next(iter(bad.items())) if bad else ("loss", float("nan"))
        where = f"non-finite {name}={value} at step {step - 1}"
        store.wait()
        if config.on_nonfinite != "rollback" or rollbacks >= int(config.max_rollbacks):
          latest = checkpoints.latest(workdir) if runtime.is_chief else None
          if runtime.is_chief:
            write_status(workdir, "failed: non-finite loss", step - 1, detail=where)
          raise NonFiniteLoss(f"{where}; stopped without saving, the last checkpoint ({latest or 'none'}) is intact"
                              + (f" (after {rollbacks} rollbacks)" if rollbacks else ""))
        bad_position = trainer.position() - 1
        restored = store.restore_latest(warn=monitor.print)
        if restored is None:
          raise NonFiniteLoss(f"{where}; no checkpoint to roll back to")
        trainer.skip_data_to(bad_position + 1)
        rollbacks += 1
        step = restored
        monitor.print(f"{where}: rolled back to step {restored} (rollback {rollbacks} of {config.max_rollbacks}), "
                      f"skipping the data of the diverged steps")
        iterator = iter(trainer.dataset(source, trainer.position()))
        continue

      if first_call:
        monitor.start_clock(step, int(trainer.nimg.numpy()))
        first_call = False
      monitor.advance(step)
      if histograms_due:
        weights = trainer.model.trainable_variables
        monitor.histograms(step, dict(zip(variable_names(trainer.model, weights), (v.numpy() for v in weights))),
                           "weights")
        for phase in trainer.phases:
          if phase.name in trainer.last_gradients:
            names = variable_names(trainer.model, phase.variables)
            monitor.histograms(step, dict(zip(names, trainer.last_gradients[phase.name])), f"gradients/{phase.name}")
      if _due(step, config.log_every, total):
        extra = {"progress/ema_beta": float(trainer.ema_beta().numpy())}
        extra.update(trainer.optimizer_stats())
        extra.update({f"model/{k}": float(v) for k, v in trainer.model.scalars().items()})
        monitor.log(step, window.means() or {k: v for k, v in metrics.items() if not k.startswith("perf/")},
                    input_wait_sec=window.input_wait, extra=extra, nimg=int(trainer.nimg.numpy()))
        window = MetricWindow()
      if _due(step, config.sample_every, total):
        write_samples(step)
      if _due(step, config.checkpoint_every, total):
        store.save(step)
      if evaluation is not None and evaluation.due(step, total):
        scalars = evaluation(step)
        monitor.scalars(step, scalars)
        monitor.exclude_time(scalars["perf/eval_sec"])  # img/s counts training time only

      # ---- preemption: save where we are and stop (every worker at the same step)
      if runtime.any_worker(signals.requested):
        signals.requested = signals.requested or "a stop request from another worker"
        if store.last_saved_step != step:
          store.save(step)
        store.wait()
        if runtime.is_chief:
          write_status(workdir, "preempted", step, signal=signals.requested)
        monitor.print(f"{signals.requested}: saved step {step} and stopped; rerun the same command to resume")
        runtime.any_worker(False)  # leave together (see the end of this function)
        raise Preempted(f"stopped by {signals.requested} at step {step}")

    store.wait()
    if runtime.is_chief:
      write_status(workdir, "finished", step)
    _dump_weights(trainer, runtime)
    monitor.print(f"done: step {step}, {monitor.elapsed():.0f}s in this process, workdir {workdir}")
  finally:
    store.close()
    monitor.close()
    logging.flush()
  # Workers leave together: one that exits while another still writes its last files is reported by
  # TensorFlow's coordination service as crashed, and the other then waits for it until a timeout.
  runtime.any_worker(False)
  return metrics
