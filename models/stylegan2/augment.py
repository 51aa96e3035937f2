"""Adaptive discriminator augmentation (ADA, Karras et al. 2020) from ops that XLA compiles on every backend.

Every image the discriminator sees, real or generated, first goes through ``augment``: each enabled operation is
applied to each example with probability p (rotations: twice, with probability 1 - sqrt(1 - p) each, so that
some rotation happens with probability about p). The operations and their strengths follow the paper's "bgc"
pipeline:

  geometric  xflip, rotate90, xint (integer translation up to 1/8 of the size), scale (isotropic, log2-normal
             std 0.2), rotate (uniform angle), aniso (anisotropic scale, log2-normal std 0.2), xfrac (fractional
             translation, normal std 1/8 of the size)
  color      brightness (+normal std 0.2), contrast (x log2-normal std 0.5), lumaflip, hue (rotation about the
             luma axis, uniform angle), saturation (x log2-normal std 1 away from the luma axis)

The geometric operations compose into one 3x3 matrix per example, applied by bilinear resampling with mirrored
borders (a gather, differentiable with respect to the images, so G is trained through it and R1 is taken
through it). The color operations compose into one 4x4 matrix per example. When a batch has no geometric
transform at all (p = 0) the resampling is skipped by a ``tf.cond`` (under XLA: computed and not selected); with
p = 0 the output equals the input exactly. Differences from the reference: bilinear sampling at the image's own resolution, without the 2x
wavelet supersampling, and no filtering, noise or cutout operations.

Random values come from the phase's ``BatchRng`` (per example, independent of how the batch is split), as one block
of uniform values.
"""

import math

import numpy as np
import tensorflow as tf

from genscale.errors import require

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ALL = GEOMETRIC + COLOR
PIPELINES = {"bgc": ALL, "bg": GEOMETRIC, "b": ("xflip", "rotate90", "xint"), "c": COLOR}

_XINT_MAX = 0.125
_SCALE_STD = 0.2
_ANISO_STD = 0.2
_XFRAC_STD = 0.125
_BRIGHTNESS_STD = 0.2
_CONTRAST_STD = 0.5
_SATURATION_STD = 1.0


def parse_ops(spec):
  """"bgc" (or "bg", "b", "c") or a comma-separated list of operation names -> tuple of names. Raises UserError."""
  if spec in PIPELINES:
    return PIPELINES[spec]
  names = tuple(n.strip() for n in str(spec).split(",") if n.strip())
  unknown = [n for n in names if n not in ALL]
  require(names and not unknown,
          f"--config.model.augment_ops={spec!r}: use bgc, bg, b, c or a comma-separated list of {', '.join(ALL)}")
  return names


def adjust_p(p, r_t, target, images, ada_kimg):
  """ADA's update: p moves by ``images / (ada_kimg * 1000)`` towards more augmentation when the overfitting
  heuristic r_t = E[sign(D(real))] is above its target, towards less when below; clipped to [0, 1]. With
  ``images`` the images seen since the last update, p can go from 0 to 1 in ``ada_kimg`` thousand images."""
  step = tf.sign(tf.cast(r_t, tf.float32) - target) * (float(images) / (float(ada_kimg) * 1000.0))
  return tf.clip_by_value(tf.cast(p, tf.float32) + step, 0.0, 1.0)


# ---- matrices, batched: [b, 3, 3] (homogeneous 2-D) and [b, 4, 4] (homogeneous RGB)


def _matrix(constant, terms):
  """constant + sum_k values_k[b] * basis_k as [b, n, n], from numpy [n, n] matrices and (values [b], basis) pairs.

  A handful of graph nodes per matrix rather than one per element: the augmentation runs twice per D step and
  its graph is traced for every phase.
  """
  values = tf.stack([tf.cast(v, tf.float32) for v, _ in terms], axis=1)  # [b, k]
  basis = np.stack([np.asarray(m, np.float32) for _, m in terms])
  n = basis.shape[-1]
  flat = tf.matmul(values, tf.constant(basis.reshape(len(terms), n * n)))
  return tf.reshape(flat, [-1, n, n]) + tf.constant(np.asarray(constant, np.float32))


