"""DCGAN (Radford et al. 2016) with the classic GAN losses, and optional class conditioning (cGAN).

Generator: z (and a one-hot label for cGAN, Mirza & Osindero 2014) -> dense to 4x4 -> transposed convolutions
that double the resolution, each followed by normalisation and ReLU -> tanh. Discriminator: strided convolutions
with LeakyReLU(0.2), normalisation from the second layer on, then a linear logit. Conditioning in D either
concatenates one-hot label maps to the input (``concat``, as in the cGAN paper) or adds a projection term
(``projection``, Miyato & Koyama 2018). Weights start from N(0, 0.02) as in the DCGAN paper.

The loss (``model.loss``) picks the game and its usual optimiser settings when they are left unset:
  minimax, nonsaturating, lsgan, hinge: Adam(2e-4, β1=0.5, β2=0.999), one D step per G step;
  wgan:    RMSProp(5e-5), weight clipping at ±0.01, 5 critic steps per G step (Arjovsky et al.);
  wgan-gp: Adam(1e-4, β1=0, β2=0.9), penalty weight 10, 5 critic steps per G step (Gulrajani et al.).
One training step is one critic update on one batch of reals; G is updated every ``n_critic`` steps.
"""

import math

import keras
import tensorflow as tf

from genscale.errors import UserError, require, require_choice
from genscale.shapes import parse_resolution
from models import base
from models import layers
from models import losses

