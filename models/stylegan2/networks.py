"""StyleGAN2 networks (Karras et al. 2020, config F): mapping network, skip generator, residual discriminator.

Every weighted layer uses the equalized learning rate: weights are stored as N(0, 1/lr_mul²) and scaled at run time
by lr_mul / sqrt(fan_in). Blocks at the highest ``reduced_precision_res`` resolutions compute in the runtime's
reduced precision (bfloat16 or float16); the others, the mapping network, the styles and all statistics stay
float32. The generator's RGB skip path is float32 too.

Generator:
  z (+ class embedding) -> normalise -> 8 dense layers (lr_mul 0.01) -> w
  learned 4x4 constant -> per resolution: [modulated 3x3 conv (2x up from 8x8 on), modulated 3x3 conv], each with
  per-pixel noise times a learned strength, bias, leaky ReLU; a 1x1 modulated toRGB per resolution, summed into
  the upsampled RGB image (the "skip" architecture), optionally through tanh. Layer i takes w_i of ws
  [b, num_ws, w_dim]: one w per convolution, and each toRGB shares the w of the next block's first convolution.
Generator with ``style_block=adain``: StyleGAN (Karras et al. 2018) instead of StyleGAN2. Same mapping network,
  learned constant, noise inputs, ws, up path and output activation; each synthesis layer is [3x3 conv (2x up)],
  noise times a learned per-channel strength, bias, leaky ReLU, instance normalisation, then a per-channel scale and
  bias from w (AdaIN). At 4x4 the constant itself goes through such a layer before the 3x3 one, as in StyleGAN, so
  num_ws is the same as StyleGAN2's. The output is StyleGAN's: one plain 1x1 toRGB (no style) after the last block,
  the network StyleGAN's progressive growing ends with (no growing here, and not StyleGAN2's skip sum).
Discriminator:
  fromRGB 1x1 -> per resolution: 3x3 conv, 3x3 conv with 2x down, plus a 1x1 down-sampled skip, summed with gain
  sqrt(1/2) -> at 4x4: minibatch standard deviation, 3x3 conv, dense, and a linear output. Conditional
  discriminators add the projection of the features onto a learned class embedding (Miyato & Koyama 2018).
"""

import math

import tensorflow as tf

from models import layers
from models.stylegan2 import ops

SYNTHESIS_UP = ("filtered", "nearest")
OUTPUT_ACTIVATIONS = ("linear", "tanh")