def _unit(n, *positions):
  """An n x n matrix with ones at the given (row, column) positions."""
  m = np.zeros([n, n], np.float32)
  for i, j in positions:
    m[i, j] = 1.0
  return m


def _exp2(x):
  return tf.pow(2.0, x)


def _where(apply, matrix):
  """The matrix where ``apply`` [b] is true, the identity elsewhere (exactly)."""
  return tf.where(apply[:, None, None], matrix, tf.constant(np.eye(matrix.shape[-1]), tf.float32))


def _translate_inv(tx, ty):
  return _matrix(np.eye(3), [(-tx, _unit(3, (0, 2))), (-ty, _unit(3, (1, 2)))])


def _scale_inv(sx, sy):
  return _matrix(_unit(3, (2, 2)), [(1 / sx, _unit(3, (0, 0))), (1 / sy, _unit(3, (1, 1)))])


def _rotate_inv(cos, sin):
  return _matrix(_unit(3, (2, 2)), [(cos, _unit(3, (0, 0), (1, 1))), (sin, _unit(3, (0, 1)) - _unit(3, (1, 0)))])


# The random values of the pipeline, per example and augmented batch: uniform values by name, and normal values from
# pairs of uniform columns. Column layout:
_UNIFORM = ("xflip/apply", "xflip/value", "rotate90/apply", "rotate90/value", "xint/apply", "xint/x", "xint/y",
            "scale/apply", "rotate/pre/apply", "rotate/pre/value", "aniso/apply", "rotate/post/apply",
            "rotate/post/value", "xfrac/apply", "brightness/apply", "contrast/apply", "lumaflip/apply",
            "lumaflip/value", "hue/apply", "hue/value", "saturation/apply")
_NORMAL = ("scale/value", "aniso/value", "xfrac/x", "xfrac/y", "brightness/value", "contrast/value",
           "saturation/value")


WIDTH = len(_UNIFORM) + 2 * len(_NORMAL)  # uniform values per example and augmented batch


def box_muller(u1, u2):
  """Standard normal values from two independent uniform [0, 1) arrays."""
  return tf.sqrt(-2.0 * tf.math.log(1.0 - u1)) * tf.cos((2.0 * math.pi) * u2)  # 1 - u1 > 0: the log is finite


def random_values(rng, stream, copies=1):
  """The uniform values ``augment`` takes: [b, copies, WIDTH] from ``rng``."""
  return rng.uniform([copies, WIDTH], stream)


class Draws:
  """The random values of one augmentation call by name: ``uniform(name)``, ``normal(name)``, ``integers(name)``,
  each [copies * b] in the copy-major order of the images."""

  def __init__(self, values):
    copies, width = values.shape[1], values.shape[2]
    u = tf.reshape(tf.transpose(values, [1, 0, 2]), [-1, width])
    self.batch = u.shape[0] if u.shape[0] is not None else tf.shape(u)[0]
    self._columns = tf.unstack(u, num=width, axis=1)
    del copies

  def uniform(self, name, minval=0.0, maxval=1.0):
    u = self._columns[_UNIFORM.index(name)]
    return u if (minval, maxval) == (0.0, 1.0) else minval + (maxval - minval) * u

  def normal(self, name):
    i = len(_UNIFORM) + 2 * _NORMAL.index(name)
    return box_muller(self._columns[i], self._columns[i + 1])

  def integers(self, name, count):
    return tf.minimum(tf.cast(tf.floor(self.uniform(name) * count), tf.int32), count - 1)


