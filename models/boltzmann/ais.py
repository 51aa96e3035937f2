"""Annealed importance sampling (Neal 2001) of an RBM's partition function, as Salakhutdinov & Murray (2008) do it.

The chain anneals from a base-rate model A (no weights, visible biases b_A = the log-odds of the data's pixel
means, so it already draws the right amount of ink) to the RBM B through the distributions

  f_β(v) = exp((1 - β) b_A·v + β b·v) Π_j (1 + exp(β (c_j + (vᵀW)_j))),      0 = β_0 < β_1 < ... < β_K = 1,

whose normaliser at β = 0 is Z_A = 2^H Π_i (1 + exp(b_A,i)) and at β = 1 the RBM's Z. Each run starts from an
exact draw of A, multiplies its weight by f_βk(v) / f_βk-1(v) at the current state and moves the state with one
Gibbs sweep that leaves f_βk invariant (h ~ σ(β (c + vᵀW)), v ~ σ((1 - β) b_A + β (b + W h))). Then
Z_B / Z_A ≈ the mean of the M runs' weights. The log weights are summed in float64 (14,500 small increments).
"""

import numpy as np
import tensorflow as tf

from models import binary
from models.boltzmann import energy

# Salakhutdinov & Murray's schedule: 500 β evenly in [0, 0.5), 4,000 in [0.5, 0.9) and 10,000 in [0.9, 1].
_SCHEDULE = ((0.5, 500), (0.9, 4000), (1.0, 10_000))


def betas(count):
  """``count`` + 1 inverse temperatures from 0 to 1 (float64): the paper's three evenly spaced pieces, each with
  its share of ``count``; ``betas(14500)`` is the paper's schedule."""
  total = sum(n for _, n in _SCHEDULE)
  pieces, start, used = [np.zeros(1)], 0.0, 0
  for i, (end, n) in enumerate(_SCHEDULE):
    steps = count - used if i == len(_SCHEDULE) - 1 else max(1, round(count * n / total))
    used += steps
    pieces.append(np.linspace(start, end, steps + 1)[1:])
    start = end
  return np.concatenate(pieces)


def log_partition_base(base_logits, hidden):
  """log Z_A of the base-rate model with ``hidden`` hidden units: Σ_i softplus(b_A,i) + H log 2."""
  return float(np.sum(np.logaddexp(0.0, np.asarray(base_logits, np.float64))) + hidden * np.log(2.0))


def _log_f_change(params, base_logits, v, x, beta_from, beta_to):
  """log f_βto(v) - log f_βfrom(v) [n] in float64, with x = c + vᵀW [n, H] (float32)."""
  x = tf.cast(x, tf.float64)
  linear = tf.linalg.matvec(tf.cast(v, tf.float64), tf.cast(params.visible_bias, tf.float64)
                            - tf.cast(base_logits, tf.float64))
  return ((beta_to - beta_from) * linear
          + tf.reduce_sum(tf.nn.softplus(beta_to * x) - tf.nn.softplus(beta_from * x), axis=-1))


def start(base_logits, uniforms):
  """The runs' first states: exact draws of the base-rate model from uniforms [M, D]; their log weights are 0."""
  v = binary.sample_bits(tf.sigmoid(tf.cast(base_logits, tf.float32))[None, :], uniforms)
  return v, tf.zeros([tf.shape(v)[0]], tf.float64)


def anneal(params, base_logits, schedule, v, log_w, first, end, hidden_uniforms, visible_uniforms):
  """Transitions ``first`` to ``end`` - 1 of the AIS runs (k ≥ 1 indexes ``schedule``, float64 [K + 1] from 0 to 1,
  see ``betas``): returns the states and log weights after them. Transition k multiplies the weights by
  f_βk(v) / f_βk-1(v) and moves v by a Gibbs sweep at β_k. Split the schedule into pieces to show progress;
  the result is the same as one call over 1..K.

  Args:
    v, log_w: the runs' states [M, D] and log weights [M] (float64), from ``start`` or the previous piece.
    hidden_uniforms, visible_uniforms: functions k -> [M, H] and [M, D] uniforms for transition k.
  """
  schedule = tf.constant(schedule, tf.float64)
  base_logits = tf.cast(base_logits, tf.float32)

  def step(k, v, log_w):
    beta_from, beta_to = schedule[k - 1], schedule[k]
    x = params.hidden_input(v)
    log_w = log_w + _log_f_change(params, base_logits, v, x, beta_from, beta_to)
    beta = tf.cast(beta_to, tf.float32)
    h = binary.sample_bits(tf.sigmoid(beta * x), hidden_uniforms(k))
    logits = (1.0 - beta) * base_logits + beta * params.visible_input(h)
    return k + 1, binary.sample_bits(tf.sigmoid(logits), visible_uniforms(k)), log_w

  _, v, log_w = tf.while_loop(lambda k, *_: k < end, step, (tf.convert_to_tensor(first), v, log_w))
  return v, log_w


def log_weights(params, base_logits, schedule, start_uniforms, hidden_uniforms, visible_uniforms):
  """The log importance weights [M] (float64) of M AIS runs over the whole ``schedule`` in one loop."""
  v, log_w = start(base_logits, start_uniforms)
  return anneal(params, base_logits, schedule, v, log_w, 1, len(schedule), hidden_uniforms, visible_uniforms)[1]
