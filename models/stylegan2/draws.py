"""Per-replica pieces of the StyleGAN2 phases: one random draw per phase, and the two regularisers' gradients."""

import tensorflow as tf

from models.stylegan2 import augment as augment_lib


def r1_penalty_and_logits(critic, images):
  """(||∇x critic(x)||² per example, critic(x)), float32. The logits come from the same forward pass."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    logits = tf.cast(critic(images), tf.float32)
    total = tf.reduce_sum(logits)
  grads = tf.cast(tape.gradient(total, images), tf.float32)
  return tf.reduce_sum(tf.square(grads), axis=list(range(1, len(images.shape)))), logits


def path_lengths(synthesis, ws, projection):
  """||J_w^T y|| per example (StyleGAN2 eq. 4), averaged over the layers of w like the reference.

  Args:
    synthesis: ws [b, num_ws, w_dim] -> images [b, H, W, C].
    ws: float32 [b, num_ws, w_dim].
    projection: y, float32 [b, H, W, C], normal noise divided by sqrt(H W).
  Returns:
    (lengths [b], images).
  """
  with tf.GradientTape() as tape:
    tape.watch(ws)
    images = tf.cast(synthesis(ws), tf.float32)
    total = tf.reduce_sum(images * projection)
  grads = tf.cast(tape.gradient(total, ws), tf.float32)
  return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=2), axis=1)), images


class PhaseDraws:
  """Every per-example random value of one phase, from a single uniform draw of this replica's rows.

  A counter-based draw is a few hundred graph nodes, and the step's graph is traced for every phase, so a phase
  makes one draw: uniform values are columns of it, normal values come from pairs of columns (Box-Muller).
  ``draws[name]`` is [b, *shape].

  Args:
    rng: the phase's BatchRng.
    stream: the draw's stream name.
    uniform, normal: {name: per-example shape}.
  """

  def __init__(self, rng, stream, uniform, normal):
    self.batch = rng.per_replica_batch
    sizes = [_size(shape) for shape in uniform.values()] + [2 * _size(shape) for shape in normal.values()]
    self.values = {}
    if not sizes:  # e.g. the R1 phase without augmentation draws nothing
      return
    parts = tf.split(rng.uniform([sum(sizes)], stream), sizes, axis=1)
    for (name, shape), part in zip(uniform.items(), parts[:len(uniform)]):
      self.values[name] = tf.reshape(part, [-1, *shape])
    for (name, shape), part in zip(normal.items(), parts[len(uniform):]):
      u1, u2 = tf.split(part, 2, axis=1)
      self.values[name] = tf.reshape(augment_lib.box_muller(u1, u2), [-1, *shape])

  def __getitem__(self, name):
    return self.values[name]

  def first_copy(self, name):
    """A view whose ``name`` holds only the first of its copies (axis 1), e.g. the augmentation of the reals."""
    return _View(self, name, 0)

  def second_copy(self, name):
    return _View(self, name, 1)


class _View:

  def __init__(self, draws, name, index):
    self.batch = draws.batch
    self.values = dict(draws.values)
    if name in self.values:
      self.values[name] = self.values[name][:, index:index + 1]

  def __getitem__(self, name):
    return self.values[name]


def _size(shape):
  size = 1
  for s in shape:
    size *= int(s)
  return size
