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
  """In-graph (total, weight) sums of the metrics of one compiled call. Variables are made on first use."""

  def __init__(self):
    self._sums = {}

  def add(self, name, reduced):
    """Adds a metric already summed over replicas: a tensor (a mean's value) or a (numerator, denominator) pair."""
    total, weight = reduced if isinstance(reduced, tuple) else (reduced, tf.constant(1.0))
    if name not in self._sums:
      with tf.init_scope():
        self._sums[name] = (tf.Variable(0.0, trainable=False), tf.Variable(0.0, trainable=False))
    total_var, weight_var = self._sums[name]
    total_var.assign_add(total)
    weight_var.assign_add(weight)

  def reset(self):
    for total, weight in self._sums.values():
      total.assign(0.0)
      weight.assign(0.0)

  def read(self):
    """{name: Metric} of the metrics that were added since the last reset (host)."""
    out = {}
    for name, (total, weight) in self._sums.items():
      weight = float(weight.numpy())
      if weight:
        out[name] = Metric(float(total.numpy()), weight)
    return out


def value_of(reduced):
  """The value of a reduced metric for ``update_state``: a mean itself, a ratio as numerator / denominator."""
  if isinstance(reduced, tuple):
    return reduced[0] / tf.maximum(reduced[1], 1e-30)
  return reduced
