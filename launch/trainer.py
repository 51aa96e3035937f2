"""The compiled inner loop: a model, its optimizers and counters under a strategy, and ``Trainer.run(n)``.

One training step, for the global batch:
  for each phase of the model in the current stage (in order; a phase with interval k only on steps divisible by k):
    per replica: loss and gradients (XLA-compiled when runtime.xla), then the optimizer update, which sums the
    gradients over replicas (losses are divided by the global batch, so the sum is the global mean);
    the model's ``update_state`` from the phase group's metrics and statistics reduced over replicas;
  per replica: the EMA of the generator's weights;
  the step and image counters advance.
``run(n)`` runs n steps in one compiled call (two when the last step measures gradients). A non-finite loss ends
the call at that step; what happens next is the caller's policy.

Stages (launch/stages.py): the Trainer keeps one traced step per stage (traced on first use) and the input of the
current stage; ``run`` enters the stage of the next step, rebuilds the input when the stage or the data position
changed (a restore, a rollback), and never crosses a stage's end.

Loss scaling (mixed_float16) is the Trainer's own business: it wraps the model's optimizers in Keras'
``LossScaleOptimizer`` on its side and checkpoints the wrappers beside the model.
"""

import dataclasses
import functools
from typing import Optional

import tensorflow as tf

from genscale.errors import require
from launch import metrics as metrics_lib
from launch.stages import Stages, interval_groups, unique_variables
from models.base import BatchRng, Stage, Statistic
import models
import pipelines

# What the last step of a call can measure, besides the losses: the global gradient norm of each phase, and the
# summed gradients themselves (for histograms).
GRAD_NORMS, GRADIENTS = "grad_norms", "gradients"


@dataclasses.dataclass
class CallResult:
  """What one ``Trainer.run`` call did (host values).

  Attributes:
    step, nimg: the counters after the call.
    finite: False when a loss became NaN or infinite; the call stopped after that step.
    metrics: {name: Metric} of the call's steps.
    gradients: {phase: [numpy array per variable]} of the last step, when measured.
    stage: the stage the call trained.
    stage_start: (step, nimg) where that stage began, when this call was its first in this process; else None.
  """
  step: int
  nimg: int
  finite: bool
  metrics: dict
  gradients: dict
  stage: Stage
  stage_start: Optional[tuple] = None

  def values(self):
    """{name: float} of the metrics."""
    return metrics_lib.values(self.metrics)


