"""StyleGAN2's building blocks as plain TensorFlow ops that XLA compiles on CPUs, GPUs and TPUs.

The reference implementations use custom CUDA kernels for three things; here each is a few standard ops:
  low-pass filtering (upfirdn2d)   the [1, 3, 3, 1] filter (``fir``, ``upsample2d``, ``downsample2d``) in two
                                    forms, FILTER_IMPLS: ``depthwise`` convolutions (fastest with TensorFlow's own
                                    kernels) and ``slices``, weighted sums of shifted slices per axis (fastest
                                    under XLA, whose CPU backend runs depthwise convolutions 10-40x slower);
  bias + activation + clamp         elementwise ops that XLA fuses (``bias_act``);
  modulated convolution             either one convolution shared by the batch with the activations scaled
                                    before and after it (``scaled``), or one grouped convolution with a kernel
                                    per example (``grouped``); both give the same result (see ``modulated_conv``).
StyleGAN's (2018) adaptive instance normalisation (``adain``) and the plain convolution it follows (``conv2d``,
with the same 2x up path) are here too.

Layout is NHWC throughout. Functions take and return tensors of the caller's dtype; statistics (demodulation
coefficients, instance-normalisation moments, minibatch standard deviation) are computed in float32.
"""

import math

import numpy as np
import tensorflow as tf

from genscale.errors import UserError
from models import layers

# The binomial low-pass filter of StyleGAN2 (and ProGAN's blur), one dimension; its 2-D form is the outer product.
FILTER_TAPS = (1.0, 3.0, 3.0, 1.0)
SQRT2 = math.sqrt(2.0)
MODCONV_IMPLS = ("scaled", "grouped")
FILTER_IMPLS = ("depthwise", "slices")


def _taps(gain_per_axis):
  """The normalised one-dimensional filter times ``gain_per_axis``, as Python floats."""
  total = sum(FILTER_TAPS)
  return [t / total * gain_per_axis for t in FILTER_TAPS]


def _weighted_sum(parts, weights):
  out = parts[0] * weights[0]
  for part, weight in zip(parts[1:], weights[1:]):
    out = out + part * weight
  return out


def _slice_axis(x, axis, start, size):
  begin, end = [0] * len(x.shape), _shape(x)
  begin[axis], end[axis] = start, start + size
  return tf.strided_slice(x, begin, end)


