"""The Progressive GAN generator and discriminator (Karras et al. 2018, Table 2), for a fixed target resolution.

Both networks hold the layers of every resolution from 4x4 to the target from the start. ``Generator.image_at``
and ``Discriminator.scores_at`` run them at one level (resolution 4 * 2^level, a Python int) with the newest
block faded in by ``alpha`` (a tensor, or the Python float 1.0 for a stable level, which skips the old path). The
training step is traced once per stage (see ``model``), so inside it the level is a Python int and only that
level's layers are in the graph; the layers of other levels get no gradient and are not updated. ``__call__`` on
either network takes the level of detail ``lod`` (see ``schedule``) as a tensor and works at the target
resolution (nearest-neighbour upsampled output, average-pooled input), through ``switch``, a ``tf.switch_case``
over the levels: one trace serves sampling at every level (it is never differentiated in training).

Every weighted layer uses the equalized learning rate (weights drawn from N(0, 1), scaled at run time by the He
constant gain / sqrt(fan_in)); activations are LeakyReLU(0.2); the generator normalises every pixel's feature
vector after each convolution; the discriminator appends the minibatch standard deviation before its last block.
Channel widths per resolution R are min(width_base / R, width_max): the paper's 512, 512, 512, 512, 256, 128, 64,
32, 16 for 4..1024 with width_base 16384 and width_max 512.
"""

import math

import tensorflow as tf

from models import layers
from models.pggan import ops
from models.pggan import schedule