def channels_at(resolution, channel_base, channel_max):
  """Feature maps at a resolution: channel_base / resolution, at most channel_max (StyleGAN2's rule)."""
  return int(min(channel_base // resolution, channel_max))


def block_dtype(resolution, image_resolution, reduced_precision_res, compute_dtype):
  """The compute dtype of the block at ``resolution``: reduced precision only for the top few resolutions."""
  if compute_dtype == tf.float32 or reduced_precision_res <= 0:
    return tf.float32
  lowest = max(2**(int(math.log2(image_resolution)) + 1 - reduced_precision_res), 8)
  return compute_dtype if resolution >= lowest else tf.float32


def _normal(shape, key, stddev=1.0):
  return tf.random.stateless_normal(shape, seed=key, stddev=stddev, alg="philox")


def normalize_2nd_moment(x, epsilon=1e-8):
  return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + epsilon)


# ---- generator


class MappingNetwork(tf.Module):
  """z [b, z_dim] (and labels [b]) -> w [b, w_dim], float32."""

  def __init__(self, m, num_classes, keys):
    super().__init__(name="mapping")
    self.num_classes = num_classes
    z_dim, w_dim = int(m.z_dim), int(m.w_dim)
    features = z_dim
    if num_classes:
      # An embedding table is a dense layer on one-hot labels; equalized so that it learns at the network's pace.
      self.embed = layers.Dense(num_classes, w_dim, keys, equalized=True, gain=1.0)
      features += w_dim
    self.dense = []
    for i in range(int(m.mapping_layers)):
      self.dense.append(layers.Dense(features if i == 0 else w_dim, w_dim, keys, equalized=True, gain=1.0,
                                     lr_mul=float(m.mapping_lr_mul), name=f"dense{i}"))

  def __call__(self, z, labels=None):
    x = normalize_2nd_moment(tf.cast(z, tf.float32))
    if self.num_classes:
      y = self.embed(tf.one_hot(labels, self.num_classes, dtype=tf.float32))
      x = tf.concat([x, normalize_2nd_moment(y)], axis=-1)
    for dense in self.dense:
      x = ops.bias_act(dense(x), activation="lrelu")
    return x


class ModulatedLayer(tf.Module):
  """A modulated convolution with its style affine, and for synthesis layers noise, bias and activation.

  Args:
    kind: "conv" (3x3, demodulated, noise, leaky ReLU) or "torgb" (1x1, not demodulated, linear).
    up: 2x upsampling (synthesis layers of every block above 4x4, first convolution): a stride-2 transposed
      convolution low-pass filtered back to 2H x 2W (``synthesis_up=filtered``, the reference's), or 2x
      nearest-neighbour copies followed by the 3x3 convolution (``nearest``).
  """

  def __init__(self, m, w_dim, cin, cout, resolution, keys, dtype, kind="conv", up=False, name=None):
    super().__init__(name=name)
    self.kind, self.dtype = kind, dtype
    self.nearest_up = up and m.synthesis_up == "nearest"
    self.filtered_up = up and not self.nearest_up
    self.impl, self.filter_impl = m.modconv, m.filter_impl
    self.clamp = None if m.conv_clamp is None else float(m.conv_clamp)
    k = 3 if kind == "conv" else 1
    self.resolution = resolution
    self.affine = layers.Dense(w_dim, cin, keys, equalized=True, gain=1.0, bias_init=1.0, name="affine")
    self.weight = tf.Variable(_normal([k, k, cin, cout], keys()), name="weight")
    self.weight_gain = 1.0 / math.sqrt(cin * k * k)
    self.bias = tf.Variable(tf.zeros([cout]), name="bias")
    if kind == "conv":
      self.noise_strength = tf.Variable(0.0, name="noise_strength")

  def __call__(self, x, w, noise=None):
    styles = self.affine(w)
    x = tf.cast(x, self.dtype)
    if self.nearest_up:
      x = ops.upsample_nearest(x)
    x = ops.modulated_conv(x, self.weight * self.weight_gain, styles, demodulate=self.kind == "conv",
                           up=self.filtered_up, impl=self.impl)
    if self.filtered_up:
      x = ops.fir(x, 1, 1, gain=4.0, impl=self.filter_impl)
    if self.kind == "torgb":
      return ops.bias_act(tf.cast(x, tf.float32), self.bias, clamp=self.clamp)
    if noise is not None:
      x = x + tf.cast(noise * self.noise_strength, self.dtype)
    return ops.bias_act(x, self.bias, activation="lrelu", clamp=self.clamp)


class AdaINLayer(tf.Module):
  """StyleGAN's (2018) synthesis layer: 3x3 convolution, per-pixel noise times a learned per-channel strength, bias,
  leaky ReLU, instance normalisation, then the style: a per-channel scale ys and bias yb from w (AdaIN).

  The style is one equalized affine map of w to 2C values, as StyleGAN's ``style_mod``: ys = 1 + A_s(w) starts
  around 1 and yb = A_b(w) around 0. The activation's gain and the conv clamp act before the normalisation (the gain
  cancels there; the clamp keeps float16 finite); the output is clamped as well.

  Args:
    cin: input feature maps, or None for the layer on the learned 4x4 constant (no convolution).
    up: 2x upsampling, as ModulatedLayer's: the transposed convolution then the low-pass filter (``filtered``), or
      nearest-neighbour copies then the 3x3 convolution (``nearest``).
  """

  def __init__(self, m, w_dim, cin, cout, keys, dtype, up=False, name=None):
    super().__init__(name=name)
    self.dtype = dtype
    self.nearest_up = up and m.synthesis_up == "nearest"
    self.filtered_up = up and not self.nearest_up
    self.filter_impl = m.filter_impl
    self.clamp = None if m.conv_clamp is None else float(m.conv_clamp)
    self.weight = None
    if cin is not None:
      self.weight = tf.Variable(_normal([3, 3, cin, cout], keys()), name="weight")
      self.weight_gain = 1.0 / math.sqrt(cin * 9)
    self.noise_strength = tf.Variable(tf.zeros([cout]), name="noise_strength")
    self.bias = tf.Variable(tf.zeros([cout]), name="bias")
    self.affine = layers.Dense(w_dim, 2 * cout, keys, equalized=True, gain=1.0, name="affine")

  def styles(self, w):
    """The per-channel scale ys and bias yb [b, C], float32."""
    scale_offset, bias = tf.split(self.affine(w), 2, axis=-1)
    return 1.0 + scale_offset, bias

  def __call__(self, x, w, noise=None):
    x = tf.cast(x, self.dtype)
    if self.weight is not None:
      if self.nearest_up:
        x = ops.upsample_nearest(x)
      x = ops.conv2d(x, self.weight * self.weight_gain, up=self.filtered_up)
      if self.filtered_up:
        x = ops.fir(x, 1, 1, gain=4.0, impl=self.filter_impl)
    if noise is not None:
      x = x + tf.cast(noise * self.noise_strength, self.dtype)
    x = ops.bias_act(x, self.bias, activation="lrelu", clamp=self.clamp)
    return ops.bias_act(ops.adain(x, *self.styles(w)), clamp=self.clamp)


class _StyledLayers(tf.Module):
  """What both kinds of synthesis block share: the learned constant at 4x4, then the styled layers ``convs``, each
  with its own w and noise image."""

  @property
  def num_conv(self):
    return len(self.convs)

  def styled(self, x, ws, noises):
    """The block's feature maps: ``x`` (the constant at 4x4) through every layer of ``convs``."""
    if self.resolution == 4:
      x = tf.broadcast_to(tf.cast(self.const, self.dtype)[None], [tf.shape(ws)[0], 4, 4, self.const.shape[-1]])
    for i, conv in enumerate(self.convs):
      x = conv(x, ws[:, i], noises[i])
    return x


class SynthesisBlock(_StyledLayers):
  """One resolution of the synthesis network: (const or 2x-up conv), conv, toRGB."""

  rgb_styles = 1  # each toRGB is modulated by the w that follows its block's convolutions: one more after the last

  def __init__(self, m, cin, cout, resolution, channels, keys, dtype, last=False):
    del last  # every block has a toRGB
    super().__init__(name=f"block{resolution}")
    self.resolution, self.dtype, self.filter_impl = resolution, dtype, m.filter_impl
    w_dim = int(m.w_dim)
    if resolution == 4:
      self.const = tf.Variable(_normal([4, 4, cout], keys()), name="const")
      self.convs = [ModulatedLayer(m, w_dim, cout, cout, 4, keys, dtype, name="conv1")]
    else:
      self.convs = [ModulatedLayer(m, w_dim, cin, cout, resolution, keys, dtype, up=True, name="conv0"),
                    ModulatedLayer(m, w_dim, cout, cout, resolution, keys, dtype, name="conv1")]
    self.torgb = ModulatedLayer(m, w_dim, cout, channels, resolution, keys, dtype, kind="torgb", name="torgb")

  def __call__(self, x, img, ws, noises):
    """ws: [b, num_conv + 1, w_dim]; noises: one [b, R, R, 1] float32 per convolution (or None)."""
    x = self.styled(x, ws, noises)
    y = self.torgb(x, ws[:, self.num_conv])
    img = y if img is None else ops.upsample2d(img, self.filter_impl) + y
    return x, img


class AdaINBlock(_StyledLayers):
  """One resolution of StyleGAN's (2018) synthesis network: at 4x4 the constant's AdaIN layer and a 3x3 one, above
  a 2x-up layer and a 3x3 one; the last block's plain 1x1 toRGB (float32, equalized, no style) gives the image."""

  rgb_styles = 0

  def __init__(self, m, cin, cout, resolution, channels, keys, dtype, last=False):
    super().__init__(name=f"block{resolution}")
    self.resolution, self.dtype = resolution, dtype
    w_dim = int(m.w_dim)
    # The styled layers, each with its own w and noise image (named convs as in SynthesisBlock).
    if resolution == 4:
      self.const = tf.Variable(_normal([4, 4, cout], keys()), name="const")
      self.convs = [AdaINLayer(m, w_dim, None, cout, keys, dtype, name="const_adain"),
                    AdaINLayer(m, w_dim, cout, cout, keys, dtype, name="conv1")]
    else:
      self.convs = [AdaINLayer(m, w_dim, cin, cout, keys, dtype, up=True, name="conv0"),
                    AdaINLayer(m, w_dim, cout, cout, keys, dtype, name="conv1")]
    clamp = None if m.conv_clamp is None else float(m.conv_clamp)
    self.torgb = Conv(cout, channels, 1, keys, tf.float32, activation="linear", clamp=clamp,
                      name="torgb") if last else None

  def __call__(self, x, img, ws, noises):
    """ws: [b, >= num_conv, w_dim]; noises: one [b, R, R, 1] float32 per layer (or None)."""
    x = self.styled(x, ws, noises)
    return x, (img if self.torgb is None else self.torgb(x))


STYLE_BLOCKS = {"modulated": SynthesisBlock, "adain": AdaINBlock}


class SynthesisNetwork(tf.Module):
  """ws [b, num_ws, w_dim] -> images float32 [b, R, R, C]: linear like the reference's, or through tanh
  (``output_activation``)."""

  def __init__(self, m, resolution, channels, keys, compute_dtype):
    super().__init__(name="synthesis")
    self.resolution = resolution
    self.output_tanh = m.output_activation == "tanh"
    self.blocks = []
    log2 = int(math.log2(resolution))
    cin = 0
    block_type = STYLE_BLOCKS[m.style_block]
    for res in [2**i for i in range(2, log2 + 1)]:
      cout = channels_at(res, int(m.channel_base), int(m.channel_max))
      dtype = block_dtype(res, resolution, int(m.reduced_precision_res), compute_dtype)
      self.blocks.append(block_type(m, cin, cout, res, channels, keys, dtype, last=res == resolution))
      cin = cout
    self.num_ws = sum(b.num_conv for b in self.blocks) + self.blocks[-1].rgb_styles

  def noise_shapes(self):
    """[(H, W, 1)] for each styled layer (each convolution; with adain also the constant's layer), in order."""
    return [(b.resolution, b.resolution, 1) for b in self.blocks for _ in b.convs]

  def __call__(self, ws, noises=None):
    noises = list(noises) if noises is not None else [None] * len(self.noise_shapes())
    x = img = None
    w_index = layer = 0
    for block in self.blocks:
      x, img = block(x, img, ws[:, w_index:w_index + block.num_conv + 1], noises[layer:layer + block.num_conv])
      w_index += block.num_conv
      layer += block.num_conv
    return tf.tanh(img) if self.output_tanh else img


class Generator(tf.Module):
  """Mapping and synthesis networks."""

  def __init__(self, m, resolution, channels, num_classes, keys, compute_dtype):
    super().__init__(name="generator")
    self.mapping = MappingNetwork(m, num_classes, keys)
    self.synthesis = SynthesisNetwork(m, resolution, channels, keys, compute_dtype)
    self.num_ws = self.synthesis.num_ws


# ---- discriminator


class Conv(tf.Module):
  """Equalized-learning-rate convolution with optional 2x low-pass downsampling, bias, activation, gain, clamp."""

  def __init__(self, cin, cout, kernel, keys, dtype, *, bias=True, activation="lrelu", down=False, gain=None,
               clamp=None, filter_impl="depthwise", name=None):
    super().__init__(name=name)
    self.dtype, self.activation, self.down, self.gain, self.clamp = dtype, activation, down, gain, clamp
    self.filter_impl = filter_impl
    self.kernel = kernel
    self.weight = tf.Variable(_normal([kernel, kernel, cin, cout], keys()), name="weight")
    self.weight_gain = 1.0 / math.sqrt(cin * kernel * kernel)
    self.bias = tf.Variable(tf.zeros([cout]), name="bias") if bias else None

  def __call__(self, x):
    x = tf.cast(x, self.dtype)
    w = tf.cast(self.weight * self.weight_gain, self.dtype)
    if self.down and self.kernel == 1:
      x = tf.nn.conv2d(ops.downsample2d(x, self.filter_impl), w, strides=1, padding="VALID")
    elif self.down:
      # Blur to H+1 then a stride-2 'VALID' convolution: the low-pass filter comes before the subsampling.
      pad = (len(ops.FILTER_TAPS) - 2 + self.kernel - 1) // 2
      x = tf.nn.conv2d(ops.fir(x, pad, pad, impl=self.filter_impl), w, strides=2, padding="VALID")
    else:
      x = tf.nn.conv2d(x, w, strides=1, padding="SAME")
    return ops.bias_act(x, self.bias, activation=self.activation, gain=self.gain, clamp=self.clamp)


class DiscriminatorBlock(tf.Module):
  """Residual block: (fromRGB), conv, conv down, with a 1x1 down-sampled skip; branches scaled by sqrt(1/2)."""

  def __init__(self, cin, ctmp, cout, resolution, channels, keys, dtype, clamp, first, filter_impl):
    super().__init__(name=f"block{resolution}")
    self.dtype = dtype
    act_gain = 1.0  # the leaky ReLU gain sqrt(2) times the residual branch gain sqrt(1/2)
    self.fromrgb = Conv(channels, ctmp, 1, keys, dtype, clamp=clamp, name="fromrgb") if first else None
    self.conv0 = Conv(ctmp, ctmp, 3, keys, dtype, clamp=clamp, name="conv0")
    self.conv1 = Conv(ctmp, cout, 3, keys, dtype, down=True, gain=act_gain, clamp=clamp, filter_impl=filter_impl,
                      name="conv1")
    self.skip = Conv(ctmp, cout, 1, keys, dtype, bias=False, activation="linear", down=True, gain=math.sqrt(0.5),
                     filter_impl=filter_impl, name="skip")

  def __call__(self, x, img):
    if self.fromrgb is not None:
      x = self.fromrgb(img)
    x = tf.cast(x, self.dtype)
    y = self.skip(x)
    x = self.conv1(self.conv0(x))
    return y + x


class Discriminator(tf.Module):
  """images [b, R, R, C] float32 (and labels [b]) -> logits float32 [b]."""

  def __init__(self, m, resolution, channels, num_classes, keys, compute_dtype):
    super().__init__(name="discriminator")
    self.num_classes = num_classes
    base, cmax = int(m.channel_base), int(m.channel_max)
    clamp = None if m.conv_clamp is None else float(m.conv_clamp)
    self.mbstd_group_size, self.mbstd_channels = int(m.mbstd_group_size), int(m.mbstd_channels)
    self.blocks = []
    log2 = int(math.log2(resolution))
    for i, res in enumerate([2**j for j in range(log2, 2, -1)]):
      dtype = block_dtype(res, resolution, int(m.reduced_precision_res), compute_dtype)
      ctmp, cout = channels_at(res, base, cmax), channels_at(res // 2, base, cmax)
      self.blocks.append(DiscriminatorBlock(ctmp, ctmp, cout, res, channels, keys, dtype, clamp, first=i == 0,
                                            filter_impl=m.filter_impl))
    c4 = channels_at(4, base, cmax)
    self.conv = Conv(c4 + self.mbstd_channels, c4, 3, keys, tf.float32, clamp=clamp, name="epilogue_conv")
    self.dense = layers.Dense(c4 * 16, c4, keys, equalized=True, gain=1.0, name="epilogue_dense")
    self.cmap_dim = c4 if num_classes else 1
    self.out = layers.Dense(c4, self.cmap_dim, keys, equalized=True, gain=1.0, name="out")
    if num_classes:
      self.embed = layers.Dense(num_classes, self.cmap_dim, keys, equalized=True, gain=1.0, name="class_embed")

  def __call__(self, img, labels=None, mbstd_group=None):
    """``mbstd_group``: the minibatch-stddev group size when it must be smaller than configured (several batches
    of a replica's examples concatenated; groups never cross them)."""
    x = None
    img = tf.cast(img, tf.float32)
    for block in self.blocks:
      x = block(x, img)
    x = ops.minibatch_stddev(tf.cast(x, tf.float32), mbstd_group or self.mbstd_group_size, self.mbstd_channels)
    x = self.conv(x)
    x = ops.bias_act(self.dense(tf.reshape(x, [-1, x.shape[1] * x.shape[2] * x.shape[3]])), activation="lrelu")
    x = self.out(x)
    if not self.num_classes:
      return x[:, 0]
    cmap = normalize_2nd_moment(self.embed(tf.one_hot(labels, self.num_classes, dtype=tf.float32)))
    return tf.reduce_sum(x * cmap, axis=-1) / math.sqrt(self.cmap_dim)
