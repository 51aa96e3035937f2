"""Image grids and PNG files, local or on gs:// (written through tf.io.gfile)."""

import io
import math

import numpy as np
from PIL import Image
import tensorflow as tf


def to_uint8(images):
  """float images in [-1, 1] -> uint8 [0, 255], rounding to nearest."""
  images = np.asarray(images, dtype=np.float32)
  return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images, columns=None, padding=1, pad_value=0):
  """Tiles uint8 images [N, H, W, C] into one image, ``columns`` wide (default: the squarest layout)."""
  images = np.asarray(images)
  count, height, width, channels = images.shape
  columns = columns or int(math.ceil(math.sqrt(count)))
  rows = int(math.ceil(count / columns))
  out = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), pad_value,
                images.dtype)
  for i in range(count):
    r, c = divmod(i, columns)
    y, x = padding + r * (height + padding), padding + c * (width + padding)
    out[y:y + height, x:x + width] = images[i]
  return out


def grid_shape(count, height, width, columns=None, padding=1):
  """(height, width) of the grid ``grid`` makes for ``count`` images."""
  columns = columns or int(math.ceil(math.sqrt(count)))
  rows = int(math.ceil(count / columns))
  return rows * (height + padding) + padding, columns * (width + padding) + padding


def encode_png(image):
  """uint8 [H, W, C] with C in (1, 3, 4) -> PNG bytes."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def write_png(path, image):
  """Writes a uint8 image to a local or gs:// path, creating the directory."""
  directory = path.rsplit("/", 1)[0] if "/" in path else "."
  tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(encode_png(image))
