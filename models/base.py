"""What every model family provides to the training loop, and the randomness it draws from.

A model is a ``tf.Module`` holding its networks, their EMA copies, its optimizers (``model.optimizers``, a dict)
and any extra state, all tracked for checkpointing. It describes one training step of a ``Stage`` as a list of
``Phase``s (``phases(stage)``, a pure function of the stage), run in order: each phase computes a per-example loss
for one replica, and the loop takes its gradients with respect to the phase's variables and applies them with the
phase's optimizer. A phase with ``interval=k`` runs on steps divisible by k (lazy regularisation); its loss should
already be scaled by k.

Models know nothing of strategies, loss scaling, files or the runtime config: the loop calls phases once per
replica, randomness comes from a ``BatchRng`` that the loop builds for each replica, and all a model learns of the
machine is a ``Hardware`` (compute dtype, replica count, XLA, device kind). The loop never changes a model's
optimizers; it wraps them for loss scaling on its own side.
"""

import dataclasses
from typing import Callable, Sequence

import tensorflow as tf

from genscale.errors import UserError
from genscale.random import normal_values, uniform_values
from models import layers


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
      the logging window (e.g. the mean loss of the examples in one noise-level bucket). A ``Statistic`` is not
      logged: it is summed over replicas and handed to ``update_state`` (a codebook's assignment counts).
    interval: run on steps where ``step % interval == 0``.
  """
  name: str
  optimizer: str
  variables: Sequence[tf.Variable]
  loss: Callable
  interval: int = 1


@dataclasses.dataclass(frozen=True)
class Statistic:
  """A tensor of any shape that a phase's loss returns among its metrics for ``update_state`` alone.

  ``total`` is this replica's share; the loop sums it over the replicas (so a sum over this replica's examples
  becomes a sum over the global batch) and passes the sum to ``update_state`` under the metric's name. It is never
  logged. Example: the number of times each codebook vector was chosen, [K]. Rows that must stay apart (one per
  example of the global batch) use ``BatchRng.global_rows``.
  """
  total: tf.Tensor


@dataclasses.dataclass(frozen=True)
class Stage:
  """A part of a run whose steps share one input shape and one traced step (e.g. one resolution of a growing GAN).

  The loop asks the model for the stage of every step (``GenerativeModel.stage``); when it changes, the loop
  rebuilds its input at the stage's resolution and batch and runs a step traced for that stage: its phases come from
  ``phases(stage)``, so Python values of the stage (a growing GAN's level) are constants of its trace. No compiled
  call crosses a stage's end.

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

  @classmethod
  def alone(cls, seed):
    """The randomness of one example drawn by itself from ``seed`` (an int64 scalar): the key (seed, 0) and a batch
    of one. What ``launch.sample --seeds`` and an exported model's seed s draw, whatever else is drawn with it."""
    return cls(tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]), 0, 1, 1)

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

  def per_step(self, shape, stream, kind="normal"):
    """A function i -> values [b, *shape] for step i of a loop (a sampler's steps, a Gibbs chain's sweeps).

    Step i's values are block i of one draw of shape [steps, global_batch, *shape] (this replica's counters offset
    by i blocks), so they are the same on one device and on many, and i may be a tensor inside a while loop.
    ``kind``: "normal" (standard normal) or "uniform" ([0, 1)).
    """
    draw = {"normal": normal_values, "uniform": uniform_values}[kind]
    counters = self._counters(shape)
    block = self.global_batch * _size(shape)

    def values(i):
      return draw(self.key, stream, counters + tf.cast(i, tf.int64) * block)

    return values

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

  def global_rows(self, values):
    """[global_batch, ...]: this replica's rows ``values`` [b, ...] at their place in the global batch, zeros
    elsewhere. Summed over replicas (a ``Statistic``) it is the global batch's values, however the batch is split.
    A one-hot product rather than a pad, so the shape stays static under XLA with a traced replica id."""
    mine = tf.one_hot(tf.cast(self.replica_id, tf.int32), self.num_replicas, dtype=values.dtype)
    spread = mine[:, None] * tf.reshape(values, [1, -1])  # [replicas, b * row size]
    return tf.reshape(spread, [self.global_batch, *values.shape[1:]])

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


@dataclasses.dataclass(frozen=True)
class Hardware:
  """All a model may know of the machine it is built for; the runtime fills it (``Runtime.hardware``).

  Attributes:
    compute_dtype: the dtype of activations (float32, float16 or bfloat16); variables stay float32.
    replicas: replicas in sync, over all workers.
    xla: whether the per-replica functions are XLA-compiled.
    device: "cpu", "gpu" or "tpu".
  """
  compute_dtype: tf.DType = tf.float32
  replicas: int = 1
  xla: bool = False
  device: str = "cpu"


# Variables that the replicas write with equal values (EMA weights, model state set between phases): not trainable,
# and with ONLY_FIRST_REPLICA aggregation an assignment is legal in replica and cross-replica context alike.
_SHARED_STATE = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def state_variable(initial_value, name, dtype=None):
  """A checkpointed, non-trainable variable for model state that ``update_state`` sets (ADA's p, lod...).

  Create it in the model's ``__init__`` (under the strategy's scope, where the loop builds models).
  """
  return tf.Variable(initial_value, name=name, dtype=dtype, **_SHARED_STATE)


def conditional_classes(model_config, info):
  """The number of classes a model conditions on: the data's when ``model.conditional`` is set, else 0.

  Raises UserError when the model should be conditional but the data has no labels.
  """
  if not model_config.get("conditional"):
    return 0
  if not info.num_classes:
    raise UserError(f"--config.model.conditional=true but {info.spec} has no labels; set it to false")
  return int(info.num_classes)


