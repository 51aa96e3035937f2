"""The image pool of CycleGAN's discriminators (Shrivastava et al. 2017; Zhu et al. 2017, 4): a discriminator sees
generated images from a buffer of the last ``size`` ones, not only the newest, which damps the oscillation of the
two players.

The reference implementation walks the batch in order: while the pool is not full, an image is stored and returned
as it is; then each image, with probability 1/2, is swapped with a random stored one (the stored one is returned,
the new one takes its place), else returned as it is. Here the pool is one fixed-shape variable per domain, saved
in checkpoints, and the same for every replica; the draws are per example of the global batch (``BatchRng``), so
one device and many, or a run and its resumption, return and store the same images. The differences from walking
the batch one image at a time, all within one step:
  - every image of a step reads the pool as it was before the step (an image never gets one stored in the same
    step);
  - when two images of a step pick the same slot, the later one in the global batch stays;
  - in the step that fills the pool, the images beyond its last free slot are returned as they are.
Writes leave the replicas as ``Statistic``s (their rows of the global batch) and are applied in ``update_state``,
outside the replicas, by ``ImagePool.update``.
"""

import tensorflow as tf

from models import base


class ImagePool(tf.Module):
  """A pool of ``size`` images of ``image_shape`` (H, W, C); ``size`` 0 turns it off (``query`` returns its input).

  State (checkpointed): ``images`` [size, H, W, C] float32 and ``count``, how many slots are filled.
  """

  def __init__(self, size, image_shape, name):
    super().__init__(name=name)
    self.size = int(size)
    self.images = base.state_variable(tf.zeros([self.size, *image_shape]), f"{name}_images")
    self.count = base.state_variable(tf.constant(0, tf.int32), f"{name}_count")

  def query(self, images, rng, stream):
    """This replica's ``images`` [b, H, W, C] -> (images for the discriminator [b, H, W, C], {name: Statistic}:
    the writes, for ``update``). Runs per replica."""
    if not self.size:
      return images, {}
    images = tf.cast(images, tf.float32)
    b = int(images.shape[0])
    position = tf.cast(rng.replica_id, tf.int32) * b + tf.range(b, dtype=tf.int32)  # in the global batch
    count = tf.convert_to_tensor(self.count)
    fill_slot = count + position
    filling = fill_slot < self.size
    swap = (count >= self.size) & (rng.uniform([], f"{stream}/swap") < 0.5)
    slot = rng.integers([], f"{stream}/slot", self.size)
    stored = tf.gather(self.images, slot)
    out = tf.where(swap[:, None, None, None], stored, images)
    written = tf.where(filling, fill_slot, tf.where(swap, slot, -1))
    return out, {f"{stream}/images": base.Statistic(rng.global_rows(images)),
                 f"{stream}/slots": base.Statistic(rng.global_rows(tf.cast(written + 1, tf.float32)))}

  def update(self, metrics, stream):
    """Applies the global batch's writes (``metrics`` from ``query``, summed over replicas). Cross-replica."""
    if not self.size:
      return
    images = metrics[f"{stream}/images"]
    slots = tf.cast(tf.round(metrics[f"{stream}/slots"]), tf.int32) - 1  # -1: nothing written
    batch = int(images.shape[0])
    # The last writer of each slot in the global batch: its 1-based position, 0 where none wrote.
    writers = tf.one_hot(slots, self.size, dtype=tf.int32) * tf.range(1, batch + 1)[:, None]
    last = tf.reduce_max(writers, axis=0)
    new = tf.gather(images, tf.maximum(last - 1, 0))
    self.images.assign(tf.where((last > 0)[:, None, None, None], new, self.images))
    self.count.assign(tf.minimum(self.count + batch, self.size))
