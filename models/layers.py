"""Small network layers as ``tf.Module``s, with explicit precision and deterministic initialisation.

Why not Keras layers: the training step must be a pure function of (variables, batch, random key) so it can be
XLA-compiled under every strategy. These layers keep no hidden state and never assign a variable in ``__call__``
(batch normalisation uses batch statistics only), their float32 variables are cast to the layer's compute dtype
at use, and their initial values come from stateless random ops keyed by ``Keys``, so every replica, worker and
rerun starts from the same weights.

Equalized learning rate (Karras et al. 2018) is an option on the weighted layers: the stored weight is drawn from
N(0, 1 / lr_mul²) and multiplied at run time by ``gain * lr_mul / sqrt(fan_in)``.
"""

import math

import tensorflow as tf


class Keys:
  """Deterministic seeds for variable initialisation: one per call, from (seed, call count)."""

  def __init__(self, seed):
    self.seed = int(seed)
    self.count = 0

  def __call__(self):
    self.count += 1
    return tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0x1A1], tf.int64), self.count,
                                                    alg="philox")


def _normal(shape, key, stddev=1.0, mean=0.0):
  return tf.random.stateless_normal(shape, seed=key, mean=mean, stddev=stddev, alg="philox")


class Layer(tf.Module):
  """Base: holds the compute dtype."""

  def __init__(self, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.compute_dtype = tf.as_dtype(dtype)

  def cast(self, x):
    return tf.cast(x, self.compute_dtype)


class _Weighted(Layer):
  """Shared weight handling for Dense and convolutions."""

  def _init_weight(self, shape, fan_in, keys, init_std, equalized, gain, lr_mul):
    self.equalized = equalized
    self.lr_mul = float(lr_mul)
    if equalized:
      self.runtime_scale = gain * self.lr_mul / math.sqrt(fan_in)
      std = 1.0 / self.lr_mul
    else:
      self.runtime_scale = 1.0
      std = init_std if init_std is not None else gain / math.sqrt(fan_in)
    self.w = tf.Variable(_normal(shape, keys(), std), name="w")

  def _init_bias(self, size, use_bias, bias_init):
    self.b = tf.Variable(tf.fill([size], float(bias_init) / self.lr_mul), name="b") if use_bias else None

  def weight(self):
    w = self.w * self.runtime_scale if self.runtime_scale != 1.0 else self.w
    return self.cast(w)

  def add_bias(self, y):
    if self.b is None:
      return y
    b = self.b * self.lr_mul if self.lr_mul != 1.0 else self.b
    return y + self.cast(b)


class Dense(_Weighted):
  """y = x W + b.

  Args:
    units_in, units_out: sizes.
    keys: Keys for initialisation.
    init_std: stddev of the initial weights; default He (gain / sqrt(fan_in)).
    equalized: equalized learning rate.
    gain: He gain (sqrt(2) for ReLU-family activations).
    lr_mul: learning-rate multiplier (StyleGAN's mapping network uses 0.01).
  """

  def __init__(self, units_in, units_out, keys, *, use_bias=True, init_std=None, equalized=False,
               gain=math.sqrt(2.0), lr_mul=1.0, bias_init=0.0, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self._init_weight([units_in, units_out], units_in, keys, init_std, equalized, gain, lr_mul)
    self._init_bias(units_out, use_bias, bias_init)

  def __call__(self, x):
    return self.add_bias(tf.matmul(self.cast(x), self.weight()))


class Conv2D(_Weighted):
  """2-D convolution, NHWC. ``padding``: "SAME" (zeros), or "REFLECT": the input mirrored by (kernel - 1) / 2
  pixels on each side (odd kernels; no seam of zeros at the border, as CycleGAN's generators pad)."""

  def __init__(self, channels_in, channels_out, kernel, keys, *, stride=1, use_bias=True, init_std=None,
               equalized=False, gain=math.sqrt(2.0), lr_mul=1.0, padding="SAME", dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    if padding not in ("SAME", "REFLECT") or (padding == "REFLECT" and kernel % 2 == 0):
      raise ValueError(f"padding {padding!r} with a kernel of {kernel}: use SAME, or REFLECT with an odd kernel")
    self.stride = stride
    self.reflect = (kernel - 1) // 2 if padding == "REFLECT" else 0
    self._init_weight([kernel, kernel, channels_in, channels_out], kernel * kernel * channels_in, keys, init_std,
                      equalized, gain, lr_mul)
    self._init_bias(channels_out, use_bias, 0.0)

  def __call__(self, x):
    x = self.cast(x)
    if self.reflect:
      p = self.reflect
      x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
    y = tf.nn.conv2d(x, self.weight(), strides=self.stride, padding="VALID" if self.reflect else "SAME")
    return self.add_bias(y)


class ConvTranspose2D(_Weighted):
  """Transposed convolution that multiplies height and width by ``stride``, NHWC."""

  def __init__(self, channels_in, channels_out, kernel, keys, *, stride=2, use_bias=True, init_std=None,
               equalized=False, gain=math.sqrt(2.0), dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self.stride = stride
    self.channels_out = channels_out
    # Kernel layout for conv2d_transpose is [k, k, out, in]; the fan-in of the transposed op is k*k*in/stride².
    self._init_weight([kernel, kernel, channels_out, channels_in], kernel * kernel * channels_in // (stride**2),
                      keys, init_std, equalized, gain, 1.0)
    self._init_bias(channels_out, use_bias, 0.0)

  def __call__(self, x):
    x = self.cast(x)
    shape = tf.shape(x)
    out_shape = tf.stack([shape[0], shape[1] * self.stride, shape[2] * self.stride, self.channels_out])
    y = tf.nn.conv2d_transpose(x, self.weight(), out_shape, strides=self.stride, padding="SAME")
    y = tf.ensure_shape(y, [x.shape[0], _times(x.shape[1], self.stride), _times(x.shape[2], self.stride),
                            self.channels_out])
    return self.add_bias(y)


def _times(size, factor):
  return None if size is None else size * factor


class BatchNorm(Layer):
  """Batch normalisation with batch statistics, computed in float32.

  No running averages: GAN generators and critics here always normalise with the statistics of the batch they
  see, in training and in sampling, so nothing is assigned during the step. Statistics are per replica, as in
  data-parallel reference implementations.
  """

  def __init__(self, channels, keys, *, epsilon=1e-5, gamma_std=0.0, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self.epsilon = epsilon
    gamma = _normal([channels], keys(), gamma_std, 1.0) if gamma_std else tf.ones([channels])
    self.gamma = tf.Variable(gamma, name="gamma")
    self.beta = tf.Variable(tf.zeros([channels]), name="beta")

  def __call__(self, x):
    x32 = tf.cast(x, tf.float32)
    axes = list(range(len(x.shape) - 1))
    mean, variance = tf.nn.moments(x32, axes, keepdims=True)
    y = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta
    return self.cast(y)


class LayerNorm(Layer):
  """Normalises each example over all its features (height, width and channels), in float32; with
  ``last_axis=True`` each position over its channels alone (a transformer's per-token normalisation)."""

  def __init__(self, channels, *, epsilon=1e-5, last_axis=False, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self.epsilon = epsilon
    self.last_axis = last_axis
    self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
    self.beta = tf.Variable(tf.zeros([channels]), name="beta")

  def __call__(self, x):
    x32 = tf.cast(x, tf.float32)
    axes = [-1] if self.last_axis else list(range(1, len(x.shape)))
    mean, variance = tf.nn.moments(x32, axes, keepdims=True)
    y = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta
    return self.cast(y)


def instance_norm(x, epsilon=1e-5):
  """Each example's channels normalised over height and width to zero mean and unit variance (Ulyanov et al.
  2016), without a learned scale or bias; statistics in float32, the result in x's dtype."""
  x32 = tf.cast(x, tf.float32)
  mean, variance = tf.nn.moments(x32, [1, 2], keepdims=True)
  return tf.cast((x32 - mean) * tf.math.rsqrt(variance + epsilon), x.dtype)


class Identity(Layer):

  def __call__(self, x):
    return x


def normalization(kind, channels, keys, dtype, **kwargs):
  """Builds a normalisation layer by name: batch | layer | none."""
  if kind == "batch":
    return BatchNorm(channels, keys, dtype=dtype, **kwargs)
  if kind == "layer":
    return LayerNorm(channels, dtype=dtype)
  if kind == "none":
    return Identity(dtype=dtype)
  raise ValueError(f"unknown normalization {kind!r}")


class Embedding(Layer):
  """A table of learned vectors indexed by integer labels."""

  def __init__(self, count, size, keys, *, init_std=1.0, dtype=tf.float32, name=None):
    super().__init__(dtype=dtype, name=name)
    self.table = tf.Variable(_normal([count, size], keys(), init_std), name="table")

  def __call__(self, labels):
    return self.cast(tf.gather(self.table, labels))
