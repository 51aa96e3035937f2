"""The denoiser network: a U-Net in the DDPM++ / ADM line (Ho et al. 2020; Song et al. 2021; Dhariwal & Nichol 2021).

  image -> 3x3 conv -> encoder levels -> middle (res, attention, res) -> decoder levels -> GroupNorm, SiLU, 3x3 conv

Level l works at 1/2^l of the image size with ``channels * channel_mults[l]`` channels. An encoder level is
``num_blocks`` residual blocks (each followed by self-attention when the level's resolution is listed in
``attention_resolutions``), then a residual block that halves the size (not after the last level). Every encoder
output is kept, and the decoder consumes them in reverse through concatenation: ``num_blocks + 1`` residual blocks
per level, then a residual block that doubles the size (not after the first level).

Residual block (BigGAN-style, as in ADM): GroupNorm, SiLU, [resample], 3x3 conv, + noise embedding (or a scale and
shift of the second GroupNorm, ADM's "scale-shift norm"), GroupNorm, SiLU, dropout, 3x3 conv (zero init), added to
the (resampled, 1x1-projected when the width changes) input and scaled by ``skip_scale``. Down-sampling is a 2x2
average, up-sampling nearest-neighbour, both inside the block.

With ``patch_size`` p > 1 the network sees the image as (H/p, W/p) patches of p x p pixels stacked in channels
(space-to-depth in, depth-to-space out, as patch-based denoisers such as DiT and U-ViT do), so every level costs
about 1/p² as much. The papers' networks use p = 1; the CPU configs use p = 2 to train in minutes.

The noise level enters as a sinusoidal ("positional", Vaswani et al. / DDPM) or random Fourier feature embedding
(Tancik et al. 2020; NCSN++) of a scalar ``noise_input`` per example, then a two-layer MLP. A class-conditional
network adds a learned class embedding; its last row is the "null" class used for classifier-free guidance (Ho &
Salimans 2022). Dropout masks come from the ``BatchRng`` of the step, so they are deterministic and XLA-safe.

Precision: weights are float32 and cast to the compute dtype at use; GroupNorm statistics, the softmax of attention
and the noise embedding are float32; the output is float32.
"""

import math

import tensorflow as tf

from models import layers
from models.diffusion.layers import GroupNorm, silu


def dropout(x, rate, rng, stream):
  """Inverted dropout with a mask drawn per example from ``rng``; identity when ``rng`` is None (sampling)."""
  if rng is None or rate <= 0:
    return x
  keep = rng.uniform(x.shape[1:], stream) >= rate
  return x * tf.cast(keep, x.dtype) / tf.cast(1.0 - rate, x.dtype)


def downsample(x):
  """2x2 average pooling (the box filter of DDPM++ / ADM)."""
  return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def upsample(x):
  """Nearest-neighbour doubling of height and width."""
  return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


class PositionalEmbedding(tf.Module):
  """[cos(f_k t), sin(f_k t)] with f_k = max_period^(-k/half), k < half (Transformer / DDPM). float32."""

  def __init__(self, size, max_period=10_000.0, name=None):
    super().__init__(name=name)
    half = size // 2
    self.frequencies = tf.constant([max_period**(-k / half) for k in range(half)], tf.float32)

  def __call__(self, t):
    angles = tf.cast(t, tf.float32)[:, None] * self.frequencies[None, :]
    return tf.concat([tf.cos(angles), tf.sin(angles)], axis=-1)


