"""CycleGAN's networks (Zhu et al. 2017, appendix 7.2, after Johnson et al. 2016 and Isola et al. 2017).

Generator, in the paper's notation for ``width`` 64 and two downsamplings: c7s1-64, d128, d256, R256 x N, u128,
u64, c7s1-C, tanh. ``c7s1-k`` is a 7x7 convolution with k filters on a reflection-padded input, ``dk`` a 3x3
stride-2 convolution, ``Rk`` a residual block of two reflection-padded 3x3 convolutions, ``uk`` a 3x3 stride-2
transposed convolution; each but the last is followed by instance normalisation without a learned scale or bias,
and ReLU (not after the second convolution of a residual block, which is added to its input).

Discriminator: a PatchGAN (Isola et al. 2017) whose every output scores one patch of the input: C64 with stride 2
and no normalisation, then ``layers - 1`` more stride-2 convolutions doubling the width (at most 8x), one more at
stride 1, and a 1-channel stride-1 convolution; 4x4 kernels, LeakyReLU(0.2), instance normalisation. Three layers
see 70x70 patches (the paper's), two see 34x34 (for 32x32 images).

Weights start from N(0, 0.02) as in the paper. Convolutions run in the compute dtype, normalisation statistics in
float32. The 3x3 stride-2 convolutions pad with TensorFlow's SAME rule (one row and column, after the image),
where the reference pads one on each side: the output size is the same.
"""

import tensorflow as tf

from models import layers

INIT_STD = 0.02


def _relu_in(x):
  return tf.nn.relu(layers.instance_norm(x))


def _leaky_in(x):
  return tf.nn.leaky_relu(layers.instance_norm(x), 0.2)


class ResidualBlock(tf.Module):

  def __init__(self, width, keys, dtype):
    super().__init__(name="residual")
    conv = lambda: layers.Conv2D(width, width, 3, keys, padding="REFLECT", use_bias=False, init_std=INIT_STD,
                                 dtype=dtype)
    self.conv1, self.conv2 = conv(), conv()

  def __call__(self, x):
    return x + layers.instance_norm(self.conv2(_relu_in(self.conv1(x))))


class Generator(tf.Module):
  """Images in [-1, 1] of one domain -> the other's (float32 [b, H, W, C] both)."""

  def __init__(self, channels, width, downsamplings, residual_blocks, keys, dtype, name):
    super().__init__(name=name)
    self.channels = channels
    # Convolutions followed by instance normalisation need no bias: the normalisation removes it.
    self.stem = layers.Conv2D(channels, width, 7, keys, padding="REFLECT", use_bias=False, init_std=INIT_STD,
                              dtype=dtype)
    widths = [width * 2**i for i in range(downsamplings + 1)]
    self.downs = [layers.Conv2D(w, 2 * w, 3, keys, stride=2, use_bias=False, init_std=INIT_STD, dtype=dtype)
                  for w in widths[:-1]]
    self.blocks = [ResidualBlock(widths[-1], keys, dtype) for _ in range(residual_blocks)]
    self.ups = [layers.ConvTranspose2D(2 * w, w, 3, keys, use_bias=False, init_std=INIT_STD, dtype=dtype)
                for w in reversed(widths[:-1])]
    self.out = layers.Conv2D(width, channels, 7, keys, padding="REFLECT", init_std=INIT_STD, dtype=dtype)

  def __call__(self, images):
    x = _relu_in(self.stem(images))
    for down in self.downs:
      x = _relu_in(down(x))
    for block in self.blocks:
      x = block(x)
    for up in self.ups:
      x = _relu_in(up(x))
    return tf.tanh(tf.cast(self.out(x), tf.float32))


class PatchDiscriminator(tf.Module):
  """Images [b, H, W, C] -> float32 logits [b, h, w], one per patch."""

  def __init__(self, channels, width, num_layers, keys, dtype, name):
    super().__init__(name=name)
    widths = [width * min(2**i, 8) for i in range(num_layers + 1)]
    conv = lambda c_in, c_out, stride, bias: layers.Conv2D(c_in, c_out, 4, keys, stride=stride, use_bias=bias,
                                                           init_std=INIT_STD, dtype=dtype)
    self.first = conv(channels, widths[0], 2, True)
    self.convs = [conv(widths[i - 1], widths[i], 2 if i < num_layers else 1, False)
                  for i in range(1, num_layers + 1)]
    self.logits = conv(widths[-1], 1, 1, True)

  def __call__(self, images):
    x = tf.nn.leaky_relu(self.first(images), 0.2)
    for conv in self.convs:
      x = _leaky_in(conv(x))
    return tf.cast(self.logits(x)[..., 0], tf.float32)


def receptive_field(num_layers):
  """The side of the input patch each discriminator output sees (70 for 3 layers, 34 for 2)."""
  field = 4  # the 1-channel convolution
  for stride in [1] + [2] * num_layers:  # from the output back: the stride-1 layer, then the stride-2 ones
    field = (field - 1) * stride + 4
  return field
