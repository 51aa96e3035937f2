"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation between two domains A and B.

Two generators, G: A -> B (``generator_ab``) and F: B -> A (``generator_ba``), and a discriminator per domain
(``discriminator_a`` tells real A from F(b), ``discriminator_b`` real B from G(a)). The data is two unpaired
streams (``unpaired:SPEC_A|SPEC_B``, pipelines/sources.py): a batch's ``image`` is from A and ``image_b`` from B.

One training step, on a batch of a's and b's:
  G  both generators together (one Adam over both, as in the reference code): least-squares adversarial terms
     (D_B(G(a)) - 1)² + (D_A(F(b)) - 1)², each the mean over the discriminator's patches; the cycle terms
     λ (|F(G(a)) - a|₁ + |G(F(b)) - b|₁), means over pixels; and the identity terms
     λ_id λ (|G(b) - b|₁ + |F(a) - a|₁), which keep colours where nothing needs to change (λ = ``cycle_weight``,
     10; λ_id = ``identity_weight``, 0.5).
  D  both discriminators: ½ (D(real) - 1)² + ½ D(fake)² each (the paper halves D's loss to slow it down), where
     the fakes are G(a) and F(b) from the generators just updated, through the image pools (models/cyclegan/pool.py).
Adam(2e-4, β1 = 0.5) for both; the learning rate stays for the first ``decay_start`` of the run (a half), then
falls linearly to 0 at the last step.

The reference computes D's fakes in the generators' forward pass, before their update; here the D phase runs the
generators again (without gradients) after it, so each phase is a function of the batch alone. It costs two
generator passes of the step's roughly eleven.

``translate(images, direction)`` maps a batch either way; TensorBoard shows a | G(a) | F(G(a)) and
b | F(b) | G(F(b)) of fixed training images. There is no prior to sample from.
"""

import keras
import tensorflow as tf

from genscale.errors import UserError, require, require_choice
from genscale.shapes import parse_resolution
from models import base
from models import layers
from models import losses
from models.cyclegan import networks
from models.cyclegan.pool import ImagePool

DIRECTIONS = ("AtoB", "BtoA")


def resolve(config):
  """Fills the size-dependent defaults (residual blocks, discriminator layers) and checks the model section."""
  m = config.model
  height, width = parse_resolution(config.resolution)
  downsamplings = int(m.downsamplings)
  require(downsamplings >= 1 and height % 2**downsamplings == 0 and width % 2**downsamplings == 0,
          f"--config.resolution={config.resolution}: the generator halves the image {downsamplings} times "
          f"(--config.model.downsamplings); use sides divisible by {2**downsamplings}")
  if m.get("residual_blocks") is None:
    m.residual_blocks = 9 if min(height, width) >= 256 else 6  # the paper's choice by resolution
  if m.get("d_layers") is None:
    m.d_layers = 3 if min(height, width) >= 64 else 2
  require(int(m.residual_blocks) >= 0, f"--config.model.residual_blocks={m.residual_blocks} must be 0 or more")
  require(int(m.d_layers) >= 1 and min(height, width) % 2**int(m.d_layers) == 0,
          f"--config.model.d_layers={m.d_layers} halves the image that many times: use 1 to "
          f"{max(min(height, width).bit_length() - 3, 1)} for {config.resolution}")
  for key in ("cycle_weight", "identity_weight", "lr"):
    require(float(m[key]) >= 0, f"--config.model.{key}={m[key]} must not be negative")
  require(0.0 <= float(m.decay_start) <= 1.0,
          f"--config.model.decay_start={m.decay_start} is a fraction of the run: use 0 to 1")
  require(int(m.pool_size) >= 0, f"--config.model.pool_size={m.pool_size} must be 0 (off) or more")
  require(str(config.data).startswith("unpaired:"),
          f"CycleGAN translates between two domains: set --config.data=unpaired:SPEC_A|SPEC_B (got {config.data})")
  return config


class ConstantThenLinear(keras.optimizers.schedules.LearningRateSchedule):
  """``rate`` until step ``start``, then linearly down to 0 at step ``end``."""

  def __init__(self, rate, start, end):
    self.rate, self.start, self.end = float(rate), int(start), int(end)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    decayed = 1.0 - (step - self.start) / max(self.end - self.start, 1)
    return self.rate * tf.clip_by_value(decayed, 0.0, 1.0)

  def get_config(self):
    return {"rate": self.rate, "start": self.start, "end": self.end}


def _l1(x, y):
  """Per-example mean absolute difference."""
  return tf.reduce_mean(tf.abs(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)), axis=[1, 2, 3])


def _patch_mean(values):
  return tf.reduce_mean(values, axis=[1, 2])


class CycleGAN(base.GenerativeModel):
  """The CycleGAN family model; ``config.model`` must have been through ``resolve``."""

  shape_keys = ("g_width", "d_width", "downsamplings", "residual_blocks", "d_layers", "pool_size")
  samples_from_prior = False
  domains = 2

  def __init__(self, config, info, hardware):
    super().__init__(name="cyclegan")
    m = config.model
    require(info.domain_b is not None,
            f"CycleGAN needs two domains of data: set --config.data=unpaired:SPEC_A|SPEC_B (got {info.spec})")
    dtype = hardware.compute_dtype
    channels = int(config.channels)
    keys = layers.Keys(config.seed)
    generator = lambda name: networks.Generator(channels, int(m.g_width), int(m.downsamplings),
                                                int(m.residual_blocks), keys, dtype, name)
    discriminator = lambda name: networks.PatchDiscriminator(channels, int(m.d_width), int(m.d_layers), keys, dtype,
                                                             name)
    self.generator_ab, self.generator_ba = generator("generator_ab"), generator("generator_ba")
    self.discriminator_a, self.discriminator_b = discriminator("discriminator_a"), discriminator("discriminator_b")
    self.cycle_weight = float(m.cycle_weight)
    self.identity_weight = float(m.identity_weight) * self.cycle_weight
    image_shape = (*parse_resolution(config.resolution), channels)
    self.pool_a = ImagePool(m.pool_size, image_shape, "pool_a")  # F(b)'s, for discriminator_a
    self.pool_b = ImagePool(m.pool_size, image_shape, "pool_b")  # G(a)'s, for discriminator_b
    steps = int(config.steps)
    schedule = lambda: ConstantThenLinear(float(m.lr), round(float(m.decay_start) * steps), steps)
    self.optimizers = {name: keras.optimizers.Adam(schedule(), beta_1=float(m.beta1), beta_2=float(m.beta2))
                       for name in ("g", "d")}
    self.ema_pairs = []

  # ---- training

  def generator_loss(self, batch, rng):
    del rng
    a, b = batch["image"], batch["image_b"]
    fake_b, fake_a = self.generator_ab(a), self.generator_ba(b)
    adversarial = (_patch_mean(tf.square(self.discriminator_b(fake_b) - 1.0))
                   + _patch_mean(tf.square(self.discriminator_a(fake_a) - 1.0)))
    cycle = _l1(self.generator_ba(fake_b), a) + _l1(self.generator_ab(fake_a), b)
    loss = adversarial + self.cycle_weight * cycle
    metrics = {"G/adversarial": adversarial, "G/cycle_l1": cycle}
    if self.identity_weight > 0:
      identity = _l1(self.generator_ab(b), b) + _l1(self.generator_ba(a), a)
      loss += self.identity_weight * identity
      metrics["G/identity_l1"] = identity
    return loss, metrics

  def discriminator_loss(self, batch, rng):
    a, b = batch["image"], batch["image_b"]
    fake_b, pool_b = self.pool_b.query(tf.stop_gradient(self.generator_ab(a)), rng, "pool_b")
    fake_a, pool_a = self.pool_a.query(tf.stop_gradient(self.generator_ba(b)), rng, "pool_a")
    real_b, fake_b = self.discriminator_b(b), self.discriminator_b(fake_b)
    real_a, fake_a = self.discriminator_a(a), self.discriminator_a(fake_a)
    loss = (_patch_mean(losses.discriminator_loss("lsgan", real_b, fake_b))
            + _patch_mean(losses.discriminator_loss("lsgan", real_a, fake_a)))
    metrics = {"D/real_a": _patch_mean(real_a), "D/fake_a": _patch_mean(fake_a), "D/real_b": _patch_mean(real_b),
               "D/fake_b": _patch_mean(fake_b), **pool_a, **pool_b}
    return loss, metrics

  def phases(self, stage):
    del stage  # one stage
    generators = [*self.generator_ab.trainable_variables, *self.generator_ba.trainable_variables]
    discriminators = [*self.discriminator_a.trainable_variables, *self.discriminator_b.trainable_variables]
    return [base.Phase("G", "g", generators, self.generator_loss),
            base.Phase("D", "d", discriminators, self.discriminator_loss)]

  def update_state(self, stage, step, nimg, metrics):
    del stage, step, nimg
    self.pool_a.update(metrics, "pool_a")
    self.pool_b.update(metrics, "pool_b")

  # ---- using it

  def translate(self, images, direction="AtoB"):
    """Images in [-1, 1] of one domain -> the other's: G for ``AtoB``, F for ``BtoA``."""
    require_choice(direction, DIRECTIONS, "--direction")
    return (self.generator_ab if direction == "AtoB" else self.generator_ba)(images)

  def preview(self, images, labels, rng, image_b=None, label_b=None):
    del labels, rng, label_b
    fake_b = self.generator_ab(images)
    out = {"a_to_b_to_a": tf.concat([images, fake_b, self.generator_ba(fake_b)], axis=2)}
    if image_b is not None:
      fake_a = self.generator_ba(image_b)
      out["b_to_a_to_b"] = tf.concat([image_b, fake_a, self.generator_ab(fake_a)], axis=2)
    return out

  def generate(self, rng, labels=None, ema=True, **options):
    raise UserError("CycleGAN translates images, it has no prior to sample from: use python -m launch.translate")
