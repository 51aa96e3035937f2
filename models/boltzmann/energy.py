"""The maths of a Bernoulli restricted Boltzmann machine, as functions of its parameters (shared by the RBM and the
layers of a DBN).

Visible units v ∈ {0, 1}^D, hidden units h ∈ {0, 1}^H, weights W [D, H], visible biases b [D], hidden biases c [H]:

  E(v, h) = -b·v - c·h - vᵀW h,        p(v, h) = exp(-E(v, h)) / Z
  F(v)    = -log Σ_h exp(-E(v, h)) = -b·v - Σ_j softplus(c_j + (vᵀW)_j)      (free energy: p(v) = exp(-F(v)) / Z)
  p(h_j = 1 | v) = σ(c_j + (vᵀW)_j),   p(v_i = 1 | h) = σ(b_i + (W h)_i)

Contrastive divergence (Hinton 2002) writes the update as a loss: F(v_data) - F(v_negative), with v_negative a
Gibbs sample held fixed (no gradient through the chain). Its gradient in W is -(⟨v σ(c + vᵀW)ᵀ⟩_data -
⟨v σ(c + vᵀW)ᵀ⟩_negative): the positive minus the negative statistics of the textbook rule, with hidden
probabilities in place of samples (Hinton 2010, "A practical guide to training RBMs", section 3).

Matrix products run in the compute dtype (bfloat16 or float16 under mixed precision); every sum over units and
every probability is float32.
"""

import dataclasses

import tensorflow as tf

from models import binary


@dataclasses.dataclass(frozen=True)
class Parameters:
  """An RBM's weights [D, H], visible biases [D] and hidden biases [H] (variables or tensors, float32), and the
  dtype its matrix products run in."""
  weights: tf.Tensor
  visible_bias: tf.Tensor
  hidden_bias: tf.Tensor
  dtype: tf.DType = tf.float32

  def hidden_input(self, v):
    """c + vᵀW, float32 [n, H], for visible values v [n, D]."""
    product = tf.matmul(tf.cast(v, self.dtype), tf.cast(self.weights, self.dtype))
    return tf.cast(product, tf.float32) + self.hidden_bias

  def visible_input(self, h):
    """b + W h, float32 [n, D], for hidden values h [n, H]."""
    product = tf.matmul(tf.cast(h, self.dtype), tf.cast(self.weights, self.dtype), transpose_b=True)
    return tf.cast(product, tf.float32) + self.visible_bias

  @property
  def visible(self):
    return int(self.weights.shape[0])

  @property
  def hidden(self):
    return int(self.weights.shape[1])


def free_energy(params, v):
  """F(v) [n] for visible values v [n, D] (binary, or probabilities in [0, 1])."""
  v = tf.cast(v, tf.float32)
  return -tf.linalg.matvec(v, params.visible_bias) - tf.reduce_sum(tf.nn.softplus(params.hidden_input(v)), axis=-1)


def hidden_probabilities(params, v):
  return tf.sigmoid(params.hidden_input(v))


def visible_probabilities(params, h):
  return tf.sigmoid(params.visible_input(h))


def gibbs(params, v, sweeps, hidden_uniforms, visible_uniforms, first=0):
  """``sweeps`` Gibbs sweeps v -> h -> v from visible states v [n, D]; returns the last binary v.

  ``hidden_uniforms(i)`` [n, H] and ``visible_uniforms(i)`` [n, D] give sweep i's uniform draws (e.g.
  ``BatchRng.per_step``); sweeps are numbered from ``first``. One ``tf.while_loop``, so XLA compiles it whatever
  the number of sweeps.
  """

  def sweep(i, v):
    h = binary.sample_bits(hidden_probabilities(params, v), hidden_uniforms(first + i))
    return i + 1, binary.sample_bits(visible_probabilities(params, h), visible_uniforms(first + i))

  _, v = tf.while_loop(lambda i, _: i < sweeps, sweep, (tf.constant(0), tf.cast(v, tf.float32)))
  return v


def pseudo_log_likelihood(params, v):
  """Σ_i log p(v_i | v_-i) [n] for binary v [n, D]: every pixel flipped in turn, exactly (not a one-pixel
  estimate scaled by D). log p(v_i | v_-i) = log σ(F(v with i flipped) - F(v)).

  Memory: an [n, D, H] tensor; keep n small (an evaluation batch per replica).
  """
  v = tf.cast(v, tf.float32)
  x = params.hidden_input(v)  # [n, H]
  flip = 1.0 - 2.0 * v  # +1 where a pixel turns on, -1 where it turns off
  x_flipped = x[:, None, :] + flip[:, :, None] * tf.cast(params.weights, tf.float32)[None, :, :]  # [n, D, H]
  f = free_energy(params, v)
  f_flipped = (-(tf.linalg.matvec(v, params.visible_bias)[:, None] + flip * params.visible_bias)
               - tf.reduce_sum(tf.nn.softplus(x_flipped), axis=-1))  # [n, D]
  return tf.reduce_sum(tf.math.log_sigmoid(f_flipped - f[:, None]), axis=-1)


def log_partition_by_enumeration(params):
  """log Z exactly, by summing over every hidden configuration: for tiny RBMs (H ≤ ~20) in tests.

  log Z = log Σ_h exp(c·h) Π_i (1 + exp(b_i + (W h)_i)), in float64.
  """
  hidden = params.hidden
  codes = tf.range(2**hidden)
  h = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(codes[:, None], tf.range(hidden)[None, :]), 1),
              tf.float64)
  w = tf.cast(params.weights, tf.float64)
  terms = (tf.linalg.matvec(h, tf.cast(params.hidden_bias, tf.float64))
           + tf.reduce_sum(tf.nn.softplus(tf.matmul(h, w, transpose_b=True)
                                          + tf.cast(params.visible_bias, tf.float64)), axis=-1))
  return tf.reduce_logsumexp(terms)
