"""From a source to per-replica batches under any strategy.

Every input pipeline (one per worker) builds its dataset from an ``InputLayout`` that says which replicas it feeds.
The per-replica batch is the global batch divided by the number of replicas, and batches keep a static shape
(``drop_remainder`` semantics) so XLA and TPUs compile one program.

Sources that hold their examples in memory are read through ``indexed_batches``: example positions in an endless
stream are mapped to examples by a seeded permutation per epoch. Global step ``g`` always trains on stream
positions ``[g * B, (g + 1) * B)`` for global batch ``B``, split in order over the replicas, whatever the number of
workers and devices. So a resumed run continues with exactly the examples it would have seen, and one device and
many replicas see the same global batches.
"""

import dataclasses

import tensorflow as tf

from genscale import random as random_lib
from genscale.errors import require
from pipelines import transforms

_MAX_INT64 = 2**62


@dataclasses.dataclass(frozen=True)
class InputLayout:
  """Which part of each global batch one input pipeline produces."""
  global_batch: int
  num_pipelines: int = 1
  pipeline_id: int = 0
  replicas_per_pipeline: int = 1

  @property
  def num_replicas(self):
    return self.num_pipelines * self.replicas_per_pipeline

  @property
  def per_replica_batch(self):
    return self.global_batch // self.num_replicas

  @classmethod
  def from_context(cls, context, global_batch):
    """From a tf.distribute.InputContext."""
    replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
    layout = cls(global_batch=int(global_batch), num_pipelines=context.num_input_pipelines,
                 pipeline_id=context.input_pipeline_id, replicas_per_pipeline=replicas_per_pipeline)
    layout.check()
    return layout

  def check(self):
    require(self.global_batch % self.num_replicas == 0,
            f"--config.batch_size {self.global_batch} is not divisible by {self.num_replicas} replicas; "
            f"use a multiple of {self.num_replicas}")


def stream_positions(layout, start_step):
  """Dataset of int64 vectors: the stream positions each per-replica batch of this pipeline holds, in order."""
  per_replica = layout.per_replica_batch
  replicas = layout.replicas_per_pipeline
  first_replica = layout.pipeline_id * replicas

  def positions(counter):
    step = counter // replicas
    replica = first_replica + counter % replicas
    base = step * layout.global_batch + replica * per_replica
    return base + tf.range(per_replica, dtype=tf.int64)

  return tf.data.Dataset.range(int(start_step) * replicas, _MAX_INT64).map(positions)


def permuted(positions, count, seed, shuffle=True):
  """Maps stream positions to example ids: a fresh seeded permutation of ``count`` examples in every epoch."""
  if not shuffle:
    return positions % count
  epoch = positions // count
  seeds = tf.stack([tf.fill(tf.shape(positions), tf.constant(seed, tf.int64)), epoch, tf.zeros_like(epoch)], 1)
  return tf.raw_ops.RandomIndexShuffle(index=positions % count, seed=seeds,
                                       max_index=tf.constant(count - 1, tf.int64))


def flip_mask(positions, seed):
  """A per-example coin (bool) that depends only on the seed and the stream position."""
  key = tf.constant([seed, 0], tf.int64)
  return random_lib.uniform_values(key, "input/flip", tf.cast(positions, tf.int64)) < 0.5


def indexed_batches(images, labels, layout, *, seed, start_step, transform, shuffle=True, flip=False):
  """Per-replica batches from in-memory arrays, deterministic in (seed, step).

  Args:
    images: uint8 array [N, H, W, C].
    labels: int32 array [N].
    layout: the InputLayout of this pipeline.
    seed: shuffling seed.
    start_step: the global step to start from (a resumed run passes its restored step).
    transform: function from a uint8 batch to the model's float32 batch.
    shuffle: permute the examples every epoch.
    flip: mirror images horizontally with probability 1/2.
  """
  count = int(images.shape[0])
  require(count > 0, "the dataset is empty")
  images = tf.constant(images)
  labels = tf.constant(labels, tf.int32)

  def gather(positions):
    ids = permuted(positions, count, seed, shuffle)
    batch = tf.gather(images, ids)
    if flip:  # on the uint8 pixels, before the transform: cheaper, and flipping commutes with it
      batch = transforms.flip_where(batch, flip_mask(positions, seed))
    return {"image": transform(batch), "label": tf.gather(labels, ids)}

  dataset = stream_positions(layout, start_step).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)
