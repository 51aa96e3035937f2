"""Layers the denoiser needs beyond models/layers.py: group normalisation and the SiLU activation.

Kept in the diffusion package so the shared layer library only grows when a second family needs them.
"""

import numpy as np
import tensorflow as tf

from models import layers


def silu(x):
  """x · sigmoid(x) (Hendrycks & Gimpel 2016; "swish"), in the input's dtype.

  Written out rather than ``tf.nn.silu``, whose custom gradient doubles the graph nodes (and the tracing time of
  a U-Net) for a few percent of speed.
  """
  return x * tf.sigmoid(x)


def group_count(channels, max_groups=32, min_channels_per_group=4):
  """Groups for GroupNorm: at most ``max_groups`` (the usual 32), with at least ``min_channels_per_group``
  channels each, dividing ``channels``. Narrow layers (the CPU configs' 8-32 channels) get fewer, larger groups,
  since statistics over 1-2 channels of a small feature map are too noisy to normalise with."""
  groups = max(1, min(max_groups, channels // min_channels_per_group))
  while channels % groups:
    groups -= 1
  return groups


class GroupNorm(layers.Layer):
  """Group normalisation (Wu & He 2018): each example's channels are split into groups, and each group is
  normalised over height, width and its channels, then scaled and shifted per channel. Computed in float32.

  Per example, so the result doesn't depend on the batch or its split over replicas (unlike batch norm).

  How: per-channel means and variances first ([b, C], each variance around its own channel mean, so no
  cancellation), then a group's mean is the average of its channels' means and its variance the average of their
  variances plus the spread of their means. The averaging over a group is a matmul with a constant [C, C]
  block-diagonal matrix, which also broadcasts the result back to every channel of the group. The image is then
  touched once more, as x · scale + shift with one scale and shift per example and channel. This has half the
  graph nodes of the reshape-to-[b, H, W, G, C/G] form and is faster on CPUs, where the elementwise passes over
  the image dominate a narrow network's step.
  """

  def __init__(self, channels, *, groups=None, epsilon=1e-5, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self.channels = int(channels)
    self.groups = int(groups or group_count(self.channels))
    if self.channels % self.groups:
      raise ValueError(f"GroupNorm: {self.channels} channels don't split into {self.groups} groups")
    self.epsilon = float(epsilon)
    size = self.channels // self.groups
    self._group_average = tf.constant(np.kron(np.eye(self.groups), np.full([size, size], 1.0 / size)), tf.float32)
    self.gamma = tf.Variable(tf.ones([self.channels]), name="gamma")
    self.beta = tf.Variable(tf.zeros([self.channels]), name="beta")

  def __call__(self, x):
    x32 = tf.cast(x, tf.float32)
    channel_mean, channel_var = tf.nn.moments(x32, list(range(1, len(x.shape) - 1)))  # [b, C] each
    mean = tf.matmul(channel_mean, self._group_average)
    var = tf.matmul(channel_var + tf.square(channel_mean - mean), self._group_average)
    scale = tf.math.rsqrt(var + self.epsilon) * self.gamma
    shift = self.beta - mean * scale
    per_pixel = [-1] + [1] * (len(x.shape) - 2) + [self.channels]
    return self.cast(x32 * tf.reshape(scale, per_pixel) + tf.reshape(shift, per_pixel))
