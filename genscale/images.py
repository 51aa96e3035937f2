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


# Ten well-separated colours (one per digit class), RGB.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


def scatter(points, labels=None, size=256, radius=2, limit=None):
  """A 2-D point map as a uint8 RGB image [size, size, 3]: each point a small square coloured by its label
  (white without labels) on black, axes spanning ±``limit`` (default: the largest |coordinate|, at least 1)."""
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"scatter needs points of shape [n, 2], got {points.shape}")
  limit = float(limit or max(1.0, np.abs(points).max(initial=0.0)))
  image = np.zeros([size, size, 3], np.uint8)
  centre = (size - 1) / 2.0
  image[int(round(centre)), :] = image[:, int(round(centre))] = 60  # the axes through 0
  pixels = np.clip(np.round(centre + points / limit * centre * np.array([1.0, -1.0])), 0, size - 1).astype(int)
  for i, (x, y) in enumerate(pixels):
    colour = PALETTE[int(labels[i]) % len(PALETTE)] if labels is not None else 255
    image[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = colour
  return image


def write_animation(path, frames, fps=24, size=256):
  """Writes uint8 frames [N, H, W, C] as an animated ``.gif`` (Pillow) or an ``.mp4`` (H.264 through imageio's
  ffmpeg, the ``video`` extra), each frame enlarged by pixel copies to about ``size`` pixels high. Local or gs://.
  Raises UserError for another file type or a missing codec package."""
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  frames = np.asarray(frames)
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  scale = max(1, int(size) // frames.shape[1])
  frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
  if path.endswith(".gif"):
    buffer = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                   loop=0)
    data = buffer.getvalue()
  elif path.endswith(".mp4"):
    try:
      import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
      import imageio_ffmpeg  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise UserError(f"{path}: writing .mp4 needs pip install 'genscale[video]' (imageio with ffmpeg); "
                      ".gif needs nothing more") from None
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as scratch:
      local = f"{scratch}/video.mp4"
      even = frames[:, :frames.shape[1] // 2 * 2, :frames.shape[2] // 2 * 2]  # H.264 wants even sides
      imageio.mimwrite(local, list(even), fps=fps, codec="libx264", quality=8, macro_block_size=1)
      with open(local, "rb") as f:
        data = f.read()
  else:
    raise UserError(f"{path}: an animation is a .gif or an .mp4")
  directory = path.rsplit("/", 1)[0] if "/" in path else "."
  tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(data)
