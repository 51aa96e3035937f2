"""The fully visible sigmoid belief network (FVSBN; Neal 1992, "Connectionist learning of belief networks"; Frey
1998, "Graphical Models for Machine Learning and Digital Communication"): a Bayesian network over the pixels in
raster order in which each pixel is a logistic regression on the pixels before it,

  p(x_i = 1 | x_<i) = sigmoid(b_i + sum_{j<i} W_ij x_j),        x in {0, 1}^D,

with W strictly lower-triangular (a D x D variable whose diagonal and upper triangle are masked out, so they get no
gradient and never matter). The chain rule makes the likelihood exact, a sum of D cross-entropies:

  log p(x) = sum_i log Bern(x_i; sigmoid(b_i + (W x)_i)),

all D conditionals in one matrix product (the mask keeps x_j, j >= i, out of pixel i's logit). ``model.l2`` adds
l2 * sum W² to every example's loss (a Gaussian prior on the weights: the ~D²/2 weights overfit a few thousand
digits). Sampling is ancestral: D sequential steps, pixel i drawn from its conditional given the pixels already
drawn, in one ``tf.while_loop`` (static shapes, XLA-compiled).
"""

import tensorflow as tf

from models import binary
from models.classic.common import BinaryImageModel


def strictly_lower(weights):
  """``weights`` [D, D] with the diagonal and everything above it set to 0: row i reads only pixels j < i."""
  lower = tf.linalg.band_part(weights, -1, 0)
  return tf.linalg.set_diag(lower, tf.zeros_like(tf.linalg.diag_part(lower)))


def conditional_logits(bits, weights, bias):
  """Logits of p(x_i = 1 | x_<i) for every pixel i: float32 [b, D] for bits [b, D], weights [D, D], bias [D]."""
  return tf.matmul(bits, strictly_lower(weights), transpose_b=True) + bias[None, :]


def log_prob(bits, weights, bias):
  """Exact log p(x) [b] in nats of bits [b, D]: the sum of the D conditionals' log-probabilities."""
  return binary.bernoulli_log_prob(bits, conditional_logits(bits, weights, bias))


def sample(weights, bias, uniforms):
  """Ancestral sampling in raster order: (bits [b, D], conditionals [b, D]) for uniforms [b, D] in [0, 1).

  Step i computes p_i = p(x_i = 1 | x_<i) from the bits drawn so far and sets x_i = [u_i < p_i]; the returned
  conditionals are the p_i of every step. One ``tf.while_loop`` of D steps: pixel i's uniform is column i of
  ``uniforms``, drawn in one piece beforehand (each pixel has its own; none is reused)."""
  masked = strictly_lower(weights)
  dims = int(weights.shape[0])
  zeros = tf.zeros_like(uniforms)

  def step(i, bits, probabilities):
    p = tf.sigmoid(tf.linalg.matvec(bits, tf.gather(masked, i)) + tf.gather(bias, i))  # [b]
    bit = binary.sample_bits(p, tf.gather(uniforms, i, axis=1))
    here = tf.one_hot(i, dims)[None, :]  # writes column i; a [b, D] update keeps every shape static
    return i + 1, bits + bit[:, None] * here, probabilities + p[:, None] * here

  _, bits, probabilities = tf.while_loop(lambda i, *_: i < dims, step, (tf.constant(0), zeros, zeros),
                                         maximum_iterations=dims)
  return bits, probabilities


class FVSBN(BinaryImageModel):
  """The fully visible sigmoid belief network over the pixels of ``config.resolution``."""

  shape_keys = ()  # the weights' shape follows the resolution and channels alone, which every resume checks
  phase_name = "FVSBN"
  stream = "fvsbn"

  def __init__(self, config, info, hardware):
    del info, hardware  # unconditional; float32 maths on any hardware
    super().__init__(config, name="fvsbn")
    self.l2 = float(config.model.l2)
    self.weights = tf.Variable(tf.zeros([self.dims, self.dims]), name="weights")
    self.bias = tf.Variable(tf.zeros([self.dims]), name="bias")

  @property
  def parameters(self):
    return [self.weights, self.bias]

  def log_prob(self, bits):
    return log_prob(bits, self.weights, self.bias)

  def loss(self, batch, rng):
    nll, metrics = super().loss(batch, rng)
    if not self.l2:
      return nll, metrics
    penalty = self.l2 * tf.reduce_sum(tf.square(strictly_lower(self.weights)))
    return nll + penalty, metrics

  def ancestral(self, rng):
    """(bits, conditionals) [b, D] of ancestral samples (stream "fvsbn/sample": one uniform per pixel)."""
    return sample(self.weights, self.bias, rng.uniform([self.dims], "fvsbn/sample"))

  def sample(self, rng):
    """The conditionals p(x_i = 1 | x_<i) [b, D] along an ancestral sample: the sample's bits, shaded by how
    sure each step was (a pixel drawn against its odds shows grey, not white)."""
    return self.ancestral(rng)[1]

  def sample_bits(self, rng):
    """The bits [b, D] of ancestral samples."""
    return self.ancestral(rng)[0]
