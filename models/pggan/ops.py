"""The Progressive GAN's own tensor operations: pixelwise feature normalisation, minibatch standard deviation, and
the nearest-neighbour / average-pool resampling between levels of detail. All NHWC and pure.

Shapes must be static (as they are in the training step): the ops build their reshapes from ``x.shape``, never from
``tf.shape(x)``. Inside a ``tf.switch_case`` branch XLA treats a value whose runtime shape feeds a reshape as a
compile-time constant, so a dynamic shape there recompiles the step for every new random draw.
"""

import tensorflow as tf

from genscale.errors import UserError

PIXEL_NORM_EPSILON = 1e-8
MBSTD_EPSILON = 1e-8


def pixel_norm(x, epsilon=PIXEL_NORM_EPSILON):
  """Pixelwise feature vector normalisation (section 4.2): each pixel's feature vector scaled to unit mean square.

  b[x, y] = a[x, y] / sqrt(mean_j a_j[x, y]² + ε). Works on [b, C] latents too (one "pixel"). Computed in float32
  and returned in the input's dtype, so bfloat16 activations keep an accurate normaliser.
  """
  x32 = tf.cast(x, tf.float32)
  y = x32 * tf.math.rsqrt(tf.reduce_mean(tf.square(x32), axis=-1, keepdims=True) + epsilon)
  return tf.cast(y, x.dtype)


def minibatch_stddev(x, group_size):
  """Appends the minibatch standard deviation feature map (section 3) to ``x`` [b, H, W, C].

  Within each group of ``group_size`` consecutive examples: the standard deviation of every feature at every
  location over the group, averaged over features and locations, is one number per group, replicated as an extra
  constant channel of that group's examples. Groups are consecutive examples (the reference implementation takes
  every (b/G)-th example instead); the statistic is the same in distribution for shuffled data, and consecutive
  groups make the value independent of how the global batch is split over replicas whenever the per-replica batch
  is a multiple of the group size.
  """
  batch = int(x.shape[0])
  group = min(int(group_size), batch)
  if batch % group:
    raise UserError(f"the per-replica batch {batch} is not a multiple of --config.model.mbstd_group={group_size}; "
                    "choose a batch_size whose share per replica is")
  _, height, width, channels = x.shape
  x32 = tf.cast(x, tf.float32)
  grouped = tf.reshape(x32, [-1, group, height, width, channels])  # [groups, G, H, W, C]
  variance = tf.reduce_mean(tf.square(grouped - tf.reduce_mean(grouped, axis=1, keepdims=True)), axis=1)
  stddev = tf.reduce_mean(tf.sqrt(variance + MBSTD_EPSILON), axis=[1, 2, 3])  # [groups]
  per_group = tf.broadcast_to(stddev[:, None, None, None, None], [stddev.shape[0], group, height, width, 1])
  feature = tf.reshape(per_group, [-1, height, width, 1])
  return tf.concat([x, tf.cast(feature, x.dtype)], axis=-1)


def upsample(x, factor):
  """Nearest-neighbour upsampling by an integer ``factor`` (each pixel becomes a factor x factor block)."""
  if factor == 1:
    return x
  batch, height, width, channels = x.shape
  y = tf.broadcast_to(x[:, :, None, :, None, :], [batch, height, factor, width, factor, channels])
  return tf.reshape(y, [-1, height * factor, width * factor, channels])


def downsample(x, factor):
  """Average pooling over non-overlapping factor x factor blocks (the paper's 2x2 box filter, repeated)."""
  if factor == 1:
    return x
  return tf.nn.avg_pool2d(x, ksize=factor, strides=factor, padding="VALID")


def lerp(a, b, t):
  """a + (b - a) t, with t cast to a's dtype."""
  return a + (b - a) * tf.cast(t, a.dtype)
