"""Image transforms shared by every source. Each works on one image or a batch, eagerly and inside tf.data.

Resize filter (fixed, so FID numbers are comparable across runs and implementations): downsampling uses the area
(box) filter, which averages every source pixel that falls in a target pixel; upsampling uses bilinear
interpolation. Images are scaled to [-1, 1] as float32 at the end of the pipeline.
"""

import tensorflow as tf

# ITU-R BT.601 luma weights, the ones PIL uses for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)


def to_channels(image, channels):
  """Converts an image (or batch) with 1, 3 or 4 channels to ``channels`` (1 or 3).

  Grayscale is repeated to RGB; RGB becomes luma; an alpha channel is composited over black.
  """
  have = image.shape[-1]
  if have == channels:
    return image
  dtype = image.dtype
  x = tf.cast(image, tf.float32)
  if have == 4:
    x = x[..., :3] * (x[..., 3:] / 255.0)
    have = 3
  if have == channels:
    y = x
  elif channels == 3:
    y = tf.repeat(x, 3, axis=-1)
  elif channels == 1:
    y = tf.reduce_sum(x * tf.constant(_LUMA, tf.float32), axis=-1, keepdims=True)
  else:
    raise ValueError(f"can't convert {have} channels to {channels}")
  if dtype == tf.uint8:
    y = tf.cast(tf.clip_by_value(tf.round(y), 0, 255), tf.uint8)
  return y


def resize(image, size):
  """Resizes an image or batch to ``size`` = (height, width): area filter down, bilinear up. Returns float32."""
  size = tuple(int(s) for s in size)
  height, width = image.shape[-3], image.shape[-2]
  if (height, width) == size:
    return tf.cast(image, tf.float32)
  method = "area" if height >= size[0] and width >= size[1] else "bilinear"
  return tf.image.resize(tf.cast(image, tf.float32), size, method=method)


def to_model_range(image):
  """uint8-valued pixels [0, 255] -> float32 [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def from_model_range(image):
  """float [-1, 1] -> uint8 [0, 255], rounding to nearest."""
  return tf.cast(tf.clip_by_value(tf.round((tf.cast(image, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)
