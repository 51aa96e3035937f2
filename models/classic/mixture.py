"""A mixture of K products of Bernoullis over binary images: the simplest latent-variable model of them.

An image x in {0, 1}^D comes from one of K components, chosen with probability pi = softmax(mixing logits); given
component k its pixels are independent, pixel i on with probability sigmoid(theta_ki):

  log p(x) = logsumexp_k ( log pi_k + sum_i log Bern(x_i; sigmoid(theta_ki)) )
           = logsumexp_k ( log pi_k + x . theta_k - sum_i softplus(theta_ki) )

since log Bern(x; sigmoid(t)) = x t - softplus(t). The sum over the K components is exact, so is the likelihood; it
is trained by gradient on it (the gradient is EM's expected complete-data gradient, weighted by the posterior
responsibilities). With K = 1 it is the product of Bernoullis of the pixel means.

Sampling draws a component k ~ pi and shows its mean image sigmoid(theta_k): the probabilities the pixels are drawn
with (``binary.sample_bits`` of it would be the sampled bits), which read as a digit where the bits are noise.
"""

import tensorflow as tf

from models import binary
from models import layers
from models.classic.common import BinaryImageModel, categorical

# Pixel logits start at N(-3, 0.1²): every pixel nearly off, the components nearly alike. Gradient training lets
# some components lose all their images (their gradient is weighted by their responsibilities); from all pixels
# off, about 3 times as many stay in use as from N(-1, 0.5²) (about 50 of 64 against 16 at lr 0.1; 152 nats held
# out against 164).
_INIT_MEAN, _INIT_STD = -3.0, 0.1


def component_log_probs(bits, pixel_logits):
  """log p(x | k) for every component: float32 [b, K] for bits [b, D] in {0, 1} and pixel logits [K, D]."""
  on = tf.matmul(bits, pixel_logits, transpose_b=True)
  return on - tf.reduce_sum(tf.nn.softplus(pixel_logits), axis=-1)[None, :]


def log_prob(bits, mixing_logits, pixel_logits):
  """Exact log p(x) [b] in nats of bits [b, D] under the mixture (mixing logits [K], pixel logits [K, D])."""
  log_weights = tf.nn.log_softmax(mixing_logits)[None, :]
  return tf.reduce_logsumexp(log_weights + component_log_probs(bits, pixel_logits), axis=-1)


def responsibilities(bits, mixing_logits, pixel_logits):
  """p(k | x) [b, K]: which component explains each image."""
  log_weights = tf.nn.log_softmax(mixing_logits)[None, :]
  return tf.nn.softmax(log_weights + component_log_probs(bits, pixel_logits), axis=-1)


class BernoulliMixture(BinaryImageModel):
  """A mixture of ``model.components`` products of Bernoullis over the pixels."""

  shape_keys = ("components",)
  phase_name = "Mixture"
  stream = "mixture"

  def __init__(self, config, info, hardware):
    del info, hardware  # unconditional; float32 maths on any hardware
    super().__init__(config, name="mixture")
    k = int(config.model.components)
    keys = layers.Keys(config.seed)
    self.mixing_logits = tf.Variable(tf.zeros([k]), name="mixing_logits")
    noise = tf.random.stateless_normal([k, self.dims], seed=keys(), stddev=_INIT_STD, alg="philox")
    self.pixel_logits = tf.Variable(noise + _INIT_MEAN, name="pixel_logits")

  @property
  def parameters(self):
    return [self.mixing_logits, self.pixel_logits]

  def log_prob(self, bits):
    return log_prob(bits, self.mixing_logits, self.pixel_logits)

  def sample_components(self, rng):
    """k ~ pi per example: int32 [b] (stream "mixture/component")."""
    u = rng.uniform([], "mixture/component")
    return categorical(tf.nn.softmax(self.mixing_logits)[None, :], u)

  def sample(self, rng):
    """The mean image sigmoid(theta_k) [b, D] of a component k drawn from pi."""
    return tf.gather(tf.sigmoid(self.pixel_logits), self.sample_components(rng))

  def sample_bits(self, rng):
    """Images' bits [b, D]: k ~ pi, then every pixel ~ Bern(sigmoid(theta_ki)) (stream "mixture/pixels")."""
    means = self.sample(rng)
    return binary.sample_bits(means, rng.uniform([self.dims], "mixture/pixels"))