def _fir_axis(x, axis, taps, stride):
  """Correlates axis 1 or 2 of x with ``taps`` ('VALID'), keeping every ``stride``-th (1 or 2) output.

  With stride 2 the axis is first split into its even and odd positions (a reshape), so that every term is a
  contiguous slice: strided slices are slow without XLA.
  """
  size = x.shape[axis]
  n = (size - len(taps)) // stride + 1
  if stride == 1:
    parts = [_slice_axis(x, axis, k, n) for k in range(len(taps))]
  elif stride == 2:
    if size % 2:
      x = tf.pad(x, [[0, 1] if a == axis else [0, 0] for a in range(len(x.shape))])
    shape = _shape(x)
    pairs = tf.reshape(x, shape[:axis] + [shape[axis] // 2, 2] + shape[axis + 1:])
    even_odd = tf.unstack(pairs, axis=axis + 1)
    parts = [_slice_axis(even_odd[k % 2], axis, k // 2, n) for k in range(len(taps))]
  else:
    raise ValueError(f"stride {stride}: the filter supports 1 and 2")
  return _weighted_sum(parts, [tf.constant(t, x.dtype) for t in taps])


def _phase_taps():
  """Weights [2][3] of inputs p - 1, p, p + 1 in output 2p + r (r = 0, 1) of 2x zero insertion followed by the
  one-dimensional filter with gain 2: output 2p + r takes input p + (r + k - 2) / 2 with tap k, for the k where that
  is a whole number, i.e. out[2p] = (x[p-1] + 3 x[p]) / 4 and out[2p+1] = (3 x[p] + x[p+1]) / 4."""
  phases = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
  for r in (0, 1):
    for k, tap in enumerate(_taps(2.0)):
      if (k - r) % 2 == 0:
        phases[r][(r + k - 2) // 2 + 1] += tap
  return phases


def _upsample_axis(x, axis):
  """2x upsampling of axis 1 or 2 with the one-dimensional filter (gain 2), as two output phases computed at the
  input resolution and interleaved."""
  size = x.shape[axis]
  padded = tf.pad(x, [[1, 1] if a == axis else [0, 0] for a in range(len(x.shape))])
  phases = []
  for weights in _phase_taps():
    used = [(offset, w) for offset, w in enumerate(weights) if w]
    phases.append(_weighted_sum([_slice_axis(padded, axis, offset, size) for offset, _ in used],
                                [tf.constant(w, x.dtype) for _, w in used]))
  y = tf.stack(phases, axis=axis + 1)  # [..., size, 2, ...]
  shape = _shape(x)
  shape[axis] = 2 * size
  return tf.reshape(y, shape)


def _filter_2d(channels, gain, dtype):
  """The normalised 2-D filter times ``gain``, as a depthwise kernel [4, 4, C, 1]."""
  f = np.asarray(FILTER_TAPS, np.float64)
  f2 = np.outer(f, f) / np.sum(f)**2 * gain
  return tf.constant(np.tile(f2[:, :, None, None], [1, 1, channels, 1]), dtype)


def _upsample_phases():
  """3x3 kernels [3, 3, 1, 4] giving the four output phases (row parity, column parity) of zero-insertion followed
  by the filter with gain 4, each as a correlation over the input's 3x3 neighbourhood."""
  phases = np.asarray(_phase_taps())
  kernel = np.zeros([3, 3, 1, 4])
  for ry in (0, 1):
    for rx in (0, 1):
      kernel[:, :, 0, ry * 2 + rx] = np.outer(phases[ry], phases[rx])
  return kernel


def filter_impl_for(xla):
  """The filter form ``auto`` stands for: ``slices`` under XLA, whose CPU backend runs depthwise convolutions
  10-40x slower than TensorFlow's kernel (sums of slices fuse), and ``depthwise`` otherwise."""
  return "slices" if xla else "depthwise"


def _check_impl(impl):
  if impl not in FILTER_IMPLS:
    raise ValueError(f"unknown filter implementation {impl!r}: choose one of {', '.join(FILTER_IMPLS)}")


def fir(x, pad0, pad1, gain=1.0, stride=1, impl="depthwise"):
  """Low-pass filters [b, H, W, C] with the 2-D [1, 3, 3, 1] filter after zero-padding (pad0, pad1) on both
  spatial axes (size H + pad0 + pad1 - 3), keeping every ``stride``-th output (1 or 2); ``gain`` scales the result.

  ``depthwise``: one depthwise convolution. ``slices``: the filter is separable, so two passes (rows, columns) of
  four shifted slices, weighted and summed: elementwise work that XLA fuses.
  """
  _check_impl(impl)
  x = tf.pad(x, [[0, 0], [pad0, pad1], [pad0, pad1], [0, 0]])
  if impl == "depthwise":
    return tf.nn.depthwise_conv2d(x, _filter_2d(x.shape[-1], gain, x.dtype), [1, stride, stride, 1], "VALID")
  taps = _taps(math.sqrt(gain))
  return _fir_axis(_fir_axis(x, 1, taps, stride), 2, taps, stride)


def upsample2d(x, impl="depthwise"):
  """2x upsampling with the low-pass filter (gain 4 keeps the mean): [b, H, W, C] -> [b, 2H, 2W, C].

  Equal to inserting zeros and filtering, computed at the input resolution. ``depthwise``: one depthwise
  convolution makes the four output phases of every channel and depth_to_space interleaves them. ``slices``:
  each axis in turn, two output phases of two weighted shifted slices, interleaved.
  """
  _check_impl(impl)
  if impl == "slices":
    return _upsample_axis(_upsample_axis(x, 1), 2)
  b, h, w, c = _shape(x)
  kernel = tf.constant(np.tile(_upsample_phases(), [1, 1, x.shape[-1], 1]), x.dtype)
  y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")  # [b, H, W, C * 4], channel c * 4 + phase
  y = tf.reshape(tf.transpose(tf.reshape(y, [b, h, w, c, 4]), [0, 1, 2, 4, 3]), [b, h, w, 4 * c])
  return tf.nn.depth_to_space(y, 2)


def upsample_nearest(x):
  """2x nearest-neighbour upsampling: [b, H, W, C] -> [b, 2H, 2W, C], each pixel copied to a 2x2 block."""
  b, h, w, c = _shape(x)
  y = tf.broadcast_to(x[:, :, None, :, None, :], [b, h, 2, w, 2, c])
  return tf.reshape(y, [b, 2 * h, 2 * w, c])


def downsample2d(x, impl="depthwise"):
  """Low-pass filter then keep every second pixel: [b, H, W, C] -> [b, H/2, W/2, C]."""
  return fir(x, 1, 1, stride=2, impl=impl)


def _shape(x):
  """Static dimensions where known, dynamic otherwise."""
  dynamic = tf.shape(x)
  return [s if s is not None else dynamic[i] for i, s in enumerate(x.shape)]


def bias_act(x, bias=None, activation="linear", gain=None, clamp=None):
  """x + bias, then the activation, times its gain (sqrt(2) for leaky ReLU), then clamped to [-clamp, clamp].

  The clamp (the reference's ``conv_clamp``) keeps float16 activations far from overflow; it is applied in
  float32 layers too, so that a network computes the same function whatever its precision. Leaky ReLU is written
  as max(x, 0.2 x): with oneDNN, TensorFlow's graph optimizer fuses bias + LeakyRelu in a way that breaks on the
  gradient graph ("remapper failed") and then skips its other fusions.
  """
  if bias is not None:
    x = tf.nn.bias_add(x, tf.cast(bias, x.dtype))
  if activation == "lrelu":
    x = tf.maximum(x, x * tf.cast(0.2, x.dtype))
    gain = SQRT2 if gain is None else gain
  elif activation != "linear":
    raise ValueError(f"unknown activation {activation!r}")
  if gain is not None and gain != 1.0:
    x = x * tf.cast(gain, x.dtype)
  if clamp is not None:
    x = tf.clip_by_value(x, tf.cast(-clamp, x.dtype), tf.cast(clamp, x.dtype))
  return x


# ---- modulated convolution


def demodulation(weight, styles, epsilon=1e-8):
  """1 / ||w'|| per example and output channel, where w' = w * s is the modulated kernel; float32 [b, out].

  sum over (kh, kw, in) of (w[kh, kw, in, out] s[b, in])² = (s² @ sum_k w²)[b, out], one small matmul instead
  of materialising the per-example kernels.
  """
  w2 = tf.reduce_sum(tf.square(tf.cast(weight, tf.float32)), axis=[0, 1])  # [in, out]
  return tf.math.rsqrt(tf.matmul(tf.square(tf.cast(styles, tf.float32)), w2) + epsilon)


def _transposed_conv_up(x, weight):
  """Stride-2 transposed convolution with 'VALID' padding: [b, H, W, in] -> [b, 2H+1, 2W+1, out].

  ``weight`` is [k, k, in, out]; output[m] = sum over 2i + t = m of x[i] weight[t] (per spatial axis).
  """
  b, h, w, _ = _shape(x)
  k, out = weight.shape[0], weight.shape[3]
  kernel = tf.transpose(weight, [0, 1, 3, 2])  # conv2d_transpose wants [k, k, out, in]
  shape = tf.stack([b, 2 * h + k - 2, 2 * w + k - 2, out])
  return tf.nn.conv2d_transpose(x, kernel, shape, strides=2, padding="VALID")


def _polyphase_up(x, weight, conv):
  """The same transposed convolution as ``_transposed_conv_up`` for a 3x3 kernel, as four ordinary convolutions.

  Grouped convolutions have no transposed form in TensorFlow, so the grouped path splits the output into its four
  phases (even/odd rows x even/odd columns): even outputs take taps 2 and 0 of the kernel over two neighbouring
  inputs, odd outputs take tap 1. Each phase is a 'VALID' convolution at the input resolution (no multiplications
  by inserted zeros), and the phases are interleaved. ``conv(x, kernel)`` performs one 'VALID' convolution.
  """
  if weight.shape[0] != 3 or weight.shape[1] != 3:
    raise ValueError("the polyphase upsampling convolution is written for 3x3 kernels")
  taps = {0: [2, 0], 1: [1]}  # tap indices along one axis for even (0) and odd (1) outputs, in correlation order
  pads = {0: [1, 1], 1: [0, 1]}  # both phases give H + 1 outputs (the last odd one is cropped)
  rows = []
  for pr in (0, 1):
    row = []
    for pc in (0, 1):
      kernel = tf.gather(tf.gather(weight, taps[pr], axis=0), taps[pc], axis=1)
      padded = tf.pad(x, [[0, 0], pads[pr], pads[pc], [0, 0]])
      row.append(conv(padded, kernel))
    rows.append(tf.stack(row, axis=3))  # [b, H+1, W+1, 2, C]
  y = tf.stack(rows, axis=2)  # [b, H+1, 2, W+1, 2, C]
  b, h1, _, w1, _, c = _shape(y)
  y = tf.reshape(y, [b, 2 * h1, 2 * w1, c])
  return y[:, :2 * h1 - 1, :2 * w1 - 1, :]


def _conv_valid(x, kernel):
  return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")


def _scaled_modconv(x, weight, styles, demod, up):
  """Modulation as input scaling, demodulation as output scaling, around one convolution shared by the batch."""
  dtype = x.dtype
  x = x * tf.cast(styles[:, None, None, :], dtype)
  kernel = tf.cast(weight, dtype)
  if up:
    x = _transposed_conv_up(x, kernel)
  else:
    x = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
  if demod is not None:
    x = x * tf.cast(demod[:, None, None, :], dtype)
  return x


def _grouped_modconv(x, weight, styles, demod, up):
  """One kernel per example, applied as a single grouped convolution with the batch folded into the channels."""
  dtype = x.dtype
  b, h, w, cin = _shape(x)
  k, cout = weight.shape[0], weight.shape[3]
  kernels = tf.cast(weight, tf.float32)[None] * styles[:, None, None, :, None]  # [b, k, k, in, out]
  if demod is not None:
    kernels = kernels * demod[:, None, None, None, :]
  kernels = tf.cast(tf.reshape(tf.transpose(kernels, [1, 2, 3, 0, 4]), [k, k, cin, -1]), dtype)  # [k, k, in, b*out]
  grouped = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, -1])  # [1, H, W, b*in]
  if up:
    y = _polyphase_up(grouped, kernels, _conv_valid)
  else:
    y = tf.nn.conv2d(grouped, kernels, strides=1, padding="SAME")
  _, ho, wo, _ = _shape(y)
  return tf.transpose(tf.reshape(y, [ho, wo, b, cout]), [2, 0, 1, 3])


def modulated_conv(x, weight, styles, demodulate=True, up=False, impl="scaled"):
  """StyleGAN2's modulated convolution (Karras et al. 2020, eq. 1-3): the kernel w[kh, kw, in, out] is scaled by
  per-example styles s[b, in] and, with ``demodulate``, renormalised to unit norm per output channel, so that
  unit-variance inputs give unit-variance outputs.

  Args:
    x: [b, H, W, in], in the layer's compute dtype.
    weight: [k, k, in, out] float32, already multiplied by its equalized-learning-rate gain.
    styles: [b, in] float32.
    up: 2x upsampling: a stride-2 transposed convolution, [b, H, W] -> [b, 2H+1, 2W+1] (the caller low-pass
      filters it back to 2H x 2W).
    impl: ``scaled`` (x * s, one convolution, * demodulation) or ``grouped`` (per-example kernels, one grouped
      convolution). They are equal up to rounding; which is faster depends on the backend and batch size.
      TensorFlow has no CPU gradient for grouped convolutions, so ``grouped`` trains on a CPU under XLA only.
  """
  styles = tf.cast(styles, tf.float32)
  if x.dtype != tf.float32 and demodulate:
    # Reduced precision: bring styles to at most 1 before they touch float16/bfloat16 activations. Demodulation
    # divides the scale out again, so the result is unchanged.
    styles = styles / tf.reduce_max(tf.abs(styles), axis=1, keepdims=True)
  demod = demodulation(weight, styles) if demodulate else None
  if impl == "scaled":
    return _scaled_modconv(x, weight, styles, demod, up)
  if impl == "grouped":
    return _grouped_modconv(x, weight, styles, demod, up)
  raise ValueError(f"unknown modulated convolution {impl!r}")


# ---- StyleGAN (2018): plain convolution and adaptive instance normalisation


def conv2d(x, weight, up=False):
  """One convolution shared by the batch: 'SAME', or with ``up`` the stride-2 transposed convolution that
  ``modulated_conv(up=True)`` uses, [b, H, W] -> [b, 2H+1, 2W+1] (the caller low-pass filters it back to 2H x 2W).
  ``weight``: [k, k, in, out] float32, already multiplied by its equalized-learning-rate gain."""
  kernel = tf.cast(weight, x.dtype)
  if up:
    return _transposed_conv_up(x, kernel)
  return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")


def adain(x, scale, bias, epsilon=1e-8):
  """Adaptive instance normalisation (Huang & Belongie 2017; StyleGAN eq. 1): each example's channel normalised to
  zero mean and unit variance over H x W (``layers.instance_norm``, with StyleGAN's epsilon 1e-8), times ``scale``
  plus ``bias``, both [b, C]. So each output channel has mean ``bias`` and standard deviation |``scale``| (up to
  epsilon). Moments and style in float32, whatever x's dtype; the result is cast back once."""
  y = layers.instance_norm(tf.cast(x, tf.float32), epsilon)
  y = y * tf.cast(scale, tf.float32)[:, None, None, :] + tf.cast(bias, tf.float32)[:, None, None, :]
  return tf.cast(y, x.dtype)


# ---- discriminator helpers


def minibatch_stddev(x, group_size, num_channels=1):
  """Appends the standard deviation of features across small groups of examples (Karras et al. 2018), float32.

  Groups are runs of ``group_size`` consecutive examples of this replica's batch, so with a per-replica batch
  that is a multiple of the group size the groups are the same however the global batch is split over replicas.
  Each group gets ``num_channels`` values (features split into that many parts), broadcast over H x W.
  """
  b, h, w, c = x.shape
  g = min(group_size, b)
  if b % g:
    raise UserError(f"the per-replica batch {b} is not a multiple of --config.model.mbstd_group_size={group_size}; "
                    "change the batch size or the group size")
  if c % num_channels:
    raise ValueError(f"{c} channels can't be split into {num_channels} minibatch-stddev channels")
  x32 = tf.cast(x, tf.float32)
  y = tf.reshape(x32, [b // g, g, h, w, num_channels, c // num_channels])
  y = y - tf.reduce_mean(y, axis=1, keepdims=True)
  y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=1) + 1e-8)  # [b/g, h, w, F, c/F]
  y = tf.reduce_mean(y, axis=[1, 2, 4])  # [b/g, F]
  y = tf.repeat(y, g, axis=0)  # each example gets its group's values
  y = tf.broadcast_to(y[:, None, None, :], [b, h, w, num_channels])
  return tf.concat([x, tf.cast(y, x.dtype)], axis=-1)