class FourierEmbedding(tf.Module):
  """[cos(2π f_k t), sin(2π f_k t)] with fixed random f_k ~ N(0, scale²) (Tancik et al. 2020; NCSN++). float32.

  The frequencies are a non-trainable variable so a checkpoint carries them.
  """

  def __init__(self, size, keys, scale=16.0, name=None):
    super().__init__(name=name)
    frequencies = tf.random.stateless_normal([size // 2], seed=keys(), stddev=scale, alg="philox")
    self.frequencies = tf.Variable(frequencies, trainable=False, name="frequencies")

  def __call__(self, t):
    angles = (2 * math.pi) * tf.cast(t, tf.float32)[:, None] * self.frequencies[None, :]
    return tf.concat([tf.cos(angles), tf.sin(angles)], axis=-1)


class ResidualBlock(layers.Layer):
  """Pre-activation residual block with the noise embedding, optional resampling and dropout.

  Args:
    channels_in, channels_out: widths.
    embedding_size: size of the noise (and class) embedding.
    resample: None, "down" or "up".
    dropout_rate: dropout before the second convolution (training only).
    scale_shift: ADM's adaptive GroupNorm: the embedding gives a scale and a shift of the second normalisation
      instead of a bias added before it.
    skip_scale: the sum of the two paths is multiplied by this (1/sqrt(2) in DDPM++ keeps the variance level).
  """

  def __init__(self, channels_in, channels_out, embedding_size, keys, *, resample=None, dropout_rate=0.0,
               scale_shift=False, skip_scale=1.0, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self.resample = {None: None, "down": downsample, "up": upsample}[resample]
    self.dropout_rate = float(dropout_rate)
    self.scale_shift = scale_shift
    self.skip_scale = skip_scale
    self.channels_out = channels_out
    self.norm1 = GroupNorm(channels_in, dtype=dtype)
    self.conv1 = layers.Conv2D(channels_in, channels_out, 3, keys, gain=1.0, dtype=dtype)
    self.embed = layers.Dense(embedding_size, channels_out * (2 if scale_shift else 1), keys, gain=1.0, dtype=dtype)
    self.norm2 = GroupNorm(channels_out, dtype=dtype)
    self.conv2 = layers.Conv2D(channels_out, channels_out, 3, keys, init_std=0.0, dtype=dtype)
    self.skip = (layers.Conv2D(channels_in, channels_out, 1, keys, gain=1.0, dtype=dtype)
                 if channels_in != channels_out else None)

  def __call__(self, x, embedding, rng=None):
    """``embedding``: the SiLU of the noise (and class) embedding, [b, embedding_size]."""
    h = silu(self.norm1(x))
    if self.resample is not None:
      h, x = self.resample(h), self.resample(x)
    h = self.conv1(h)
    e = self.embed(embedding)[:, None, None, :]
    if self.scale_shift:
      scale, shift = tf.split(e, 2, axis=-1)
      h = self.norm2(h) * (1 + scale) + shift
    else:
      h = self.norm2(h + e)
    h = dropout(silu(h), self.dropout_rate, rng, f"dropout/{self.name}")
    h = self.conv2(h)
    if self.skip is not None:
      x = self.skip(x)
    return (x + h) * tf.cast(self.skip_scale, h.dtype)


class SelfAttention(layers.Layer):
  """Multi-head self-attention over the pixels of a feature map, with a residual connection.

  The logits' scale 1/sqrt(d) is split between queries and keys (as in ADM) so float16 products stay in range;
  the softmax runs in float32.
  """

  def __init__(self, channels, keys, *, num_heads=1, skip_scale=1.0, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    if channels % num_heads:
      raise ValueError(f"attention width {channels} is not divisible by {num_heads} heads")
    self.num_heads = num_heads
    self.skip_scale = skip_scale
    self.norm = GroupNorm(channels, dtype=dtype)
    self.qkv = layers.Conv2D(channels, 3 * channels, 1, keys, gain=1.0, dtype=dtype)
    self.out = layers.Conv2D(channels, channels, 1, keys, init_std=0.0, dtype=dtype)

  def __call__(self, x):
    _, height, width, channels = x.shape
    batch = tf.shape(x)[0]
    head = channels // self.num_heads
    qkv = tf.reshape(self.qkv(self.norm(x)), [batch, height * width, 3, self.num_heads, head])
    q, k, v = tf.unstack(qkv, axis=2)
    scale = tf.cast(head**-0.25, q.dtype)
    logits = tf.einsum("bqhd,bkhd->bhqk", q * scale, k * scale)
    weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), v.dtype)
    h = tf.reshape(tf.einsum("bhqk,bkhd->bqhd", weights, v), [batch, height, width, channels])
    return (x + self.out(h)) * tf.cast(self.skip_scale, h.dtype)


class UNet(layers.Layer):
  """The denoiser network F(x, noise_input, labels).

  Args:
    resolution: (height, width) of the images.
    image_channels: channels of the images (1 or 3).
    channels: width of the first level.
    channel_mults: width multiplier per level; len() levels, each half the size of the one before.
    num_blocks: residual blocks per encoder level (the decoder has one more).
    attention_resolutions: feature-map sizes (shorter side) that get self-attention after each residual block.
    dropout_rate: dropout in the residual blocks (training only).
    num_classes: 0 for an unconditional network; otherwise the class embedding has num_classes + 1 rows, the last
      being the null class.
    noise_embedding: "positional" or "fourier".
    fourier_scale: standard deviation of the Fourier frequencies.
    num_heads: attention heads.
    scale_shift: ADM's scale-shift normalisation in the residual blocks.
    skip_scale: residual scaling (1/sqrt(2) in DDPM++, 1 in ADM).
    keys: layers.Keys for initialisation.
    patch_size: pixels per side of the patches the network works on (1: pixels).
  """

  def __init__(self, *, resolution, image_channels, channels, channel_mults, num_blocks, attention_resolutions,
               dropout_rate, num_classes, noise_embedding, fourier_scale, num_heads, scale_shift, skip_scale, keys,
               patch_size=1, dtype=tf.float32, name="unet"):
    super().__init__(dtype=dtype, name=name)
    self.num_classes = num_classes
    self.patch_size = int(patch_size)
    embedding_size = 4 * channels
    if noise_embedding == "fourier":
      self.noise_embedding = FourierEmbedding(channels, keys, fourier_scale, name="fourier")
    else:
      self.noise_embedding = PositionalEmbedding(channels, name="positional")
    self.embed1 = layers.Dense(2 * (channels // 2), embedding_size, keys, gain=1.0, dtype=dtype, name="embed1")
    self.embed2 = layers.Dense(embedding_size, embedding_size, keys, gain=1.0, dtype=dtype, name="embed2")
    if num_classes:
      self.class_embedding = layers.Embedding(num_classes + 1, embedding_size, keys, dtype=dtype,
                                              name="class_embedding")
    block = dict(dropout_rate=dropout_rate, scale_shift=scale_shift, skip_scale=skip_scale, dtype=dtype)
    attention = dict(num_heads=num_heads, skip_scale=skip_scale, dtype=dtype)
    size = min(resolution) // self.patch_size
    patch_channels = image_channels * self.patch_size**2
    self.conv_in = layers.Conv2D(patch_channels, channels, 3, keys, gain=1.0, dtype=dtype, name="conv_in")

    # Encoder: (kind, module) in call order; every output is kept for the decoder.
    self.encoder = []
    skip_widths = [channels]
    width = channels
    levels = len(channel_mults)
    for level, mult in enumerate(channel_mults):
      for i in range(num_blocks):
        out = channels * mult
        self.encoder.append(("res", ResidualBlock(width, out, embedding_size, keys, name=f"enc{size}_res{i}",
                                                  **block)))
        width = out
        if size in attention_resolutions:
          self.encoder.append(("attn", SelfAttention(width, keys, name=f"enc{size}_attn{i}", **attention)))
        skip_widths.append(width)
      if level != levels - 1:
        self.encoder.append(("res", ResidualBlock(width, width, embedding_size, keys, resample="down",
                                                  name=f"enc{size}_down", **block)))
        skip_widths.append(width)
        size //= 2

    self.middle = [ResidualBlock(width, width, embedding_size, keys, name="mid_res0", **block),
                   SelfAttention(width, keys, name="mid_attn", **attention),
                   ResidualBlock(width, width, embedding_size, keys, name="mid_res1", **block)]

    # Decoder: ("res", block) consumes one kept encoder output by concatenation; "up" and "attn" don't.
    self.decoder = []
    for level in reversed(range(levels)):
      mult = channel_mults[level]
      for i in range(num_blocks + 1):
        out = channels * mult
        self.decoder.append(("res", ResidualBlock(width + skip_widths.pop(), out, embedding_size, keys,
                                                  name=f"dec{size}_res{i}", **block)))
        width = out
        if size in attention_resolutions:
          self.decoder.append(("attn", SelfAttention(width, keys, name=f"dec{size}_attn{i}", **attention)))
      if level != 0:
        self.decoder.append(("up", ResidualBlock(width, width, embedding_size, keys, resample="up",
                                                 name=f"dec{size}_up", **block)))
        size *= 2
    self.norm_out = GroupNorm(width, dtype=dtype, name="norm_out")
    self.conv_out = layers.Conv2D(width, patch_channels, 3, keys, init_std=0.0, dtype=dtype, name="conv_out")

  def __call__(self, x, noise_input, labels=None, rng=None):
    """F(x, noise_input, labels) as float32, the shape of ``x``.

    Args:
      x: [b, H, W, C] network input (already scaled by the formulation).
      noise_input: float32 [b], the formulation's noise conditioning (timestep or c_noise).
      labels: int32 [b] class indices (num_classes = null), for a conditional network.
      rng: BatchRng for dropout masks while training; None when sampling.
    """
    embedding = self.embed2(silu(self.embed1(self.noise_embedding(noise_input))))
    if self.num_classes:
      embedding = embedding + self.class_embedding(labels)
    embedding = silu(embedding)
    if self.patch_size > 1:
      x = tf.nn.space_to_depth(x, self.patch_size)
    h = self.conv_in(x)
    kept = [h]
    for kind, module in self.encoder:
      if kind == "attn":
        h = module(h)
        kept[-1] = h
      else:
        h = module(h, embedding, rng)
        kept.append(h)
    h = self.middle[0](h, embedding, rng)
    h = self.middle[1](h)
    h = self.middle[2](h, embedding, rng)
    for kind, module in self.decoder:
      if kind == "res":
        h = module(tf.concat([h, tf.cast(kept.pop(), h.dtype)], axis=-1), embedding, rng)
      elif kind == "up":
        h = module(h, embedding, rng)
      else:
        h = module(h)
    h = self.conv_out(silu(self.norm_out(h)))
    if self.patch_size > 1:
      h = tf.nn.depth_to_space(h, self.patch_size)
    return tf.cast(h, tf.float32)
