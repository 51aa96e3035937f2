"""What the classic models share: bits in, an exact log-likelihood out, one phase of exact NLL (see
models/classic/__init__.py)."""

import keras
import tensorflow as tf

from genscale.shapes import parse_resolution
from models import base
from models import binary

OPTIMIZERS = ("adam", "sgd")


def optimizer(model_config):
  """Adam at ``model.lr``, or plain SGD (whose step is proportional to the gradient: tests compare steps with it)."""
  rate = float(model_config.lr)
  if model_config.optimizer == "sgd":
    return keras.optimizers.SGD(learning_rate=rate)
  return keras.optimizers.Adam(learning_rate=rate)


def categorical(probabilities, uniforms):
  """Inverse-CDF draws: int32 [...] indices of ``probabilities`` [..., K] (rows summing to 1) for ``uniforms``
  [...] in [0, 1). Index k comes out when cdf[k-1] <= u < cdf[k]; the last index takes any rounding remainder."""
  cdf = tf.cumsum(probabilities, axis=-1)[..., :-1]
  return tf.reduce_sum(tf.cast(cdf <= uniforms[..., None], tf.int32), axis=-1)


class BinaryImageModel(base.GenerativeModel):
  """What the three classic models share: bits in, exact log-likelihood out, one phase of exact NLL.

  A subclass sets ``phase_name`` and ``stream`` and provides ``log_prob(bits)`` (float32 [b, D] in {0, 1} -> [b]
  nats), ``sample(rng)`` (-> pixel probabilities [b, D]) and the ``parameters`` it trains.
  """

  likelihood_method = "exact"
  samples_from_prior = True
  phase_name = None  # metric prefix: "<phase_name>/nll_nats"
  stream = None  # random stream prefix: "<stream>/binarize"

  def __init__(self, config, name):
    super().__init__(name=name)
    height, width = parse_resolution(config.resolution)
    self.image_shape = (height, width, int(config.channels))
    self.dims = height * width * int(config.channels)
    self.num_classes = 0  # unconditional: labels are ignored
    self.optimizers = {name: optimizer(config.model)}
    self.ema_pairs = []

  @property
  def parameters(self):
    raise NotImplementedError

  def log_prob(self, bits):
    raise NotImplementedError

  def sample(self, rng):
    raise NotImplementedError

  def likelihood_data(self):
    """The likelihood is of binary pixels: images in {-1, 1}."""
    return "binary"

  def log_likelihood(self, x, labels=None):
    """Exact log p(x) in nats, float32 [b], of images ``x`` [b, H, W, C] in {-1, 1}; ``labels`` are ignored."""
    del labels
    return self.log_prob(binary.to_bits(x))

  def loss(self, batch, rng):
    x = binary.dynamic_binarize(batch["image"], rng, f"{self.stream}/binarize")
    nll = -self.log_likelihood(x)
    return nll, {f"{self.phase_name}/nll_nats": nll}

  def phases(self, stage):
    del stage
    return [base.Phase(self.phase_name, self.name, list(self.parameters), self.loss)]

  def generate(self, rng, labels=None, ema=True, **options):
    """Pixel probabilities of the last ancestral step as images in [-1, 1] (see each model's ``sample``)."""
    del labels, ema  # unconditional, no EMA copy
    self.check_sampling_options(**options)
    return binary.to_image(self.sample(rng), self.image_shape)