def _ema_creator(next_creator, **kwargs):
  kwargs.update(_SHARED_STATE)
  return next_creator(**kwargs)


def ema_copy(build_network, source, seed):
  """An EMA copy of the network ``source``: ``build_network(keys)`` builds the same architecture, its weights
  start as copies of ``source``'s. Returns (copy, [(ema variable, source variable)]) for ``ema_pairs``.

  The loop updates EMA weights inside the replica context, where every replica computes the same value.
  """
  with tf.variable_creator_scope(_ema_creator):
    copy = build_network(layers.Keys(seed))  # same shapes; the values are overwritten below
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
    optimizers: dict name -> Keras optimizer; the loop builds them (and wraps them, on its side, for loss scaling).
    ema_pairs: list of (ema_variable, source_variable) updated by the loop after every step.

  The constructor is ``cls(config, info, hardware)``: the resolved run config, the ``DataInfo`` of the training
  data and a ``Hardware``.
  """

  # Config keys (in the ``model`` section) that fix variable shapes; a resume that changes them is refused.
  shape_keys = ()

  @classmethod
  def check_hardware(cls, config, hardware):
    """Raises UserError for settings that this hardware can't run (e.g. a per-replica batch too small for a
    minibatch-statistics group). Called once the runtime exists, before the model is built. Default: nothing."""
    del config, hardware

  def phases(self, stage):
    """The training step of ``stage`` as an ordered list of Phase: a pure function of the stage (the loop calls it
    once per stage, when it first needs the stage, and keeps the result)."""
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
      raise UserError(f"{type(self).__name__} sampling takes no options; got --{', --'.join(sorted(options))}")

  # Whether ``generate`` draws from a prior; a plain autoencoder has none (its output is its reconstructions).
  samples_from_prior = True
  # Domains of training data: 2 for a translator of unpaired images (its batches also hold "image_b", "label_b").
  domains = 1

  # ---- serving (launch/serving.py exports these as SavedModel signatures)

  # Shape of one example's latent for ``from_latent`` (e.g. (latent_dim,)), or None: no latent-to-image signature.
  latent_shape = None
  # Whether ``from_latent`` also draws randomness of its own (StyleGAN2's noise images), so it takes a seed too.
  latent_needs_seed = False

  def serving_inputs(self):
    """Per-example settings that the exported signatures take besides seed and label: {name: (dtype, default)}.

    Each is a scalar per example (a [N] input of the signature), e.g. StyleGAN2's truncation or a diffusion
    sampler's steps and guidance. The default is what ``launch.sample`` uses when the option is not given.
    """
    return {}

  def serving_range(self, name):
    """The values a serving input accepts: {"min": a, "max": b} (either may be missing), which ``launch.serve``
    checks (a bad request gets an error) and the demo page offers. Default: no bounds."""
    del name
    return {}

  def serve(self, rng, labels=None, ema=True, **inputs):
    """``generate`` with the ``serving_inputs`` as scalar tensors (graph values, not Python numbers).

    Called for one example at a time (a ``BatchRng`` of one row), so the image of seed s is the one
    ``launch.sample --seed=s --num=1`` draws. Default: ``generate``, for models that take no serving inputs.
    """
    del inputs
    return self.generate(rng, labels, ema=ema)

  def sample_latent(self, rng):
    """The latents ``generate`` feeds ``from_latent``: standard normal [b, *latent_shape], stream "sample/z"."""
    return rng.normal(list(self.latent_shape), "sample/z")

  def from_latent(self, z, rng=None, labels=None, ema=True, **inputs):
    """Images in [-1, 1] from latents ``z`` [b, *latent_shape]; ``rng`` when ``latent_needs_seed``."""
    raise NotImplementedError(f"{type(self).__name__} has no latent-to-image map")

  def preview(self, images, labels, rng):
    """What the model shows in TensorBoard besides samples, computed from a fixed batch of training images.

    Runs per replica (compiled, like ``generate``) on this replica's rows ``images`` [b, H, W, C] and ``labels``
    [b] (a two-domain model also gets ``image_b`` and ``label_b``). Returns {name: values [b, ...]}: images in [-1, 1] of any width (an input | reconstruction pair side by
    side, an interpolation strip) become a grid with one row of values per line, and two-value rows
    (``[b, 2]``: 2-D latent means) a point map coloured by label. Default: nothing.
    """
    del images, labels, rng
    return {}

  def scalars(self):
    """Model-specific values to log (name -> tensor), e.g. fade-in alpha or ADA p."""
    return {}

  def pretrained(self):
    """{module: run directory}: parts of the model whose weights a new run takes from another run's newest
    checkpoint before its first step (a transformer's VQ-VAE tokenizer). Default: none."""
    return {}

  def stage(self, nimg):
    """The ``Stage`` of the step that starts after ``nimg`` images were shown (host; a pure function of nimg, so a
    resumed run finds the same stages). Default: the whole run is one stage at the config's resolution and batch.
    """
    del nimg
    return Stage()

  def update_state(self, stage, step, nimg, metrics):
    """Updates model state from global statistics; called after every group of phases that ran.

    Runs inside the compiled training call of ``stage`` in cross-replica context (inside XLA only with
    ``runtime.xla_whole_step``): ``metrics`` are the group's metrics already reduced over all replicas (global
    means, see ``Phase``; a ratio as its value; a ``Statistic`` as its sum over replicas), ``step`` the step being
    trained and ``nimg`` the images seen before it. Assign to ``state_variable``s
    created in ``__init__``, e.g. ADA's augmentation probability or the path-length mean. Default: nothing.
    """
    del stage, step, nimg, metrics


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