def geometric_matrix(p, draws, ops, size):
  """Inverse transforms [b, 3, 3] mapping output pixel positions to input ones (centred pixel units)."""
  height, width = size
  matrix = tf.constant(np.eye(3), tf.float32)[None]

  def applies(name, probability=None):
    return draws.uniform(f"{name}/apply") < (p if probability is None else probability)

  if "xflip" in ops:
    flip = draws.integers("xflip/value", 2)
    m = _matrix(_unit(3, (1, 1), (2, 2)), [(tf.cast(1 - 2 * flip, tf.float32), _unit(3, (0, 0)))])
    matrix = matrix @ _where(applies("xflip"), m)
  if "rotate90" in ops:
    k = draws.integers("rotate90/value", 4)  # exact cosines and sines of k * 90 degrees
    cos = tf.gather([1.0, 0.0, -1.0, 0.0], k)
    sin = tf.gather([0.0, 1.0, 0.0, -1.0], k)
    matrix = matrix @ _where(applies("rotate90"), _rotate_inv(cos, sin))
  if "xint" in ops:
    tx = tf.round(draws.uniform("xint/x", -_XINT_MAX, _XINT_MAX) * width)
    ty = tf.round(draws.uniform("xint/y", -_XINT_MAX, _XINT_MAX) * height)
    matrix = matrix @ _where(applies("xint"), _translate_inv(tx, ty))
  if "scale" in ops:
    s = _exp2(draws.normal("scale/value") * _SCALE_STD)
    matrix = matrix @ _where(applies("scale"), _scale_inv(s, s))
  p_rotate = 1.0 - tf.sqrt(tf.clip_by_value(1.0 - p, 0.0, 1.0))
  if "rotate" in ops:
    theta = draws.uniform("rotate/pre/value", -math.pi, math.pi)
    matrix = matrix @ _where(applies("rotate/pre", p_rotate), _rotate_inv(tf.cos(-theta), tf.sin(-theta)))
  if "aniso" in ops:
    s = _exp2(draws.normal("aniso/value") * _ANISO_STD)
    matrix = matrix @ _where(applies("aniso"), _scale_inv(s, 1 / s))
  if "rotate" in ops:
    theta = draws.uniform("rotate/post/value", -math.pi, math.pi)
    matrix = matrix @ _where(applies("rotate/post", p_rotate), _rotate_inv(tf.cos(-theta), tf.sin(-theta)))
  if "xfrac" in ops:
    tx = draws.normal("xfrac/x") * (_XFRAC_STD * width)
    ty = draws.normal("xfrac/y") * (_XFRAC_STD * height)
    matrix = matrix @ _where(applies("xfrac"), _translate_inv(tx, ty))
  return matrix


def _reflect(u, n):
  """Mirrors continuous pixel positions into [0, n - 1] (about the first and last pixel centres)."""
  if n == 1:
    return tf.zeros_like(u)
  period = 2.0 * (n - 1)
  u = tf.math.floormod(u, period)
  return tf.where(u > n - 1, period - u, u)


def resample(images, matrix):
  """Bilinear resampling of [b, H, W, C] at the positions ``matrix`` [b, 3, 3] maps each output pixel to."""
  b, height, width, channels = images.shape
  xs = tf.range(width, dtype=tf.float32) + 0.5 - width / 2
  ys = tf.range(height, dtype=tf.float32) + 0.5 - height / 2
  gx, gy = tf.meshgrid(xs, ys)  # [H, W]
  grid = tf.stack([tf.reshape(gx, [-1]), tf.reshape(gy, [-1]), tf.ones([height * width])], axis=0)  # [3, HW]
  src = matrix @ grid[None]  # [b, 3, HW]
  u = _reflect(src[:, 0] + width / 2 - 0.5, width)
  v = _reflect(src[:, 1] + height / 2 - 0.5, height)
  u0, v0 = tf.floor(u), tf.floor(v)
  fu, fv = (u - u0)[..., None], (v - v0)[..., None]
  u0, v0 = tf.cast(u0, tf.int32), tf.cast(v0, tf.int32)
  u1, v1 = tf.minimum(u0 + 1, width - 1), tf.minimum(v0 + 1, height - 1)
  # One flat table of all pixels: a plain gather (no batch_dims), whose first and second derivatives XLA compiles.
  flat = tf.reshape(images, [b * height * width, channels])
  offsets = (tf.range(b) * (height * width))[:, None]

  def at(vi, ui):
    return tf.gather(flat, offsets + vi * width + ui)  # [b, HW, C]

  top = at(v0, u0) * (1.0 - fu) + at(v0, u1) * fu
  bottom = at(v1, u0) * (1.0 - fu) + at(v1, u1) * fu
  out = top * (1.0 - fv) + bottom * fv
  return tf.reshape(out, [b, height, width, channels])


_LUMA = np.full([3], 1 / math.sqrt(3))
_LUMA_PROJECTOR = np.pad(np.outer(_LUMA, _LUMA), [[0, 1], [0, 1]])  # onto the luma axis, in homogeneous 4x4
_RGB = np.diag([1.0, 1.0, 1.0, 0.0])


