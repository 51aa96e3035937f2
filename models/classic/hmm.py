"""A hidden Markov model over the rows of binary images (Rabiner 1989, "A tutorial on hidden Markov models and
selected applications in speech recognition").

Row t = 1..T of an image (its W pixels, bits r_t in {0, 1}^W) is emitted by a hidden state s_t in {1..K}; the states
form a Markov chain down the image:

  p(s_1 = k) = pi_k = softmax(initial logits)_k,     p(s_t = k | s_{t-1} = j) = A_jk = softmax(transition logits_j)_k,
  p(r_t | s_t = k) = prod_w Bern(r_tw; sigmoid(theta_kw))     (the same emissions on every row: homogeneous).

The likelihood sums over the K^T state paths exactly with the forward algorithm in log space (Rabiner's alpha):

  log alpha_1(k) = log pi_k + log p(r_1 | k),
  log alpha_t(k) = logsumexp_j (log alpha_{t-1}(j) + log A_jk) + log p(r_t | k),
  log p(x)       = logsumexp_k log alpha_T(k),

one ``tf.scan`` step per row, O(T K²) per image. It is trained by gradient on this exact likelihood (Adam; the
gradient of the forward recursion is what Baum-Welch's expected counts give). Sampling is ancestral: s_1 ~ pi,
s_t ~ A[s_{t-1}], and shows each row's emission probabilities sigmoid(theta_{s_t}) (the probabilities its pixels
are drawn with).
"""

import tensorflow as tf

from models import binary
from models import layers
from models.classic.common import BinaryImageModel, categorical

_TINY = 1e-37  # the smallest sum the forward step takes the log of (float32's normal range ends at 1.2e-38)
_INIT_STD = 0.5  # emission logits start at N(-1, 0.5²), transition logits at N(0, 0.5²): every state different


def emission_log_probs(rows, emission_logits):
  """log p(r_t | s_t = k): float32 [b, T, K] for row bits [b, T, W] and emission logits [K, W]."""
  on = tf.einsum("btw,kw->btk", rows, emission_logits)
  return on - tf.reduce_sum(tf.nn.softplus(emission_logits), axis=-1)


def forward(emissions, initial_logits, transition_logits):
  """log alpha_t(k) for every row: float32 [T, b, K], from emission log-probabilities [b, T, K] (T >= 2).

  A step's logsumexp_j (log alpha(j) + log A_jk) is computed as m + log sum_j exp(log alpha(j) - m) A_jk with
  m = max_j log alpha(j): one [b, K] x [K, K] matrix product instead of a [b, K, K] logsumexp (ten times faster
  on a CPU). Every term exp(log alpha(j) - m) A_jk is at most 1, so nothing overflows; a sum below 1e-37 (state k
  less likely than the best one by e^-85 or more, nothing any float32 total can see) is read as 1e-37, so log and
  gradients stay finite when a transition underflows to 0.
  """
  transitions = tf.nn.softmax(transition_logits, axis=-1)  # [from j, to k]
  first = tf.nn.log_softmax(initial_logits)[None, :] + emissions[:, 0]

  def step(alpha, emission):  # alpha [b, K] of row t-1 and the emissions [b, K] of row t
    top = tf.stop_gradient(tf.reduce_max(alpha, axis=1, keepdims=True))
    total = tf.matmul(tf.exp(alpha - top), transitions)
    return tf.math.log(tf.maximum(total, _TINY)) + top + emission

  rest = tf.scan(step, tf.transpose(emissions[:, 1:], [1, 0, 2]), initializer=first)
  return tf.concat([first[None], rest], axis=0)


def log_prob(rows, initial_logits, transition_logits, emission_logits):
  """Exact log p(x) [b] in nats of images given as row bits [b, T, W]."""
  alphas = forward(emission_log_probs(rows, emission_logits), initial_logits, transition_logits)
  return tf.reduce_logsumexp(alphas[-1], axis=-1)


def sample_states(initial_logits, transition_logits, uniforms):
  """Ancestral state paths: int32 [b, T] for uniforms [b, T] in [0, 1) (one per row: s_t by inverse CDF)."""
  transitions = tf.nn.softmax(transition_logits, axis=-1)
  first = categorical(tf.nn.softmax(initial_logits)[None, :], uniforms[:, 0])

  def step(previous, u):
    return categorical(tf.gather(transitions, previous), u)

  rest = tf.scan(step, tf.transpose(uniforms[:, 1:]), initializer=first)  # [T-1, b]
  return tf.concat([first[:, None], tf.transpose(rest)], axis=1)


class RowHMM(BinaryImageModel):
  """A hidden Markov model with ``model.states`` states, one per image row, Bernoulli pixels in the rows."""

  shape_keys = ("states",)
  phase_name = "HMM"
  stream = "hmm"

  def __init__(self, config, info, hardware):
    del info, hardware  # unconditional; float32 maths on any hardware
    super().__init__(config, name="hmm")
    k = int(config.model.states)
    self.rows, self.row_width = self.image_shape[0], self.image_shape[1] * self.image_shape[2]
    keys = layers.Keys(config.seed)
    normal = lambda shape: tf.random.stateless_normal(shape, seed=keys(), stddev=_INIT_STD, alg="philox")
    self.initial_logits = tf.Variable(tf.zeros([k]), name="initial_logits")
    self.transition_logits = tf.Variable(normal([k, k]), name="transition_logits")
    self.emission_logits = tf.Variable(normal([k, self.row_width]) - 1.0, name="emission_logits")

  @property
  def parameters(self):
    return [self.initial_logits, self.transition_logits, self.emission_logits]

  def log_prob(self, bits):
    rows = tf.reshape(bits, [-1, self.rows, self.row_width])
    return log_prob(rows, self.initial_logits, self.transition_logits, self.emission_logits)

  def sample_states(self, rng):
    """State paths [b, T] (stream "hmm/states": one uniform per row)."""
    return sample_states(self.initial_logits, self.transition_logits, rng.uniform([self.rows], "hmm/states"))

  def sample(self, rng):
    """Every row's emission probabilities sigmoid(theta_{s_t}) [b, D] along a sampled state path."""
    probabilities = tf.gather(tf.sigmoid(self.emission_logits), self.sample_states(rng))  # [b, T, W]
    return tf.reshape(probabilities, [-1, self.dims])

  def sample_bits(self, rng):
    """Images' bits [b, D]: a state path, then every pixel ~ Bern(its row's emission) (stream "hmm/pixels")."""
    return binary.sample_bits(self.sample(rng), rng.uniform([self.dims], "hmm/pixels"))
