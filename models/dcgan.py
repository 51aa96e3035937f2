"""DCGAN (Radford et al. 2016) and the fully connected GAN (Goodfellow et al. 2014), with the classic GAN losses
and optional class conditioning (cGAN).

``model.architecture`` picks the networks:
  conv (default)  Generator: z (and a one-hot label for cGAN, Mirza & Osindero 2014) -> dense to 4x4 ->
      transposed convolutions that double the resolution, each followed by normalisation and ReLU -> tanh.
      Discriminator: strided convolutions with LeakyReLU(0.2), normalisation from the second layer on, then a
      linear logit.
  mlp  Generator: z (and the one-hot label) -> one Dense layer per width of ``g_mlp_widths``, each followed by
      normalisation (``g_norm``) and ReLU -> Dense to H*W*C -> tanh -> the image. Discriminator: the flattened
      image (and the one-hot label) -> one Dense layer per width of ``d_mlp_widths`` with LeakyReLU(0.2),
      normalisation from the second layer on, and dropout at rate ``d_dropout`` (default 0.5, the paper's) -> a
      linear logit. Dropout acts in the training losses only; its masks come from the step's ``BatchRng``, so a
      resumed run and any number of replicas draw the same ones. ``g_norm=batch`` is refused: a dense layer's batch
      statistics would make an image drawn alone the same for every seed.
Conditioning in D either concatenates the one-hot label to the input (``concat``, as in the cGAN paper) or adds a
projection term (``projection``, Miyato & Koyama 2018). Weights start from N(0, 0.02) as in the DCGAN paper.

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
_ARCHITECTURES = ("conv", "mlp")
_DEFAULT_DROPOUT = {"conv": 0.0, "mlp": 0.5}  # the conv critic has no dropout; 0.5 on hidden units as in the paper
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
  _resolve_architecture(m)
  if m.architecture == "conv":  # the mlp networks take any resolution
    height, width = parse_resolution(config.resolution)
    levels = _levels(height, width)
    require(min(height, width) >= 8 and height % 2**levels == 0 and width % 2**levels == 0,
            f"--config.resolution={config.resolution}: DCGAN needs sides of at least 8 that halve down to 4 "
            "(e.g. 32, 64 or 32x64)")
  return config


def _resolve_architecture(m):
  """Checks ``architecture`` and its keys; fills ``d_dropout`` from the architecture when None."""
  require_choice(m.architecture, _ARCHITECTURES, "--config.model.architecture")
  if m.get("d_dropout") is None:
    m.d_dropout = _DEFAULT_DROPOUT[m.architecture]
  rate = float(m.d_dropout)
  require(0.0 <= rate < 1.0, f"--config.model.d_dropout={m.d_dropout} must be in [0, 1)")
  require(rate == 0.0 or m.architecture == "mlp", f"--config.model.d_dropout={m.d_dropout}: only the mlp "
          "discriminator has dropout; set it to 0 or --config.model.architecture=mlp")
  if m.architecture == "mlp":
    parse_widths(m.g_mlp_widths, "g_mlp_widths")
    parse_widths(m.d_mlp_widths, "d_mlp_widths")
    # A conv generator's batch statistics also run over pixels; a dense layer's only over the batch, so one image
    # drawn alone (launch.sample --seeds, serving) would come out the same for every seed.
    require(m.g_norm != "batch", "--config.model.g_norm=batch with architecture=mlp makes an image drawn alone the "
            "same for every seed; set --config.model.g_norm=layer or none")


def parse_widths(value, key):
  """Layer widths from "256,512,1024" (or a sequence of ints). Raises UserError naming ``--config.model.<key>``."""
  items = value if isinstance(value, (tuple, list)) else str(value).replace(" ", "").split(",")
  try:
    widths = [int(w) for w in items]
  except (TypeError, ValueError):
    widths = []
  require(widths and min(widths) >= 1,
          f"--config.model.{key}={value!r} must be comma-separated layer widths, e.g. 256,512,1024")
  return widths


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


def dropout(x, rate, rng, stream):
  """Inverted dropout (Srivastava et al. 2014) of the units of ``x`` [b, units]: each is zeroed with probability
  ``rate`` and the kept ones are scaled by 1 / (1 - rate), so a unit's expected value is unchanged. The masks are
  uniform draws of ``rng`` (a ``BatchRng``) under ``stream``, a function of (seed, step, stream, example): the
  same on any number of replicas, with or without XLA, and in a resumed run. Runs per replica."""
  keep = rng.uniform([int(x.shape[-1])], stream) >= rate
  return tf.where(keep, x * tf.cast(1.0 / (1.0 - rate), x.dtype), tf.zeros_like(x))


class MLPGenerator(tf.Module):
  """The fully connected generator of Goodfellow et al. 2014 (ReLU hidden layers), ending in tanh."""

  def __init__(self, m, resolution, channels, num_classes, keys, dtype):
    super().__init__(name="generator")
    self.num_classes = num_classes
    self.image_shape = (*resolution, channels)
    sizes = [int(m.latent_dim) + num_classes, *parse_widths(m.g_mlp_widths, "g_mlp_widths")]
    self.hidden, self.norms = [], []
    for units_in, units_out in zip(sizes[:-1], sizes[1:]):
      self.hidden.append(layers.Dense(units_in, units_out, keys, init_std=_INIT_STD, dtype=dtype))
      self.norms.append(layers.normalization(m.g_norm, units_out, keys, dtype, gamma_std=_INIT_STD))
    self.to_pixels = layers.Dense(sizes[-1], math.prod(self.image_shape), keys, init_std=_INIT_STD, dtype=dtype)

  def __call__(self, z, labels=None):
    x = z
    if self.num_classes:
      x = tf.concat([z, tf.one_hot(labels, self.num_classes, dtype=z.dtype)], axis=-1)
    for dense, norm in zip(self.hidden, self.norms):
      x = tf.nn.relu(norm(dense(x)))
    return tf.reshape(tf.tanh(tf.cast(self.to_pixels(x), tf.float32)), [-1, *self.image_shape])


class MLPDiscriminator(tf.Module):
  """The fully connected discriminator of Goodfellow et al. 2014, with LeakyReLU(0.2) in place of maxout units.

  Dropout acts only when called with ``training=True`` (the training losses), with masks from ``rng``; called
  without it, the network is deterministic.
  """

  def __init__(self, m, resolution, channels, num_classes, keys, dtype):
    super().__init__(name="discriminator")
    self.num_classes = num_classes
    self.conditioning = m.conditioning if num_classes else None
    self.rate = float(m.d_dropout)
    self.pixels = math.prod(resolution) * channels
    widths = parse_widths(m.d_mlp_widths, "d_mlp_widths")
    sizes = [self.pixels + (num_classes if self.conditioning == "concat" else 0), *widths]
    self.hidden, self.norms = [], []
    for i, (units_in, units_out) in enumerate(zip(sizes[:-1], sizes[1:])):
      self.hidden.append(layers.Dense(units_in, units_out, keys, init_std=_INIT_STD, dtype=dtype))
      self.norms.append(layers.normalization("none" if i == 0 else m.d_norm, units_out, keys, dtype,
                                             gamma_std=_INIT_STD))
    self.logit = layers.Dense(widths[-1], 1, keys, init_std=_INIT_STD, dtype=dtype)
    if self.conditioning == "projection":
      self.embed = layers.Embedding(num_classes, widths[-1], keys, init_std=_INIT_STD, dtype=dtype)

  def __call__(self, images, labels=None, training=False, rng=None, stream="d/dropout"):
    """Logits [b] (float32). With ``training`` and a nonzero rate, hidden layer i drops units with masks from the
    ``BatchRng`` ``rng`` under the stream ``f"{stream}/{i}"``: give each call in a step its own ``stream``."""
    x = tf.reshape(images, [-1, self.pixels])
    if self.conditioning == "concat":
      x = tf.concat([x, tf.one_hot(labels, self.num_classes, dtype=x.dtype)], axis=-1)
    for i, (dense, norm) in enumerate(zip(self.hidden, self.norms)):
      x = _leaky(norm(dense(x)))
      if training and self.rate > 0:
        x = dropout(x, self.rate, rng, f"{stream}/{i}")
    out = tf.cast(self.logit(x)[:, 0], tf.float32)
    if self.conditioning == "projection":
      out += tf.reduce_sum(tf.cast(self.embed(labels) * x, tf.float32), axis=-1)
    return out


# Generator and discriminator classes by ``model.architecture``; both take (m, (H, W), C, classes, keys, dtype).
_NETWORKS = {"conv": (Generator, Discriminator), "mlp": (MLPGenerator, MLPDiscriminator)}


def _optimizer(m):
  if m.optimizer == "sgd":  # plain gradient descent: its step is proportional to the gradient (tests rely on it)
    return keras.optimizers.SGD(learning_rate=float(m.lr))
  if m.optimizer == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate=float(m.lr))
  return keras.optimizers.Adam(learning_rate=float(m.lr), beta_1=float(m.beta1), beta_2=float(m.beta2))


class DCGAN(base.GenerativeModel):
  """DCGAN family model; ``config.model`` must have been through ``resolve``."""

  shape_keys = ("latent_dim", "g_width", "d_width", "g_norm", "d_norm", "kernel", "conditional", "conditioning",
                "architecture", "g_mlp_widths", "d_mlp_widths")

  def __init__(self, config, info, hardware):
    super().__init__(name="dcgan")
    m = config.model
    compute_dtype = hardware.compute_dtype
    self.loss_kind = m.loss
    self.latent_dim = int(m.latent_dim)
    self.num_classes = base.conditional_classes(m, info)
    self.gp_weight = float(m.gp_weight)
    self.r1_gamma = float(m.r1_gamma)
    # Runs stored before the mlp networks have neither key: they are conv runs without dropout.
    generator_cls, discriminator_cls = _NETWORKS[m.get("architecture", "conv")]
    self.d_dropout = float(m.get("d_dropout") or 0.0)
    keys = layers.Keys(config.seed)
    args = (m, parse_resolution(config.resolution), int(config.channels), self.num_classes)
    self.generator = generator_cls(*args, keys, compute_dtype)
    if m.loss == "wgan":
      clip = float(m.clip)

      def clipped(next_creator, **kwargs):
        kwargs["constraint"] = lambda w: tf.clip_by_value(w, -clip, clip)
        return next_creator(**kwargs)

      with tf.variable_creator_scope(clipped):
        self.discriminator = discriminator_cls(*args, keys, compute_dtype)
    else:
      self.discriminator = discriminator_cls(*args, keys, compute_dtype)
    self.generator_ema, self.ema_pairs = base.ema_copy(lambda k: generator_cls(*args, k, compute_dtype),
                                                       self.generator, config.seed)
    self.optimizers = {"g": _optimizer(m), "d": _optimizer(m)}
    self.n_critic = int(m.n_critic)

  def _fake_labels(self, rng, stream):
    return rng.integers([], stream, self.num_classes) if self.num_classes else None

  def _critic(self, images, labels, rng, stream):
    """D's logits inside a training loss: with dropout (the mlp discriminator), its masks from ``rng`` under
    ``stream``, one stream per call of the step."""
    if self.d_dropout > 0:
      return self.discriminator(images, labels, training=True, rng=rng, stream=stream)
    return self.discriminator(images, labels)

  def discriminator_loss(self, batch, rng):
    real, labels = batch["image"], batch.get("label") if self.num_classes else None
    fake_labels = self._fake_labels(rng, "d/label")
    fake = self.generator(rng.normal([self.latent_dim], "d/z"), fake_labels)
    real_logits = self._critic(real, labels, rng, "d/dropout/real")
    fake_logits = self._critic(fake, fake_labels, rng, "d/dropout/fake")
    loss = losses.discriminator_loss(self.loss_kind, real_logits, fake_logits)
    metrics = {"D/loss_game": loss, "D/real": real_logits, "D/fake": fake_logits}
    if self.loss_kind == "wgan-gp":
      critic = lambda x: self._critic(x, labels, rng, "d/dropout/gp")
      penalty = losses.gradient_penalty(critic, real, fake, rng.uniform([], "d/gp_eps"))
      metrics["D/gradient_penalty"] = penalty
      loss += self.gp_weight * penalty
    if self.r1_gamma > 0:
      # The masks of the real logits: the penalty smooths the same thinned network that scored the reals.
      r1 = losses.r1_penalty(lambda x: self._critic(x, labels, rng, "d/dropout/real"), real)
      metrics["D/r1"] = r1
      loss += 0.5 * self.r1_gamma * r1
    return loss, metrics

  def generator_loss(self, batch, rng):
    del batch
    fake_labels = self._fake_labels(rng, "g/label")
    fake = self.generator(rng.normal([self.latent_dim], "g/z"), fake_labels)
    return losses.generator_loss(self.loss_kind, self._critic(fake, fake_labels, rng, "g/dropout")), {}

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