def color_matrix(p, draws, ops):
  """Color transforms [b, 4, 4] acting on homogeneous RGB values."""
  matrix = tf.constant(np.eye(4), tf.float32)[None]

  def applies(name):
    return draws.uniform(f"{name}/apply") < p

  if "brightness" in ops:
    t = draws.normal("brightness/value") * _BRIGHTNESS_STD
    m = _matrix(np.eye(4), [(t, _unit(4, (0, 3), (1, 3), (2, 3)))])
    matrix = _where(applies("brightness"), m) @ matrix
  if "contrast" in ops:
    c = _exp2(draws.normal("contrast/value") * _CONTRAST_STD)
    matrix = _where(applies("contrast"), _matrix(_unit(4, (3, 3)), [(c, _RGB)])) @ matrix
  if "lumaflip" in ops:
    m = tf.constant(np.eye(4) - 2.0 * _LUMA_PROJECTOR, tf.float32)[None]  # Householder reflection of the luma axis
    flip = tf.equal(draws.integers("lumaflip/value", 2), 1)
    matrix = _where(tf.logical_and(applies("lumaflip"), flip), m) @ matrix
  if "hue" in ops:
    theta = draws.uniform("hue/value", -math.pi, math.pi)
    # Rodrigues: R = v v^T + cos θ (I - v v^T) + sin θ [v]x, about the unit luma axis v.
    x = _LUMA[0]
    cross = np.array([[0, -x, x, 0], [x, 0, -x, 0], [-x, x, 0, 0], [0, 0, 0, 0]])
    m = _matrix(_LUMA_PROJECTOR + _unit(4, (3, 3)), [(tf.cos(theta), _RGB - _LUMA_PROJECTOR), (tf.sin(theta), cross)])
    matrix = _where(applies("hue"), m) @ matrix
  if "saturation" in ops:
    s = _exp2(draws.normal("saturation/value") * _SATURATION_STD)
    m = _matrix(_LUMA_PROJECTOR + _unit(4, (3, 3)), [(s, _RGB - _LUMA_PROJECTOR)])
    matrix = _where(applies("saturation"), m) @ matrix
  return matrix


def apply_color(images, matrix):
  """Applies [b, 4, 4] to RGB images; single-channel images take the mean effect over R, G and B."""
  channels = images.shape[-1]
  if channels == 3:
    out = tf.einsum("bij,bhwj->bhwi", matrix[:, :3, :3], images)
    return out + matrix[:, None, None, :3, 3]
  gain = tf.reduce_sum(matrix[:, :3, :3], axis=[1, 2]) / 3.0
  offset = tf.reduce_mean(matrix[:, :3, 3], axis=1)
  return images * gain[:, None, None, None] + offset[:, None, None, None]


def augment(images, p, values, ops, branch_free=False):
  """Augments float32 images with probability ``p`` per operation (see the module docstring).

  Runs per replica; differentiable with respect to ``images``.

  Args:
    images: [k b, H, W, C]: k batches of the replica's b examples one after the other (k = 1 usually; reals and
      fakes in one call: k = 2).
    p: the probability, a scalar.
    values: uniform [0, 1) values [b, k, WIDTH], e.g. from ``random_values`` or a larger draw of the phase.
    ops: names of the operations to apply.
    branch_free: compute the resampling always and select the input where no example is transformed, instead of
      skipping it with a ``tf.cond`` (the same values). For XLA: with the cond, a step compiled as one XLA
      computation was compiled again at every step (measured on CPU, TF 2.21: 20 s per step).
  """
  images = tf.cast(images, tf.float32)
  p = tf.cast(p, tf.float32)
  _, height, width, _ = images.shape
  geometric = [o for o in ops if o in GEOMETRIC]
  color = [o for o in ops if o in COLOR]
  draws = Draws(values)
  if geometric:
    matrix = geometric_matrix(p, draws, geometric, (height, width))
    identity = tf.reduce_all(tf.equal(matrix, tf.constant(np.eye(3), tf.float32)))
    if branch_free:
      images = tf.where(identity, images, resample(images, matrix))
    else:
      images = tf.cond(identity, lambda: images, lambda: resample(images, matrix))
  if color:
    images = apply_color(images, color_matrix(p, draws, color))
  return images
