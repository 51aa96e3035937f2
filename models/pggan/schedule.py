"""The growing schedule: level of detail as a closed-form function of the images shown, and what it implies.

Terms (as in the paper's code): the *level of detail* ``lod`` is 0 at the target resolution and grows by one for
each halving, so a 32x32 target has lod 3 at 4x4. Training starts at ``start_resolution`` and, for each new
resolution, shows ``stable_kimg`` thousand images at the current one, then fades the next one in over
``fade_kimg`` thousand images: during the fade lod falls linearly from L to L - 1. When lod is fractional the
networks run at the *higher* resolution 2^(log2 target - floor(lod)) and blend the new block's output with the
previous resolution's, with weight

  alpha = 1 - (lod - floor(lod))      (0 when the fade starts, 1 at a stable level).

Everything here is a function of the image count, so a resumed run continues the same fade exactly.
"""

import math

import tensorflow as tf

from genscale.errors import require


class Growth:
  """The schedule of one run.

  Args:
    target_resolution: final (square) resolution, a power of two >= 8.
    start_resolution: the first resolution trained, a power of two between 4 and the target.
    stable_kimg: thousands of images shown at each resolution before the next one fades in.
    fade_kimg: thousands of images over which a new resolution fades in.
  """

  def __init__(self, target_resolution, start_resolution, stable_kimg, fade_kimg):
    self.levels = int(math.log2(target_resolution)) - 2  # resolution doublings after 4x4
    self.start_lod = float(int(math.log2(target_resolution)) - int(math.log2(start_resolution)))
    self.stable_kimg = float(stable_kimg)
    self.fade_kimg = float(fade_kimg)
    require(self.stable_kimg >= 0 and self.fade_kimg >= 0 and self.stable_kimg + self.fade_kimg > 0,
            f"--config.model.stable_kimg={stable_kimg} and fade_kimg={fade_kimg} must be non-negative and not both 0")

  def lod(self, nimg):
    """Level of detail after ``nimg`` images (int or int64 tensor) -> float32 tensor. Works in graphs and XLA."""
    kimg = tf.cast(nimg, tf.float64) / 1000.0
    period = self.stable_kimg + self.fade_kimg
    phase = tf.floor(kimg / period)
    into_phase = kimg - phase * period
    lod = self.start_lod - phase
    if self.fade_kimg > 0:  # without a fade, the next resolution starts at the phase boundary
      lod -= tf.maximum(into_phase - self.stable_kimg, 0.0) / self.fade_kimg
    return tf.cast(tf.maximum(lod, 0.0), tf.float32)

  def host_lod(self, nimg):
    """``lod(nimg)`` on the host, before the cast to float32: the same float64 operations in the same order."""
    kimg = float(nimg) / 1000.0
    period = self.stable_kimg + self.fade_kimg
    phase = math.floor(kimg / period)
    lod = self.start_lod - phase
    if self.fade_kimg > 0:
      lod -= max(kimg - phase * period - self.stable_kimg, 0.0) / self.fade_kimg
    return max(lod, 0.0)

  def level_and_fading(self, nimg):
    """(level, fading) of the step after ``nimg`` images (host): the level the networks run at (resolution
    4 * 2^level) and whether its block is still fading in (lod fractional)."""
    lod = self.host_lod(nimg)
    whole = math.floor(lod)
    return self.levels - int(whole), lod != whole

  def stage_end(self, nimg):
    """The first image count after ``nimg`` whose (level, fading) differs from that of ``nimg``; None at the
    target resolution once it is stable (host)."""
    key = self.level_and_fading(nimg)
    if key == (self.levels, False):
      return None
    kimg = float(nimg) / 1000.0
    period = self.stable_kimg + self.fade_kimg
    phase = math.floor(kimg / period)
    if key[1] or self.fade_kimg == 0:  # a fade (or, without fades, a stable phase) ends with its period
      end = math.ceil((phase + 1) * period * 1000.0)
    else:  # a stable phase ends one image after stable_kimg (lod is still whole at exactly stable_kimg)
      end = math.floor((phase * period + self.stable_kimg) * 1000.0) + 1
    # Guard against rounding in the kimg arithmetic: the end is where the closed form says the stage changes.
    end = max(end, int(nimg) + 1)
    while end - 1 > nimg and self.level_and_fading(end - 1) != key:
      end -= 1
    while self.level_and_fading(end) == key:
      end += 1
    return end

  def fade_kimg_range(self, resolution):
    """(start, end) in kimg of the fade-in of a resolution above the start one (host; for configs and logs)."""
    doublings = int(math.log2(resolution)) - (self.levels + 2 - int(self.start_lod))
    end = doublings * (self.stable_kimg + self.fade_kimg)
    return end - self.fade_kimg, end


def level_and_alpha(lod, levels):
  """(level, alpha) of a level of detail: the resolution 4 * 2^level the networks run at, and the fade weight.

  ``level`` is an int32 scalar in [0, levels]; ``alpha`` a float32 scalar in (0, 1], 1 at a stable level.
  """
  lod = tf.clip_by_value(tf.cast(lod, tf.float32), 0.0, float(levels))
  whole = tf.floor(lod)
  level = levels - tf.cast(whole, tf.int32)
  alpha = 1.0 - (lod - whole)
  return level, alpha


def resolution_of(lod, levels):
  """The resolution the networks run at, as a float32 tensor (for logging)."""
  level, _ = level_and_alpha(lod, levels)
  return 4.0 * tf.pow(2.0, tf.cast(level, tf.float32))
