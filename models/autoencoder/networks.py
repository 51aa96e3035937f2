"""Convolutional encoder and decoder shared by the autoencoder family.

Encoder: one stride-2 convolution (kernel 4, ReLU) per entry of ``model.widths`` ("32,64": 32x32 -> 16x16 -> 8x8
with 32 then 64 channels), flattened, then a dense layer to ``outputs`` values (the code, or the posterior's mean and
log-variance). With ``spatial=True`` the dense layer is left out and the last feature map, projected by a 1x1
convolution to ``outputs`` channels, is the code (VQ-VAE's grid of vectors).

Decoder: the mirror image: a dense layer to the bottleneck map (or a 1x1 convolution from a code grid), then one
stride-2 transposed convolution per width, ReLU between, the last one to the image channels (logits or means).
Class labels, when given, join the code as one-hot values (conditional models).
"""

import tensorflow as tf

from genscale.shapes import parse_resolution
from models import layers


def parse_widths(text):
  return [int(w) for w in str(text).split(",") if w.strip()]


class Encoder(tf.Module):

  def __init__(self, resolution, channels, widths, outputs, keys, dtype, num_classes=0, spatial=False):
    super().__init__(name="encoder")
    self.num_classes = num_classes
    self.spatial = spatial
    self.convs = []
    previous = channels + num_classes
    for width in widths:
      self.convs.append(layers.Conv2D(previous, width, 4, keys, stride=2, dtype=dtype))
      previous = width
    side = resolution // 2**len(widths)
    self.grid = (side, side)  # the spatial code's grid
    self.features = side * side * previous
    if spatial:
      self.out = layers.Conv2D(previous, outputs, 1, keys, gain=1.0, dtype=dtype)
    else:
      self.out = layers.Dense(self.features, outputs, keys, gain=1.0, dtype=dtype)

  def __call__(self, images, labels=None):
    x = images
    if self.num_classes:
      maps = tf.one_hot(labels, self.num_classes, dtype=x.dtype)[:, None, None, :]
      x = tf.concat([x, tf.broadcast_to(maps, tf.concat([tf.shape(x)[:3], [self.num_classes]], 0))], axis=-1)
    for conv in self.convs:
      x = tf.nn.relu(conv(x))
    if self.spatial:
      return tf.cast(self.out(x), tf.float32)
    return tf.cast(self.out(tf.reshape(x, [-1, self.features])), tf.float32)


class Decoder(tf.Module):

  def __init__(self, resolution, channels, widths, code_size, keys, dtype, num_classes=0, spatial=False):
    super().__init__(name="decoder")
    self.num_classes = num_classes
    self.spatial = spatial
    widths = list(reversed(widths))  # e.g. 64, 32
    self.side = resolution // 2**len(widths)
    self.base_width = widths[0]
    if spatial:
      self.project = layers.Conv2D(code_size, widths[0], 1, keys, dtype=dtype)
    else:
      self.project = layers.Dense(code_size + num_classes, self.side * self.side * widths[0], keys, dtype=dtype)
    self.ups = []
    for i, width in enumerate(widths):
      out = widths[i + 1] if i + 1 < len(widths) else channels
      self.ups.append(layers.ConvTranspose2D(width, out, 4, keys, gain=1.0 if i + 1 == len(widths) else 2**0.5,
                                             dtype=dtype))

  def __call__(self, code, labels=None):
    if self.spatial:
      x = tf.nn.relu(self.project(code))
    else:
      if self.num_classes:
        code = tf.concat([code, tf.one_hot(labels, self.num_classes, dtype=code.dtype)], axis=-1)
      x = tf.nn.relu(self.project(code))
      x = tf.reshape(x, [-1, self.side, self.side, self.base_width])
    for i, up in enumerate(self.ups):
      x = up(x)
      if i + 1 < len(self.ups):
        x = tf.nn.relu(x)
    return tf.cast(x, tf.float32)


def build(config, hardware, encoder_outputs, num_classes=0, spatial=False):
  """The (encoder, decoder) pair of a run config: ``encoder_outputs`` values per image, a ``model.latent_dim`` code
  into the decoder, widths from ``model.widths``, weights seeded by ``config.seed``. ``spatial``: the code is a
  grid of ``encoder_outputs``-value vectors, in and out."""
  side, _ = parse_resolution(config.resolution)
  m, channels, keys = config.model, int(config.channels), layers.Keys(config.seed)
  widths = parse_widths(m.widths)
  dtype = hardware.compute_dtype
  encoder = Encoder(side, channels, widths, encoder_outputs, keys, dtype, num_classes=num_classes, spatial=spatial)
  code_size = encoder_outputs if spatial else int(m.latent_dim)
  decoder = Decoder(side, channels, widths, code_size, keys, dtype, num_classes=num_classes, spatial=spatial)
  return encoder, decoder