_PRESETS = {
    "minimax": dict(optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    "nonsaturating": dict(optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    "lsgan": dict(optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    "hinge": dict(optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    "wgan": dict(optimizer="rmsprop", lr=5e-5, beta1=0.0, beta2=0.0, n_critic=5),
    "wgan-gp": dict(optimizer="adam", lr=1e-4, beta1=0.0, beta2=0.9, n_critic=5),
}
_NORMS = ("batch", "layer", "none")
_OPTIMIZERS = ("adam", "rmsprop", "sgd")
_CONDITIONING = ("concat", "projection")
_INIT_STD = 0.02


def resolve(config):
  """Fills the loss-dependent settings left as None and checks the model section. Raises UserError."""
  m = config.model
  require(m.loss in _PRESETS, f"unknown --config.model.loss={m.loss!r}: choose one of {', '.join(_PRESETS)}")
  preset = _PRESETS[m.loss]
  for key, value in preset.items():
    if m.get(key) is None:
      m[key] = value
  require_choice(m.optimizer, _OPTIMIZERS, "--config.model.optimizer")
  require(m.g_norm in _NORMS and m.d_norm in _NORMS,
          f"--config.model.g_norm / d_norm must be one of {', '.join(_NORMS)}")
  require(m.conditioning in _CONDITIONING,
          f"unknown --config.model.conditioning={m.conditioning!r}: choose one of {', '.join(_CONDITIONING)}")
  require(int(m.n_critic) >= 1, f"--config.model.n_critic={m.n_critic} must be at least 1")
  needs_independent_examples = m.loss == "wgan-gp" or float(m.r1_gamma) > 0
  require(not (needs_independent_examples and m.d_norm == "batch"),
          f"--config.model.loss={m.loss} with r1_gamma={m.r1_gamma} penalises per-example input gradients, which "
          "batch normalisation in D mixes; set --config.model.d_norm=layer or none")
  height, width = parse_resolution(config.resolution)
  levels = _levels(height, width)
  require(min(height, width) >= 8 and height % 2**levels == 0 and width % 2**levels == 0,
          f"--config.resolution={config.resolution}: DCGAN needs sides of at least 8 that halve down to 4 "
          "(e.g. 32, 64 or 32x64)")
  return config


def _levels(height, width):
  """Number of 2x resolution steps between the 4-pixel base (shorter side) and the image."""
  return max(int(math.log2(min(height, width))) - 2, 1)


def _leaky(x):
  return tf.nn.leaky_relu(x, 0.2)


class Generator(tf.Module):

  def __init__(self, m, resolution, channels, num_classes, keys, dtype):
    super().__init__(name="generator")
    self.latent_dim = int(m.latent_dim)
    self.num_classes = num_classes
    height, width = resolution
    num_up = _levels(height, width)
    self.base_shape = (height // 2**num_up, width // 2**num_up)
    widths = [int(m.g_width) * 2**(num_up - 1 - i) for i in range(num_up)]  # e.g. 256, 128, 64 for 32x32
    self.base_width = widths[0]
    base_pixels = self.base_shape[0] * self.base_shape[1]
    self.project = layers.Dense(self.latent_dim + num_classes, base_pixels * widths[0], keys, init_std=_INIT_STD,
                                dtype=dtype)
    self.norms = [layers.normalization(m.g_norm, widths[0], keys, dtype, gamma_std=_INIT_STD)]
    self.ups = []
    for i in range(num_up):
      out = widths[i + 1] if i + 1 < num_up else channels
      self.ups.append(layers.ConvTranspose2D(widths[i], out, int(m.kernel), keys, init_std=_INIT_STD, dtype=dtype))
      if i + 1 < num_up:
        self.norms.append(layers.normalization(m.g_norm, out, keys, dtype, gamma_std=_INIT_STD))

  def __call__(self, z, labels=None):
    if self.num_classes:
      z = tf.concat([z, tf.one_hot(labels, self.num_classes, dtype=z.dtype)], axis=-1)
    x = self.project(z)
    x = tf.reshape(x, [-1, self.base_shape[0], self.base_shape[1], self.base_width])
    x = tf.nn.relu(self.norms[0](x))
    for i, up in enumerate(self.ups):
      x = up(x)
      if i + 1 < len(self.ups):
        x = tf.nn.relu(self.norms[i + 1](x))
    return tf.tanh(tf.cast(x, tf.float32))


class Discriminator(tf.Module):

  def __init__(self, m, resolution, channels, num_classes, keys, dtype):
    super().__init__(name="discriminator")
    self.num_classes = num_classes
    self.conditioning = m.conditioning if num_classes else None
    height, width = resolution
    num_down = _levels(height, width)
    widths = [int(m.d_width) * 2**i for i in range(num_down)]  # e.g. 64, 128, 256 for 32x32
    extra = num_classes if self.conditioning == "concat" else 0
    self.convs, self.norms = [], []
    prev = channels + extra
    for i, features in enumerate(widths):
      self.convs.append(layers.Conv2D(prev, features, int(m.kernel), keys, stride=2, init_std=_INIT_STD,
                                      dtype=dtype))
      self.norms.append(layers.normalization("none" if i == 0 else m.d_norm, features, keys, dtype,
                                             gamma_std=_INIT_STD))
      prev = features
    self.features = (height // 2**num_down) * (width // 2**num_down) * widths[-1]
    self.logit = layers.Dense(self.features, 1, keys, init_std=_INIT_STD, dtype=dtype)
    if self.conditioning == "projection":
      self.embed = layers.Embedding(num_classes, self.features, keys, init_std=_INIT_STD, dtype=dtype)

  def __call__(self, images, labels=None):
    x = images
    if self.conditioning == "concat":
      maps = tf.one_hot(labels, self.num_classes, dtype=x.dtype)[:, None, None, :]
      x = tf.concat([x, tf.broadcast_to(maps, tf.concat([tf.shape(x)[:3], [self.num_classes]], 0))], axis=-1)
    for conv, norm in zip(self.convs, self.norms):
      x = _leaky(norm(conv(x)))
    h = tf.reshape(x, [-1, self.features])
    out = tf.cast(self.logit(h)[:, 0], tf.float32)
    if self.conditioning == "projection":
      out += tf.reduce_sum(tf.cast(self.embed(labels) * h, tf.float32), axis=-1)
    return out


def _optimizer(m):
  if m.optimizer == "sgd":  # plain gradient descent: its step is proportional to the gradient (tests rely on it)
    return keras.optimizers.SGD(learning_rate=float(m.lr))
  if m.optimizer == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate=float(m.lr))
  return keras.optimizers.Adam(learning_rate=float(m.lr), beta_1=float(m.beta1), beta_2=float(m.beta2))


class DCGAN(base.GenerativeModel):
  """DCGAN family model; ``config.model`` must have been through ``resolve``."""

  shape_keys = ("latent_dim", "g_width", "d_width", "g_norm", "d_norm", "kernel", "conditional", "conditioning")

  def __init__(self, config, info, hardware):
    super().__init__(name="dcgan")
    m = config.model
    compute_dtype = hardware.compute_dtype
    self.loss_kind = m.loss
    self.latent_dim = int(m.latent_dim)
    self.num_classes = base.conditional_classes(m, info)
    self.gp_weight = float(m.gp_weight)
    self.r1_gamma = float(m.r1_gamma)
    keys = layers.Keys(config.seed)
    args = (m, parse_resolution(config.resolution), int(config.channels), self.num_classes)
    self.generator = Generator(*args, keys, compute_dtype)
    if m.loss == "wgan":
      clip = float(m.clip)

      def clipped(next_creator, **kwargs):
        kwargs["constraint"] = lambda w: tf.clip_by_value(w, -clip, clip)
        return next_creator(**kwargs)

      with tf.variable_creator_scope(clipped):
        self.discriminator = Discriminator(*args, keys, compute_dtype)
    else:
      self.discriminator = Discriminator(*args, keys, compute_dtype)
    self.generator_ema, self.ema_pairs = base.ema_copy(lambda k: Generator(*args, k, compute_dtype), self.generator,
                                                       config.seed)
    self.optimizers = {"g": _optimizer(m), "d": _optimizer(m)}
    self.n_critic = int(m.n_critic)

  def _fake_labels(self, rng, stream):
    return rng.integers([], stream, self.num_classes) if self.num_classes else None

  def discriminator_loss(self, batch, rng):
    real, labels = batch["image"], batch.get("label") if self.num_classes else None
    fake_labels = self._fake_labels(rng, "d/label")
    fake = self.generator(rng.normal([self.latent_dim], "d/z"), fake_labels)
    real_logits = self.discriminator(real, labels)
    fake_logits = self.discriminator(fake, fake_labels)
    loss = losses.discriminator_loss(self.loss_kind, real_logits, fake_logits)
    metrics = {"D/loss_game": loss, "D/real": real_logits, "D/fake": fake_logits}
    if self.loss_kind == "wgan-gp":
      critic = lambda x: self.discriminator(x, labels)
      penalty = losses.gradient_penalty(critic, real, fake, rng.uniform([], "d/gp_eps"))
      metrics["D/gradient_penalty"] = penalty
      loss += self.gp_weight * penalty
    if self.r1_gamma > 0:
      r1 = losses.r1_penalty(lambda x: self.discriminator(x, labels), real)
      metrics["D/r1"] = r1
      loss += 0.5 * self.r1_gamma * r1
    return loss, metrics

  def generator_loss(self, batch, rng):
    del batch
    fake_labels = self._fake_labels(rng, "g/label")
    fake_logits = self.discriminator(self.generator(rng.normal([self.latent_dim], "g/z"), fake_labels),
                                     fake_labels)
    return losses.generator_loss(self.loss_kind, fake_logits), {}

  def phases(self, stage):
    del stage  # one stage
    return [
        base.Phase("D", "d", self.discriminator.trainable_variables, self.discriminator_loss),
        base.Phase("G", "g", self.generator.trainable_variables, self.generator_loss, interval=self.n_critic),
    ]

  def generate(self, rng, labels=None, ema=True, **options):
    if options:
      raise UserError(f"DCGAN sampling takes no options, got {', '.join(options)}")
    return self.from_latent(self.sample_latent(rng), labels=labels, ema=ema)

  @property
  def latent_shape(self):
    return (self.latent_dim,)

  def from_latent(self, z, rng=None, labels=None, ema=True, **inputs):
    del rng, inputs
    net = self.generator_ema if ema else self.generator
    return net(z, labels if self.num_classes else None)
