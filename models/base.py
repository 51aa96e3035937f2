"""What every model family provides to the training loop, and the randomness it draws from.

A model is a ``tf.Module`` holding its networks, their EMA copies, its optimizers (``model.optimizers``, a dict)
and any extra state, all tracked for checkpointing. It describes one training step as a list of ``Phase``s, run in
order: each phase computes a per-example loss for one replica, and the loop takes its gradients with respect to
the phase's variables and applies them with the phase's optimizer. A phase with ``interval=k`` runs on steps
divisible by k (lazy regularisation); its loss should already be scaled by k.

Models know nothing of strategies, devices or files: the loop calls phases once per replica, and randomness comes
from a ``BatchRng`` that the loop builds for each replica.
"""

import dataclasses
from typing import Callable, Sequence

import tensorflow as tf

from genscale.random import normal_values, uniform_values


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimisation phase of a training step.

  Attributes:
    name: short name, used in metric names ("D", "G", "D_reg").
    optimizer: key into ``model.optimizers``.
    variables: the trainable variables this phase updates.
    loss: ``loss(batch, rng) -> (per_example_loss [b], metrics)``. Runs per replica. ``metrics`` maps names to
      per-example values [b] (averaged over the global batch), scalars (averaged over replicas), or a pair
      (numerator [b], denominator [b]) reported as sum(numerator) / sum(denominator) over the global batch and
      the logging window (e.g. the mean loss of the examples in one noise-level bucket).
    interval: run on steps where ``step % interval == 0``.
  """
  name: str
  optimizer: str
  variables: Sequence[tf.Variable]
  loss: Callable
  interval: int = 1


@dataclasses.dataclass(frozen=True)
class Stage:
  """A part of a run whose steps share one input shape and one traced step (e.g. one resolution of a growing GAN).

  The loop asks the model for the stage of every step (``GenerativeModel.stage``); when it changes, the loop
  rebuilds its input at the stage's resolution and batch and runs a step traced for that stage, with the batch
  and any Python values the model fixes in ``enter_stage``. No compiled call crosses a stage's end.

  Attributes:
    key: hashable; steps with equal keys share a trace.
    name: shown in log lines and errors ("16x16 fade-in"); empty for the one stage of most models.
    resolution: side of the square images the step takes, or None for ``config.resolution``.
    global_batch: images per step, or None for ``config.batch_size``.
    end_nimg: the image count from which steps belong to the next stage; None: the stage never ends.
  """
  key: object = None
  name: str = ""
  resolution: int = None
  global_batch: int = None
  end_nimg: int = None


class BatchRng:
  """Per-example random draws for one replica that don't depend on how the global batch is split.

  A draw of shape [b, *shape] is this replica's rows of a draw of shape [global_batch, *shape] made from a key
  derived from (seed, step) and the stream name. So one device and N replicas, or a run and its resumption, draw
  the same numbers for the same examples, with or without XLA (see ``genscale.random``).

  Args:
    key: int64 [2], e.g. (seed, step).
    replica_id: this replica's index in the sync group (int tensor or Python int).
    per_replica_batch: examples per replica.
    num_replicas: replicas in the sync group.
  """

  def __init__(self, key, replica_id=0, per_replica_batch=None, num_replicas=1):
    self.key = tf.cast(key, tf.int64)
    self.replica_id = replica_id
    self.per_replica_batch = per_replica_batch
    self.num_replicas = num_replicas

  @property
  def global_batch(self):
    return self.per_replica_batch * self.num_replicas

  def _counters(self, shape):
    """Global element indices of this replica's rows of a [global_batch, *shape] draw."""
    per_example = 1
    for size in shape:
      per_example *= int(size)
    first = tf.cast(self.replica_id, tf.int64) * (self.per_replica_batch * per_example)
    flat = first + tf.range(self.per_replica_batch * per_example, dtype=tf.int64)
    return tf.reshape(flat, [self.per_replica_batch, *shape])

  def normal(self, shape, stream, dtype=tf.float32):
    """Standard normal values of shape [b, *shape]."""
    return tf.cast(normal_values(self.key, stream, self._counters(shape)), dtype)

  def uniform(self, shape, stream, minval=0.0, maxval=1.0, dtype=tf.float32):
    """Uniform values in [minval, maxval) of shape [b, *shape]."""
    u = uniform_values(self.key, stream, self._counters(shape))
    return tf.cast(minval + (maxval - minval) * u, dtype)

  def integers(self, shape, stream, maxval):
    """Uniform int32 values in [0, maxval) of shape [b, *shape]."""
    u = uniform_values(self.key, stream, self._counters(shape))
    return tf.minimum(tf.cast(tf.floor(u * maxval), tf.int32), maxval - 1)

  def shared_normal(self, shape, stream):
    """Standard normal values of ``shape``, the same on every replica (not per example)."""
    counters = tf.reshape(tf.range(_size(shape), dtype=tf.int64), shape)
    return normal_values(self.key, "shared/" + stream, counters)

  def shared_uniform(self, shape, stream):
    """Uniform [0, 1) values of ``shape``, the same on every replica (not per example)."""
    counters = tf.reshape(tf.range(_size(shape), dtype=tf.int64), shape)
    return uniform_values(self.key, "shared/" + stream, counters)


