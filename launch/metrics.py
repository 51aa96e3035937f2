"""Training metrics from the phases to TensorBoard, as one mergeable type.

A phase reports each metric either per example (a mean over the global batch), as a per-replica scalar (a mean
over the replicas), or as a pair (numerator, denominator) per example, a ratio of sums such as the mean loss of the
examples in one noise-level bucket. Inside the compiled call every kind becomes a ``(total, weight)`` pair summed
over the steps of the call: a mean adds (its value, 1) per step, a ratio adds (Σ numerator, Σ denominator). On
the host the pair is a ``Metric``, and metrics of several calls merge by adding their pairs, so the value logged
for a window of steps is the same whether it ran as one compiled call or as many.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Metric:
  """A mean or a ratio of sums over some steps: ``value = total / weight``. Host only."""
  total: float
  weight: float

  @property
  def value(self):
    return self.total / self.weight if self.weight else float("nan")

  def merge(self, other):
    return Metric(self.total + other.total, self.weight + other.weight)


def merge(window, metrics):
  """``window`` ({name: Metric}) with ``metrics`` merged in, as a new dict."""
  out = dict(window)
  for name, metric in metrics.items():
    out[name] = out[name].merge(metric) if name in out else metric
  return out


def values(metrics):
  """{name: float value} of {name: Metric}."""
  return {name: metric.value for name, metric in metrics.items()}


def replica_contribution(value, global_batch, num_replicas):
  """One replica's share of a phase metric, so that the SUM over replicas is the global value (runs per replica).

  Per-example values [b] sum to the global-batch mean; a scalar is averaged over the replicas; a pair (numerator
  [b], denominator [b]) is summed, both parts.
  """
  if isinstance(value, tuple):
    return tuple(tf.reduce_sum(tf.cast(part, tf.float32)) for part in value)
  value = tf.cast(value, tf.float32)
  return tf.reduce_sum(value) / global_batch if value.shape.rank else value / num_replicas


class Accumulators:
  """In-graph (total, weight) sums of the metrics of one compiled call.

  The sums live in two vectors made up front, a slot per metric name, given out when a trace first adds that
  name. A variable made during a trace would make TensorFlow trace the whole training call a second time (the
  first trace only creates variables), and tracing is most of a small run's start-up.
  """

  CAPACITY = 512

  def __init__(self):
    self._slots = {}  # name -> index, in the order the traces first added them
    self._totals = tf.Variable(tf.zeros([self.CAPACITY]), trainable=False, name="metric_totals")
    self._weights = tf.Variable(tf.zeros([self.CAPACITY]), trainable=False, name="metric_weights")

  def add(self, name, reduced):
    """Adds a metric already summed over replicas: a tensor (a mean's value) or a (numerator, denominator) pair."""
    total, weight = reduced if isinstance(reduced, tuple) else (reduced, tf.constant(1.0))
    if name not in self._slots:
      if len(self._slots) == self.CAPACITY:
        raise ValueError(f"more than {self.CAPACITY} training metrics; metric {name!r} has no slot "
                         f"(raise metrics.Accumulators.CAPACITY)")
      self._slots[name] = len(self._slots)
    index = [[self._slots[name]]]
    self._totals.scatter_nd_add(index, tf.reshape(tf.cast(total, tf.float32), [1]))
    self._weights.scatter_nd_add(index, tf.reshape(tf.cast(weight, tf.float32), [1]))

  def reset(self):
    self._totals.assign(tf.zeros_like(self._totals))
    self._weights.assign(tf.zeros_like(self._weights))

  def read(self):
    """{name: Metric} of the metrics that were added since the last reset (host)."""
    totals, weights = self._totals.numpy(), self._weights.numpy()
    return {name: Metric(float(totals[i]), float(weights[i])) for name, i in self._slots.items() if weights[i]}


def value_of(reduced):
  """The value of a reduced metric for ``update_state``: a mean itself, a ratio as numerator / denominator."""
  if isinstance(reduced, tuple):
    return reduced[0] / tf.maximum(reduced[1], 1e-30)
  return reduced