class Trainer:
  """A model, its optimizers and counters under a strategy, its training input, and the compiled training call.

  Args:
    config: the resolved ConfigDict (see ``launch.rundir.prepare_config``).
    runtime: the Runtime.
    source: the training data source (``pipelines.open_source``).
  """

  def __init__(self, config, runtime, source):
    self.config, self.runtime, self.source = config, runtime, source
    self.seed = int(config.seed)
    replicas = runtime.num_replicas
    batch = int(config.batch_size)
    require(batch % replicas == 0,
            f"--config.batch_size {batch} is not divisible by {replicas} replicas; use a multiple of {replicas}")
    strategy = runtime.strategy
    with strategy.scope():  # every variable is created under the strategy's scope
      self.model = models.build(config, source.info, runtime.hardware)
      if runtime.loss_scaling:
        import keras  # pylint: disable=g-import-not-at-top
        self.optimizers = {name: keras.optimizers.LossScaleOptimizer(optimizer)
                           for name, optimizer in self.model.optimizers.items()}
      else:
        self.optimizers = dict(self.model.optimizers)
      # A stage may train only some of the variables (a growing GAN's current layers): every optimizer is built
      # for what it updates in any stage.
      self.stages = Stages(self.model, config, replicas)
      every_phase = self.stages.every_phase()
      for name, optimizer in self.optimizers.items():
        optimizer.build(unique_variables(v for p in every_phase if p.optimizer == name for v in p.variables))
      counter = dict(dtype=tf.int64, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.step = tf.Variable(0, name="step", **counter)
      self.nimg = tf.Variable(0, name="nimg", **counter)
      # Data and random draws follow the stream position step + position_offset; the offset only moves when
      # a non-finite rollback skips the data of the diverged steps.
      self.position_offset = tf.Variable(0, name="position_offset", **counter)
      self._phase_runs = {p.name: tf.Variable(0, name=f"runs_{p.name}", **counter) for p in every_phase}
    parts = dict(model=self.model, step=self.step, nimg=self.nimg, position_offset=self.position_offset)
    if runtime.loss_scaling:
      parts["loss_scale"] = tf.train.Checkpoint(**self.optimizers)
    self.checkpoint = tf.train.Checkpoint(**parts)
    self._metrics = metrics_lib.Accumulators()
    self.stage = None  # the stage of the last call
    self._compiled = {}  # stage key -> (gradient functions by phase, training call, diagnostic calls)
    self._input, self._input_at = None, None  # the iterator, and the (stage key, position) it reads next
    self.mark_start()

  # ---- stages (host)

  def next_stage(self):
    """The stage of the next step."""
    return self.stages.at(self.nimg.numpy())

  @property
  def global_batch(self):
    """Images per step in the current stage (before the first call: the first stage's)."""
    return self.stages.batch(self.stage or self.next_stage())

  @property
  def per_replica_batch(self):
    return self.global_batch // self.runtime.num_replicas

  def steps_left_in_stage(self):
    """Steps until the next step's stage ends (at least 1; a large number when it never ends)."""
    return self.stages.steps_left(self.nimg.numpy())

  def _enter(self, stage):
    """Makes ``stage`` current: its batch, phases and compiled functions (traced on first call, so a stage never
    reuses another stage's trace). Returns True when the stage changed."""
    if self.stage is not None and stage.key == self.stage.key:
      return False
    self.stage = stage
    self.phases = self.stages.phases(stage)
    self._segments = interval_groups(self.phases)
    if stage.key not in self._compiled:
      # functools.partial gives each stage's functions their own identity: TensorFlow counts traces per Python
      # function, and would warn of "excessive retracing" for a few traces that are one per stage by design.
      grads = {p.name: self.runtime.compile(functools.partial(self._gradient_fn(p))) for p in self.phases}
      steps = {d: self.runtime.compile_step(functools.partial(self._device_step, diagnostics=d)) for d in (0, 1)}
      self._compiled[stage.key] = (grads, steps, tf.function(functools.partial(self._train_steps)), {})
    self._grads, self._steps, self._train, self._diagnostic = self._compiled[stage.key]
    return True

  def trace_counts(self):
    """How many times each stage's training call has been traced: {stage key: count} (for tests)."""
    return {key: train.experimental_get_tracing_count() for key, (_, _, train, _) in self._compiled.items()}

  # ---- per replica

  def _gradient_fn(self, phase):
    """Loss and gradients of one phase for one replica. Pure: no variable writes, so XLA can compile it."""
    optimizer = self.optimizers[phase.optimizer]
    global_batch, replicas = self.global_batch, self.runtime.num_replicas

    def gradients(batch, key, replica_id):
      rng = BatchRng(key, replica_id, self.per_replica_batch, replicas)
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(phase.variables)
        per_example, metrics = phase.loss(batch, rng)
        if per_example.shape.rank != 1 or per_example.shape[0] not in (None, self.per_replica_batch):
          raise ValueError(f"phase {phase.name}: the loss must have one value per example, shape "
                           f"[{self.per_replica_batch}], but has shape {per_example.shape}")
        loss = metrics_lib.replica_contribution(per_example, global_batch, replicas)
        scaled = optimizer.scale_loss(loss) if self.runtime.loss_scaling else loss
      grads = tape.gradient(scaled, phase.variables)
      # Lookups (class embeddings) give sparse gradients; dense ones all-reduce and unscale the same on every
      # strategy, and the tables they come from are small.
      grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
      missing = [v.name for v, g in zip(phase.variables, grads) if g is None]
      if missing:
        raise ValueError(f"phase {phase.name}: no gradient for {', '.join(missing)}")
      out, statistics = {f"{phase.name}/loss": loss}, {}
      for name, value in metrics.items():
        if isinstance(value, Statistic):
          statistics[name] = tf.cast(value.total, tf.float32)
        else:
          out[name] = metrics_lib.replica_contribution(value, global_batch, replicas)
      return out, statistics, grads

    return gradients

  def _replica_phases(self, phases, diagnostics, batch, position):
    """Runs phases for one replica; returns (metrics, statistics, gradients); with ``diagnostics``, also the global
    gradient norm and gradients."""
    context = tf.distribute.get_replica_context()
    with tf.control_dependencies([position]):  # no work before the input-wait clock has read the batch's arrival
      batch = tf.nest.map_structure(tf.identity, batch)
    key = tf.stack([tf.constant(self.seed, tf.int64), position])
    out, statistics, gradients = {}, {}, {}
    for phase in phases:
      optimizer = self.optimizers[phase.optimizer]
      metrics, phase_statistics, grads = self._grads[phase.name](batch, key, context.replica_id_in_sync_group)
      statistics.update(phase_statistics)
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
    return out, statistics, gradients

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

  def _run_segment(self, phases, batch, step, position, diagnostics=False):
    """Runs a group of phases on every replica; returns (all metrics finite, gradients when diagnostics)."""
    strategy = self.runtime.strategy
    per_replica, statistics, gradients = strategy.run(functools.partial(self._replica_phases, phases, diagnostics),
                                                      args=(batch, position))
    finite = tf.constant(True)
    # Statistics (models.base.Statistic) are summed over replicas for update_state, never logged.
    reduced = {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
               for name, value in statistics.items()}
    for name, value in per_replica.items():
      value = tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), value)
      self._metrics.add(name, value)
      reduced[name] = metrics_lib.value_of(value)
      if self.runtime.loss_scaling and name.startswith("grad_norm/"):
        continue  # an overflowing float16 gradient is routine: the optimizer skips that update
      for part in tf.nest.flatten(value):
        finite = tf.logical_and(finite, tf.math.is_finite(part))
    # Model state that follows global statistics (ADA's p, the path-length mean) is updated here, from the
    # step's metrics reduced over all replicas, outside any compiled region.
    self.model.update_state(self.stage, step, self.nimg, reduced)
    # Summed gradients are the same on every replica: keep the first local copy.
    return finite, tf.nest.map_structure(lambda g: strategy.experimental_local_results(g)[0], gradients)

  def _one_step(self, iterator, previous_step_done, diagnostics=False):
    """One training step; returns (all metrics finite, the new step counter value, diagnostic gradients).

    The input-wait clock runs from the previous step's end to the batch's arrival; no work of the step starts before
    it is read (``_replica_phases``), so the wait is idle time, logged as ``perf/input_wait_fraction`` of the step.
    Not with ``runtime.deterministic``: TensorFlow's op determinism refuses to read the clock in a graph.
    """
    if self.runtime.deterministic:
      with tf.control_dependencies([previous_step_done]):
        batch = next(iterator)
      with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
        step = tf.identity(self.step)
      return self._steps[diagnostics](batch, step)
    with tf.control_dependencies([previous_step_done]):
      start = tf.timestamp()
    with tf.control_dependencies([start]):
      batch = next(iterator)
    with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
      waited = tf.timestamp() - start
    with tf.control_dependencies([waited]):
      step = tf.identity(self.step)
    finite, done, gradients = self._steps[diagnostics](batch, step)
    with tf.control_dependencies([done, finite]):  # the counter alone may be written before the losses are done
      elapsed = tf.timestamp() - start
    self._metrics.add("perf/input_wait_fraction", (tf.cast(waited, tf.float32), tf.cast(elapsed, tf.float32)))
    return finite, done, gradients

  def _device_step(self, batch, step, diagnostics=False):
    """The step's work on the devices once its batch is there: every phase group, the EMA, the counters.
    With ``runtime.xla_whole_step`` this is one XLA computation (``Runtime.compile_step``)."""
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
      self.runtime.strategy.run(self._replica_ema, args=(self.ema_beta(),))
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

  def run(self, num_steps, measure=()):
    """Runs up to ``num_steps`` steps of the next step's stage and returns a ``CallResult``.

    Stops early at the end of that stage, or after a step with a non-finite loss. ``measure`` may hold
    ``GRAD_NORMS`` (the last step logs ``grad_norm/<phase>``) and ``GRADIENTS`` (its summed gradients come back in
    ``CallResult.gradients``).
    """
    stage = self.next_stage()
    start = (int(self.step.numpy()), int(self.nimg.numpy())) if self._enter(stage) else None
    num_steps = min(int(num_steps), self.steps_left_in_stage())
    iterator = self._current_input()
    first_step = int(self.step.numpy())
    self._metrics.reset()
    diagnostics = GRAD_NORMS in measure or GRADIENTS in measure
    plain = num_steps - (1 if diagnostics else 0)
    finite = bool(self._train(iterator, tf.constant(plain, tf.int64))) if plain > 0 else True
    gradients = {}
    if diagnostics and finite:
      keep = GRADIENTS in measure
      if keep not in self._diagnostic:
        self._diagnostic[keep] = tf.function(functools.partial(self._diagnostic_step, histograms=keep))
      ok, gradients = self._diagnostic[keep](iterator)
      finite = bool(ok)
      gradients = tf.nest.map_structure(lambda g: g.numpy(), gradients)
    step = int(self.step.numpy())
    self._input_at = (stage.key, self._input_at[1] + step - first_step)
    return CallResult(step=step, nimg=int(self.nimg.numpy()), finite=finite, metrics=self._metrics.read(),
                      gradients=gradients, stage=stage, stage_start=start)

  def _current_input(self):
    """The iterator of the current stage at the data position of the next step, rebuilt when either moved."""
    at = (self.stage.key, self.position())
    if self._input is None or self._input_at != at:
      self._input, self._input_at = iter(self.dataset()), at
    return self._input

  def optimizer_stats(self):
    """Learning rate, loss scale and the count of updates skipped for non-finite gradients, per optimizer (host).

    An update counts as skipped when a phase ran but its (loss-scaling) optimizer did not step. Counted in this
    process: phase runs are not checkpointed, the optimizer's step count is.
    """
    stats = {}
    for name, optimizer in self.model.optimizers.items():
      stats[f"optimizer/{name}/lr"] = float(tf.convert_to_tensor(optimizer.learning_rate).numpy())
      if self.runtime.loss_scaling:
        stats[f"optimizer/{name}/loss_scale"] = float(self.optimizers[name].dynamic_scale.numpy())
        runs = sum(int(self._phase_runs[p.name].numpy()) for p in self.phases if p.optimizer == name)
        applied = int(optimizer.iterations.numpy()) - self._iterations_at_start[name]
        stats[f"optimizer/{name}/skipped_nonfinite"] = float(runs - applied)
    return stats

  def mark_start(self):
    """Records the optimizers' step counts after a restore, for ``optimizer_stats``."""
    self._iterations_at_start = {name: int(o.iterations.numpy()) for name, o in self.model.optimizers.items()}
    for runs in self._phase_runs.values():
      runs.assign(0)

  def position(self):
    """The data-stream position of the next step (host; see ``Stages.position``)."""
    return self.stages.position(self.nimg.numpy(), self.position_offset.numpy())

  def skip_data_to(self, position):
    """Moves the data position of the next step to ``position`` (a rollback's way past the diverged data)."""
    self.position_offset.assign_add(int(position) - self.position())

  def resolution(self, stage=None):
    """(height, width) of the images of ``stage`` (default: the next step's)."""
    return self.stages.resolution(stage or self.next_stage())

  def dataset_spec(self):
    """The TensorSpec of one replica's batch in the next step's stage."""
    stage = self.next_stage()
    height, width = self.resolution(stage)
    per_replica = self.stages.batch(stage) // self.runtime.num_replicas
    image = tf.TensorSpec([per_replica, height, width, int(self.config.channels)], tf.float32)
    spec = {"image": image, "label": tf.TensorSpec([per_replica], tf.int32)}
    return {**spec, "image_b": image, "label_b": spec["label"]} if self.source.info.domain_b else spec

  def dataset(self, start_step=None, resolution=None):
    """The distributed training input of the next step's stage, from ``start_step`` (default: ``position()``).

    ``resolution`` overrides the stage's (the grid of real images shows the target size).
    """
    stage = self.next_stage()
    c = self.config
    resolution = self.resolution(stage) if resolution is None else pipelines.parse_resolution(resolution)
    return pipelines.distribute(self.runtime.strategy, self.source, global_batch=self.stages.batch(stage),
                                seed=self.seed, start_step=self.position() if start_step is None else start_step,
                                resolution=resolution, channels=int(c.channels), flip=bool(c.flip))