def width_of(m, resolution):
  """Feature maps at a resolution (``resolution`` 2 gives the width of the discriminator's last dense layer)."""
  return max(1, min(int(m.width_base) // int(resolution), int(m.width_max)))


def _leaky(x):
  """LeakyReLU(0.2) as max(x, 0.2x): the same values, and Grappler's remapper (which fails on a LeakyRelu gradient
  inside a switch branch, logging an alarming error) leaves it alone."""
  return tf.maximum(x, tf.cast(0.2, x.dtype) * x)


def _conv(channels_in, channels_out, kernel, keys, dtype, gain=math.sqrt(2.0)):
  return layers.Conv2D(channels_in, channels_out, kernel, keys, equalized=True, gain=gain, dtype=dtype)


def switch(level, levels, branch):
  """``branch(k)`` for the runtime int32 ``level`` k in [0, levels]; an XLA conditional over all levels."""
  return tf.switch_case(level, [lambda k=k: branch(k) for k in range(levels + 1)])


class Generator(tf.Module):
  """z (and a one-hot label) -> image at the target resolution for a given level of detail.

  Args:
    m: the model config section.
    resolution: target side (power of two).
    channels: image channels.
    num_classes: label count of a conditional model (0: unconditional).
    keys: layers.Keys for initialisation.
    dtype: compute dtype.
  """

  def __init__(self, m, resolution, channels, num_classes, keys, dtype):
    super().__init__(name="generator")
    self.levels = int(math.log2(resolution)) - 2
    self.num_classes = num_classes
    self.compute_dtype = dtype
    base = width_of(m, 4)
    # The 4x4 block: the latent is treated as a 1x1 map and a 4x4 "convolution" turns it into a 4x4 map, i.e. a
    # dense layer whose He constant has the gain sqrt(2)/4 of that convolution's fan-in (as in the reference code).
    self.dense = layers.Dense(int(m.latent_dim) + num_classes, 16 * base, keys, equalized=True,
                              gain=math.sqrt(2.0) / 4.0, dtype=dtype)
    self.base_conv = _conv(base, base, 3, keys, dtype)
    self.blocks = []  # level l (resolution 4 * 2^l): upsample, conv 3x3, conv 3x3
    for level in range(1, self.levels + 1):
      res = 4 * 2**level
      self.blocks.append((_conv(width_of(m, res // 2), width_of(m, res), 3, keys, dtype),
                          _conv(width_of(m, res), width_of(m, res), 3, keys, dtype)))
    self.to_rgb = [_conv(width_of(m, 4 * 2**level), channels, 1, keys, dtype, gain=1.0)
                   for level in range(self.levels + 1)]
    self.base_width = base

  def _features(self, latent, level):
    """Feature maps at resolution 4 * 2^level."""
    x = self.dense(latent)
    x = tf.reshape(x, [-1, 4, 4, self.base_width])
    x = ops.pixel_norm(_leaky(x))
    x = ops.pixel_norm(_leaky(self.base_conv(x)))
    for conv0, conv1 in self.blocks[:level]:
      x = ops.upsample(x, 2)
      x = ops.pixel_norm(_leaky(conv0(x)))
      x = ops.pixel_norm(_leaky(conv1(x)))
    return x

  def image_at(self, latent, level, alpha):
    """float32 images at resolution 4 * 2^level (static int ``level``), the new block faded in with weight alpha.

    ``latent`` comes from ``latent()``.
    """
    if level == 0 or _stable(alpha):
      return tf.cast(self.to_rgb[level](self._features(latent, level)), tf.float32)
    previous = self._features(latent, level - 1)
    conv0, conv1 = self.blocks[level - 1]
    x = ops.pixel_norm(_leaky(conv0(ops.upsample(previous, 2))))
    x = ops.pixel_norm(_leaky(conv1(x)))
    new = self.to_rgb[level](x)
    old = ops.upsample(self.to_rgb[level - 1](previous), 2)
    return tf.cast(ops.lerp(old, new, alpha), tf.float32)

  def variables_at(self, level, fading):
    """The trainable variables ``image_at(.., level, ..)`` uses: stable, or fading in (the previous toRGB too)."""
    used = [self.dense, self.base_conv, *[conv for block in self.blocks[:level] for conv in block],
            self.to_rgb[level]] + ([self.to_rgb[level - 1]] if fading and level > 0 else [])
    return _in_module_order(self, used)

  def latent(self, z, labels=None):
    """The first layer's input: z (and the one-hot label) normalised onto the unit hypersphere."""
    latent = tf.cast(z, tf.float32)
    if self.num_classes:
      latent = tf.concat([latent, tf.one_hot(labels, self.num_classes)], axis=-1)
    return tf.cast(ops.pixel_norm(latent), self.compute_dtype)

  def __call__(self, z, labels=None, lod=0.0):
    """Images float32 [b, R, R, C] (unclipped, as in the paper) for latents z [b, latent_dim] at ``lod``."""
    latent = self.latent(z, labels)
    level, alpha = schedule.level_and_alpha(lod, self.levels)

    def branch(k):
      return ops.upsample(self.image_at(latent, k, alpha), 2**(self.levels - k))

    return switch(level, self.levels, branch)


class Discriminator(tf.Module):
  """Image at the target resolution -> critic score (and auxiliary class logits) for a given level of detail.

  Args:
    m: the model config section.
    resolution: target side (power of two).
    channels: image channels.
    num_classes: label count of a conditional model (0: unconditional).
    conditioning: "acgan" (an auxiliary classifier output, as in the paper's CIFAR-10 runs), "projection"
      (Miyato & Koyama 2018), or None.
    keys: layers.Keys for initialisation.
    dtype: compute dtype.
  """

  def __init__(self, m, resolution, channels, num_classes, conditioning, keys, dtype):
    super().__init__(name="discriminator")
    self.levels = int(math.log2(resolution)) - 2
    self.num_classes = num_classes
    self.conditioning = conditioning if num_classes else None
    self.compute_dtype = dtype
    self.group_size = int(m.mbstd_group)
    self.from_rgb = [_conv(channels, width_of(m, 4 * 2**level), 1, keys, dtype) for level in range(self.levels + 1)]
    self.blocks = [None]  # level l: conv 3x3, conv 3x3 to the next width, average-pool 2x2
    for level in range(1, self.levels + 1):
      res = 4 * 2**level
      self.blocks.append((_conv(width_of(m, res), width_of(m, res), 3, keys, dtype),
                          _conv(width_of(m, res), width_of(m, res // 2), 3, keys, dtype)))
    base, hidden = width_of(m, 4), width_of(m, 2)
    self.base_width = base
    self.final_conv = _conv(base + 1, base, 3, keys, dtype)  # +1: the minibatch stddev map
    self.dense = layers.Dense(16 * base, hidden, keys, equalized=True, dtype=dtype)
    outputs = 1 + (num_classes if self.conditioning == "acgan" else 0)
    self.out = layers.Dense(hidden, outputs, keys, equalized=True, gain=1.0, dtype=dtype)
    if self.conditioning == "projection":
      # Stored N(0, 1) and scaled at run time, like the equalized layers.
      self.embed = layers.Embedding(num_classes, hidden, keys, init_std=1.0, dtype=dtype)
      self.embed_scale = 1.0 / math.sqrt(hidden)

  def variables_at(self, level, fading):
    """The trainable variables ``scores_at(.., level, ..)`` uses: stable, or fading in (the previous fromRGB too)."""
    used = [self.from_rgb[level], *[conv for block in self.blocks[1:level + 1] for conv in block], self.final_conv,
            self.dense, self.out] + ([self.from_rgb[level - 1]] if fading and level > 0 else [])
    if self.conditioning == "projection":
      used.append(self.embed)
    return _in_module_order(self, used)

  def _block(self, x, level):
    conv0, conv1 = self.blocks[level]
    x = _leaky(conv0(x))
    x = _leaky(conv1(x))
    return ops.downsample(x, 2)

  def _head(self, x, labels):
    x = ops.minibatch_stddev(x, self.group_size)
    x = _leaky(self.final_conv(x))
    h = _leaky(self.dense(tf.reshape(x, [-1, 16 * self.base_width])))
    out = tf.cast(self.out(h), tf.float32)
    score = out[:, 0]
    if self.conditioning == "projection":
      score += tf.reduce_sum(tf.cast(self.embed(labels) * h, tf.float32), axis=-1) * self.embed_scale
    if self.conditioning == "acgan":
      return score, out[:, 1:]
    return score

  def scores_at(self, images, labels, level, alpha):
    """Scores for images already at resolution 4 * 2^level (static int ``level``), the new block faded in."""
    images = tf.cast(images, self.compute_dtype)
    x = _leaky(self.from_rgb[level](images))
    if level > 0:
      x = self._block(x, level)
      if not _stable(alpha):
        old = _leaky(self.from_rgb[level - 1](ops.downsample(images, 2)))
        x = ops.lerp(old, x, alpha)
      for lower in range(level - 1, 0, -1):
        x = self._block(x, lower)
    return self._head(x, labels)

  def __call__(self, images, labels=None, lod=0.0):
    """float32 scores [b] (and class logits [b, classes] for acgan) for images [b, R, R, C] at ``lod``."""
    level, alpha = schedule.level_and_alpha(lod, self.levels)

    def branch(k):
      return self.scores_at(ops.downsample(images, 2**(self.levels - k)), labels, k, alpha)

    return switch(level, self.levels, branch)


def _in_module_order(module, layers_used):
  """The trainable variables of ``layers_used``, in the order of ``module.trainable_variables``."""
  used = {id(v) for layer in layers_used for v in layer.trainable_variables}
  return [v for v in module.trainable_variables if id(v) in used]


def _stable(alpha):
  """True for the Python constant 1.0: a stable level, whose fade-in path needn't be built."""
  return isinstance(alpha, (int, float)) and alpha == 1


def fade_reals(images, alpha):
  """Real images during a fade, as the discriminator sees them (A.1): ``images`` at the new level's resolution
  blended with their 2x average-pooled, nearest-neighbour upsampled version by the alpha the networks use, so real
  and fake images change resolution together."""
  if _stable(alpha):
    return images
  return ops.lerp(ops.upsample(ops.downsample(images, 2), 2), images, alpha)