def _size(shape):
  size = 1
  for s in shape:
    size *= int(s)
  return size


def ema_copy_creator(next_creator, **kwargs):
  """Variable creator for EMA networks: not trainable, and written by the first replica only.

  The loop updates EMA weights inside the replica context, where every replica computes the same value; with
  ONLY_FIRST_REPLICA aggregation that assignment is legal under every strategy.
  """
  kwargs["trainable"] = False
  kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
  return next_creator(**kwargs)


def build_ema_copy(build_network, source):
  """Builds an EMA copy of ``source`` with ``build_network()`` and copies its initial weights."""
  with tf.variable_creator_scope(ema_copy_creator):
    copy = build_network()
  pairs = list(zip(copy.variables, source.variables))
  for ema, var in pairs:
    if ema.shape != var.shape:
      raise ValueError(f"EMA copy mismatch: {ema.name} {ema.shape} vs {var.name} {var.shape}")
    ema.assign(var)
  return copy, pairs


class GenerativeModel(tf.Module):
  """The interface the loop, the sampler and the evaluator use. Subclasses set the attributes in __init__.

  Attributes:
    config: the model's ConfigDict (the ``model`` section).
    optimizers: dict name -> Keras optimizer; the loop wraps them for loss scaling and builds them.
    ema_pairs: list of (ema_variable, source_variable) updated by the loop after every step.
  """

  # Config keys (in the ``model`` section) that fix variable shapes; a resume that changes them is refused.
  shape_keys = ()

  def phases(self):
    """The training step as an ordered list of Phase."""
    raise NotImplementedError

  def generate(self, rng, labels=None, ema=True, **options):
    """Images in [-1, 1], float32 [b, H, W, C], from per-example randomness ``rng``. Runs per replica."""
    raise NotImplementedError

  def check_sampling_options(self, **options):
    """Raises ``genscale.errors.UserError`` for sampling options this model doesn't take or accept.

    Called eagerly before ``generate`` is compiled, so a bad command-line option gives a one-line error instead
    of a trace. Default: the model takes no options.
    """
    if options:
      from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
      raise UserError(f"{type(self).__name__} sampling takes no options; got --{', --'.join(sorted(options))}")

  def scalars(self):
    """Model-specific values to log (name -> tensor), e.g. fade-in alpha or ADA p."""
    return {}

  def stage(self, nimg):
    """The ``Stage`` of the step that starts after ``nimg`` images were shown (host; a pure function of nimg, so a
    resumed run finds the same stages). Default: the whole run is one stage at the config's resolution and batch.
    """
    del nimg
    return Stage()

  def enter_stage(self, stage):
    """Called on the host when ``stage`` becomes current, before its steps are traced or run. Default: nothing."""
    del stage

  def update_state(self, step, nimg, metrics):
    """Updates model state from global statistics; called after every group of phases that ran.

    Runs inside the compiled training call in cross-replica context, outside XLA: ``metrics`` are the group's
    metrics already reduced over all replicas (global means, see ``Phase``), ``step`` the step being trained and
    ``nimg`` the images seen before it. Assign to variables created in the model's ``__init__`` (under the
    strategy's scope), e.g. ADA's augmentation probability or the path-length mean. Default: nothing.
    """
    del step, nimg, metrics


def variable_names(module, variables):
  """Unique readable names for ``variables`` of ``module``: their attribute paths, e.g. ``generator/ups/2/w``.

  Variables of the project's layers are all called ``w``/``b``, so TensorFlow's own names repeat; the path from
  the model's sub-modules tells them apart. A variable found under no sub-module keeps its own name, and a name
  that would repeat gets its position appended.
  """
  is_variable = lambda v: isinstance(v, tf.Variable)
  paths = {}
  for attribute, child in sorted(vars(module).items()):
    if isinstance(child, tf.Module):
      for path, var in child._flatten(predicate=is_variable, with_path=True):  # pylint: disable=protected-access
        paths.setdefault(id(var), "/".join([attribute, *map(str, path)]))
  names, seen = [], set()
  for i, var in enumerate(variables):
    name = paths.get(id(var), var.name.split(":")[0])
    if name in seen:
      name = f"{name}_{i}"
    seen.add(name)
    names.append(name)
  return names
