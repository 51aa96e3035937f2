"""Images as token sequences, and back: the two tokenisers of the transformer family behind one interface.

  PixelTokens  pixels quantised to ``levels`` values, grouped in ``patch`` x ``patch`` blocks: one token per block,
               vocabulary levels^(patch²·channels). Binarised 32x32 digits in 2x2 blocks are 256 tokens of a
               vocabulary of 16. The map is a bijection between quantised images and token grids, so the likelihood
               of the tokens IS the likelihood of the quantised pixels (exact, comparable with every other
               likelihood model of binary digits when ``levels`` = 2).
  VQTokens     the codebook indices of a trained VQ-VAE (models/autoencoder/vqvae.py): its encoder and codebook
               give the grid, its decoder draws it. The VQ-VAE is a frozen part of the model (checkpointed with it,
               never trained here); its weights come from the VQ-VAE run when a run starts (``pretrained``).

Both give ``vocab_size``, ``grid`` (h, w; tokens in raster order), ``encode_batch(images, rng)`` (training: a
freshly binarised batch for 2-level pixels), ``encode(images)`` (deterministic) and ``decode(tokens)``.
"""

import tensorflow as tf

from genscale.shapes import parse_resolution
from models import binary


def _to_blocks(x, patch):
  """[b, H, W, C] -> [b, H/patch, W/patch, patch²·C] (TensorFlow's op takes blocks of 2 or more)."""
  return x if patch == 1 else tf.nn.space_to_depth(x, patch)


def _from_blocks(x, patch):
  return x if patch == 1 else tf.nn.depth_to_space(x, patch)


class PixelTokens(tf.Module):
  """Quantised pixels in ``patch`` x ``patch`` blocks, one token per block (see module docstring)."""

  def __init__(self, resolution, channels, levels, patch, binarize="dynamic"):
    super().__init__(name="pixel_tokens")
    height, width = parse_resolution(resolution)
    self.levels, self.patch, self.channels = int(levels), int(patch), int(channels)
    self.binarize = binarize
    self.grid = (height // self.patch, width // self.patch)
    self.digits = self.patch * self.patch * self.channels  # quantised values per token
    self.vocab_size = self.levels ** self.digits
    self.image_shape = (height, width, self.channels)
    self.binary = self.levels == 2
    self.place_values = [self.levels**j for j in range(self.digits)]  # of block position j in a token

  def quantize(self, images):
    """int32 levels [b, H, W, C] in [0, levels) of images in [-1, 1] (nearest level)."""
    scaled = (tf.cast(images, tf.float32) + 1.0) / 2.0 * (self.levels - 1)
    return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, self.levels - 1.0), tf.int32)

  def encode(self, images):
    """Tokens int32 [b, h·w] of images [b, H, W, C] in [-1, 1]; the value of block position j (raster order
    within the block, channels last) is digit j of the token in base ``levels``."""
    blocks = _to_blocks(self.quantize(images), self.patch)  # [b, h, w, digits]
    tokens = tf.reduce_sum(blocks * tf.constant(self.place_values, tf.int32), axis=-1)
    return tf.reshape(tokens, [-1, self.grid[0] * self.grid[1]])

  def encode_batch(self, images, rng, stream):
    """Training tokens: with ``binarize=dynamic`` 2-level pixels are binarised afresh (pixel on with probability
    its intensity; the likelihood table's data), else every pixel takes its nearest level (for 2 levels: on where
    the intensity is at least one half)."""
    if self.binary and self.binarize == "dynamic":
      images = binary.dynamic_binarize(images, rng, stream)
    return self.encode(images)

  def decode(self, tokens):
    """Images [b, H, W, C] in [-1, 1] of tokens int32 [b, h·w]."""
    tokens = tf.reshape(tf.cast(tokens, tf.int32), [-1, *self.grid, 1])
    place_values = tf.constant(self.place_values, tf.int32)
    digits = tf.math.floormod(tf.math.floordiv(tokens, place_values), self.levels)  # [b, h, w, digits]
    values = _from_blocks(digits, self.patch)
    return tf.cast(values, tf.float32) / (self.levels - 1) * 2.0 - 1.0


class VQTokens(tf.Module):
  """The code grid of a VQ-VAE (``codec``, a models.autoencoder.VQVAE built from the VQ-VAE run's config)."""

  binary = False

  def __init__(self, codec):
    super().__init__(name="vq_tokens")
    self.codec = codec
    self.grid = tuple(codec.grid_shape)
    self.vocab_size = int(codec.codebook.size)

  def encode(self, images):
    return tf.reshape(self.codec.encode(images), [-1, self.grid[0] * self.grid[1]])

  def encode_batch(self, images, rng, stream):
    del rng, stream
    return self.encode(images)

  def decode(self, tokens):
    return self.codec.decode_tokens(tf.reshape(tf.cast(tokens, tf.int32), [-1, *self.grid]))
