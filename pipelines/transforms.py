"""Image transforms shared by every source. Each works on one image or a batch, eagerly and inside tf.data.

The order is fixed: convert channels, fit the aspect ratio (centre crop, pad, or stretch), resize, scale to [-1, 1].

Resize filter (fixed, so FID numbers are comparable across runs and implementations): downsampling uses the area
(box) filter, which averages every source pixel that falls in a target pixel; upsampling uses bilinear
interpolation. ``pipelines.prepare`` applies the same rules with PIL's BOX and BILINEAR filters.

Channel conversion (the same arithmetic in ``to_channels`` and ``to_channels_numpy``): grayscale is repeated to
RGB; an alpha channel is dropped; RGB becomes luma with the ITU-R BT.601 weights (as PIL's "L" mode), rounded to
the nearest integer.
"""

import numpy as np
import tensorflow as tf

from genscale.errors import UserError
from genscale.shapes import parse_resolution  # pylint: disable=unused-import (re-exported)

LUMA = (0.299, 0.587, 0.114)
CROP_MODES = ("center", "pad", "none")


def _rgb_from_any(image):
  """Any of 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels -> 3 channels, same dtype. Channel count may be dynamic."""
  channels = image.shape[-1]
  if channels == 3:
    return image
  if channels in (1, 2):
    return tf.repeat(image[..., :1], 3, axis=-1)
  if channels == 4:
    return image[..., :3]
  count = tf.shape(image)[-1]
  return tf.switch_case(
      tf.clip_by_value(count - 1, 0, 3),
      [lambda: tf.repeat(image[..., :1], 3, axis=-1), lambda: tf.repeat(image[..., :1], 3, axis=-1),
       lambda: image[..., :3], lambda: image[..., :3]])


def to_channels(image, channels):
  """Converts uint8 images (or a batch) with 1-4 channels to ``channels`` (1 or 3). Keeps uint8."""
  if image.shape[-1] == channels:
    return image
  rgb = _rgb_from_any(image)
  if channels == 3:
    return tf.ensure_shape(rgb, rgb.shape[:-1].concatenate([3]))
  if channels != 1:
    raise ValueError(f"can't convert to {channels} channels")
  luma = tf.reduce_sum(tf.cast(rgb, tf.float32) * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)
  return tf.cast(tf.clip_by_value(tf.round(luma), 0, 255), tf.uint8)


def to_channels_numpy(image, channels):
  """NumPy twin of ``to_channels`` for one uint8 image [H, W, C]."""
  have = image.shape[-1]
  if have == channels:
    return image
  if have in (1, 2):
    rgb = np.repeat(image[..., :1], 3, axis=-1)
  else:
    rgb = image[..., :3]
  if channels == 3:
    return rgb
  luma = np.sum(rgb.astype(np.float32) * np.asarray(LUMA, np.float32), axis=-1, keepdims=True)
  return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def fit_box(height, width, target, mode):
  """The crop (or pad) box that gives an image the target aspect ratio.

  Returns (top, left, box_height, box_width) in source pixels; for ``pad`` the box is larger than the image and
  starts at a negative offset. ``none`` returns the whole image (it will be stretched).
  """
  target_h, target_w = target
  if mode == "none":
    return 0, 0, height, width
  # Scale so that the target fits inside (crop) or around (pad) the image.
  if (height * target_w >= width * target_h) == (mode == "center"):
    box_w = width
    box_h = (width * target_h + target_w // 2) // target_w
  else:
    box_h = height
    box_w = (height * target_w + target_h // 2) // target_h
  return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def fit_aspect(image, target, mode):
  """Centre-crops or pads an image [H, W, C] or batch [B, H, W, C] to the aspect ratio of ``target`` = (h, w)."""
  if mode not in CROP_MODES:
    raise UserError(f"unknown --config.input.crop={mode!r}: choose one of {', '.join(CROP_MODES)}")
  if mode == "none":
    return image
  static_h, static_w = image.shape[-3], image.shape[-2]
  if static_h is not None and static_w is not None:
    if fit_box(static_h, static_w, target, mode)[2:] == (static_h, static_w):
      return image  # already the target aspect ratio
  shape = tf.shape(image)
  height, width = shape[-3], shape[-2]
  target_h, target_w = target
  if mode == "center":
    tall = height * target_w >= width * target_h
    box_h = tf.where(tall, (width * target_h + target_w // 2) // target_w, height)
    box_w = tf.where(tall, width, (height * target_w + target_h // 2) // target_h)
    return tf.image.crop_to_bounding_box(image, (height - box_h) // 2, (width - box_w) // 2, box_h, box_w)
  wide = height * target_w < width * target_h
  box_h = tf.where(wide, (width * target_h + target_w // 2) // target_w, height)
  box_w = tf.where(wide, width, (height * target_w + target_h // 2) // target_h)
  return tf.image.pad_to_bounding_box(image, (box_h - height) // 2, (box_w - width) // 2, box_h, box_w)


def resize(image, size):
  """Resizes an image or batch to ``size`` = (height, width): area filter down, bilinear up. Returns float32."""
  size = tuple(int(s) for s in size)
  height, width = image.shape[-3], image.shape[-2]
  if (height, width) == size:
    return tf.cast(image, tf.float32)
  if height is None or width is None:
    shape = tf.shape(image)
    down = tf.logical_and(shape[-3] >= size[0], shape[-2] >= size[1])
    x = tf.cast(image, tf.float32)
    return tf.cond(down, lambda: tf.image.resize(x, size, method="area"),
                   lambda: tf.image.resize(x, size, method="bilinear"))
  method = "area" if height >= size[0] and width >= size[1] else "bilinear"
  return tf.image.resize(tf.cast(image, tf.float32), size, method=method)


def _area_weights(size_in, size_out):
  """[size_out, size_in] matrix: the fraction of output pixel i covered by input pixel j, rows summing to 1."""
  scale = size_in / size_out
  weights = np.zeros([size_out, size_in], np.float64)
  for i in range(size_out):
    start, end = i * scale, (i + 1) * scale
    for j in range(int(np.floor(start)), min(int(np.ceil(end)), size_in)):
      weights[i, j] = min(end, j + 1) - max(start, j)
  return weights / scale


def area_resize_numpy(image, size):
  """NumPy twin of the area filter for shrinking one image [H, W, C] to ``size``; returns float64."""
  rows = _area_weights(image.shape[0], size[0])
  cols = _area_weights(image.shape[1], size[1])
  tall = np.tensordot(rows, image.astype(np.float64), axes=([1], [0]))  # [out_h, W, C]
  return np.tensordot(tall, cols, axes=([1], [1])).transpose(0, 2, 1)  # [out_h, out_w, C]


def to_model_range(image):
  """Pixel values in [0, 255] -> float32 [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def flip_where(images, mask):
  """Mirrors the images of a batch horizontally where ``mask`` [b] is true.

  A gather between the batch and its mirror image: several times faster on a CPU than ``tf.where`` with a
  broadcast mask or a negative-stride slice.
  """
  both = tf.stack([images, tf.reverse(images, [2])], axis=1)
  return tf.gather(both, tf.cast(mask, tf.int32), axis=1, batch_dims=1)
