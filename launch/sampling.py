"""Generating images with a model on every replica; used for sample grids, the sample command and evaluation.

Each call generates one global batch: every replica draws its rows of the per-example randomness (see
``models.base.BatchRng``) and generates them, and the images are gathered. The image for a given (seed, call,
row) is the same on one device and on many.
"""

import numpy as np
import tensorflow as tf

from genscale.errors import UserError
from models.base import BatchRng, GenerativeModel


class Sampler:
  """Compiled, distributed ``model.generate``.

  Args:
    runtime: the Runtime.
    model: a GenerativeModel built under the runtime's strategy.
    batch_size: images per call; rounded up to a multiple of the number of replicas.
    ema: use the EMA weights.
    options: model-specific sampling options (truncation, sampler, steps, guidance...).
  """

  def __init__(self, runtime, model, batch_size, ema=True, **options):
    self.runtime = runtime
    self.model = model
    if not model.samples_from_prior:
      raise UserError(f"{type(model).__name__} has no prior to sample from: it reconstructs images (TensorBoard's "
                      "previews); train a model that samples, e.g. launch/configs/vae.py")
    model.check_sampling_options(**options)
    replicas = runtime.num_replicas
    self.batch_size = -(-int(batch_size) // replicas) * replicas
    self.per_replica = self.batch_size // replicas
    generate = runtime.compile(
        lambda rng_key, replica_id, labels: model.generate(
            BatchRng(rng_key, replica_id, self.per_replica, replicas), labels, ema=ema, **options))

    def replica_fn(rng_key, labels):
      replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
      mine = tf.slice(labels, [replica_id * self.per_replica], [self.per_replica])
      return generate(rng_key, replica_id, mine)

    @tf.function
    def call(rng_key, labels):
      images = runtime.strategy.run(replica_fn, args=(rng_key, labels))
      return runtime.strategy.gather(images, axis=0)

    self._call = call
    self._options, self._ema = options, ema
    self._alone = {}  # the compiled calls of for_seeds, walk and sweep, by kind

  def _one_at_a_time(self, kind, draw):
    """A compiled call over rows (seed, label, *extra) of per-example inputs, each example drawn alone: row i is
    ``draw(BatchRng.alone(seed_i), label_i [1], *extra_i)[0]``. Every replica maps over its share of the rows, as
    ``generate``'s call splits a batch. Built once per ``kind``."""
    if kind in self._alone:
      return self._alone[kind]
    runtime, per_replica = self.runtime, self.per_replica

    def one(args):
      seed, label, *extra = args
      return tf.cast(draw(BatchRng.alone(seed), label[None], *extra)[0], tf.float32)

    rows = runtime.compile(lambda *columns: tf.map_fn(one, columns, fn_output_signature=tf.float32))

    def replica_fn(*columns):
      first = tf.distribute.get_replica_context().replica_id_in_sync_group * per_replica
      return rows(*[column[first:first + per_replica] for column in columns])

    @tf.function
    def call(*columns):
      return runtime.strategy.gather(runtime.strategy.run(replica_fn, args=columns), axis=0)

    self._alone[kind] = call
    return call

  def _in_calls(self, call, columns, progress):
    """``call`` over the rows of ``columns`` (numpy arrays of one length), ``batch_size`` rows a call; the last
    call is filled up with copies of its last row, so every call has the traced shape. numpy float32 [rows, ...]."""
    count, out = len(columns[0]), []
    for start in range(0, count, self.batch_size):
      chunk = [column[start:start + self.batch_size] for column in columns]
      rows = len(chunk[0])
      chunk = [np.concatenate([c, np.repeat(c[-1:], self.batch_size - rows, axis=0)]) for c in chunk]
      out.append(call(*[tf.constant(c) for c in chunk]).numpy()[:rows])
      if progress is not None:
        progress.update(done=start + rows)
    return np.concatenate(out)

  def for_seeds(self, seeds, labels=None, progress=None):
    """One image per seed, each drawn alone from the key (seed, 0): the image of seed s is the one of
    ``generate(s, 1)`` at a batch of one (and of an exported model's seed s), whatever the batch size here and
    whichever seeds come with it. Returns numpy float32 [len(seeds), H, W, C]."""
    model, ema, options = self.model, self._ema, self._options
    call = self._one_at_a_time("seeds", lambda rng, label: model.generate(rng, label, ema=ema, **options))
    seeds = np.asarray(seeds, np.int64)
    labels = np.zeros_like(seeds, np.int32) if labels is None else np.asarray(labels, np.int32)
    return self._in_calls(call, [seeds, labels], progress)

  def walk(self, seeds, frames, label=0, progress=None):
    """A latent walk: ``frames`` images from the z of each seed to the next one's, along the great circle (slerp:
    a Gaussian latent's norm stays typical), then the last seed's image. The z of seed s is the one its
    ``for_seeds`` image draws; the model's other randomness (StyleGAN2's noise images) comes from the first seed
    in every frame, so only the latent moves. Returns numpy float32 [(len(seeds) - 1) * frames + 1, H, W, C]."""
    model, ema = self.model, self._ema
    if model.latent_shape is None:
      raise UserError(f"{type(model).__name__} has no latent to walk through: --walk takes a latent-variable "
                      "model (DCGAN, Progressive GAN, StyleGAN2, VAE)")
    if len(seeds) < 2 or int(frames) < 1:
      raise UserError(f"--walk needs two seeds or more and --frames at least 1 (got {len(seeds)} and {frames})")
    z = np.stack([model.sample_latent(BatchRng.alone(s)).numpy()[0] for s in seeds])
    points = [_slerp(z[k], z[k + 1], t / frames) for k in range(len(seeds) - 1) for t in range(frames)] + [z[-1]]
    call = self._one_at_a_time("walk", lambda rng, label, latent: model.from_latent(latent[None], rng, label,
                                                                                     ema=ema))
    count = len(points)
    return self._in_calls(call, [np.full([count], int(seeds[0]), np.int64), np.full([count], int(label), np.int32),
                                 np.asarray(points, np.float32)], progress)

  def sweep(self, seed, name, values, label=0, progress=None):
    """One seed's image at each of ``values`` of the model's serving input ``name`` (StyleGAN2's truncation, a
    diffusion model's guidance or steps), the other inputs at their defaults: the frames of a truncation or
    guidance sweep. Frame i is the image an exported model gives for (seed, name=values[i]). Returns numpy
    float32 [len(values), H, W, C]."""
    model, ema = self.model, self._ema
    inputs = model.serving_inputs()
    if name not in inputs:
      choices = ", ".join(sorted(inputs)) or "none"
      raise UserError(f"--sweep={name}: {type(model).__name__} takes no setting of that name (it has: {choices})")
    dtype, _ = inputs[name]
    bounds = model.serving_range(name)
    for value in values:
      if ("min" in bounds and value < bounds["min"]) or ("max" in bounds and value > bounds["max"]):
        raise UserError(f"--sweep={name}: {value} is outside {bounds.get('min', '-inf')}..{bounds.get('max', 'inf')}")
    call = self._one_at_a_time(("sweep", name), lambda rng, label, value: model.serve(rng, label, ema=ema,
                                                                                       **{name: value}))
    values = np.asarray(values, np.float64)
    values = (np.rint(values) if dtype.is_integer else values).astype(dtype.as_numpy_dtype)
    count = len(values)
    return self._in_calls(call, [np.full([count], int(seed), np.int64), np.full([count], int(label), np.int32),
                                 values], progress)

  def batch(self, rng_key, labels=None):
    """One batch of float32 images in [-1, 1] as numpy [batch_size, H, W, C]."""
    if labels is None:
      labels = np.zeros([self.batch_size], np.int32)
    labels = np.asarray(labels, np.int32)
    if labels.shape[0] < self.batch_size:
      labels = np.concatenate([labels, np.zeros([self.batch_size - labels.shape[0]], np.int32)])
    return self._call(tf.constant(rng_key, tf.int64), tf.constant(labels)).numpy()

  def generate(self, seed, count, labels=None, progress=None):
    """``count`` images from ``seed``: call i uses key (seed, i). Returns numpy float32 [count, H, W, C]."""
    out = []
    for i in range(-(-int(count) // self.batch_size)):
      chunk = None if labels is None else labels[i * self.batch_size:(i + 1) * self.batch_size]
      out.append(self.batch([int(seed), i], chunk))
      if progress is not None:
        progress.update(done=min((i + 1) * self.batch_size, count))
    return np.concatenate(out)[:count]


def _slerp(a, b, t):
  """The point a fraction ``t`` along the great circle from ``a`` to ``b``, with the norm interpolated linearly
  (a straight line when they are parallel)."""
  if t == 0:
    return a  # the first frame is the seed's own latent, bit for bit
  norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
  cosine = np.clip(np.dot(a, b) / max(norm_a * norm_b, 1e-12), -1.0, 1.0)
  angle = np.arccos(cosine)
  if angle < 1e-6:
    return (1 - t) * a + t * b
  direction = (np.sin((1 - t) * angle) * a / norm_a + np.sin(t * angle) * b / norm_b) / np.sin(angle)
  return direction * ((1 - t) * norm_a + t * norm_b)


def parse_seeds(text):
  """Seeds from ``0-63``, ``1,5,9`` or ``0-9,20`` (ranges include both ends), in that order. Raises UserError."""
  seeds = []
  for part in str(text).split(","):
    part = part.strip()
    low, dash, high = part.partition("-")
    try:
      first, last = (int(low), int(high)) if dash else (int(part), int(part))
    except ValueError:
      raise UserError(f"--seeds={text}: give seeds as ranges and lists of non-negative integers, e.g. 0-63 or "
                      "1,5,9") from None
    if first < 0 or last < first:
      raise UserError(f"--seeds={text}: {part} is not a range of non-negative seeds (low-high, low <= high)")
    seeds.extend(range(first, last + 1))
  if len(seeds) > 1_000_000:
    raise UserError(f"--seeds={text} asks for {len(seeds)} images; split it into smaller runs")
  return seeds


def grid_labels(count, num_classes):
  """Labels for a grid: image i has class i % num_classes, so a grid num_classes wide has one class per column."""
  if not num_classes:
    return None
  return np.arange(count, dtype=np.int32) % num_classes


def has_previews(model):
  """Whether the model shows more than samples (reconstructions, interpolations: ``GenerativeModel.preview``)."""
  return type(model).preview is not GenerativeModel.preview


class Previewer:
  """Compiled, distributed ``model.preview`` on batches of a distributed dataset; outputs gathered in row order.

  Args:
    runtime: the Runtime.
    model: a GenerativeModel built under the runtime's strategy.
    seed: the randomness of every preview (so every grid of a run shows the same draws).
  """

  def __init__(self, runtime, model, seed):
    self.runtime = runtime
    replicas = runtime.num_replicas
    preview = runtime.compile(
        lambda images, labels, replica_id, per_replica, more: model.preview(
            images, labels, BatchRng(tf.constant([seed, 0x9E7], tf.int64), replica_id, per_replica, replicas),
            **more))

    def replica_fn(batch):
      replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
      more = {k: v for k, v in batch.items() if k not in ("image", "label")}  # a second domain's image_b, label_b
      return preview(batch["image"], batch["label"], replica_id, batch["image"].shape[0], more)

    @tf.function
    def call(batch):
      outputs = runtime.strategy.run(replica_fn, args=(batch,))
      gathered = {name: runtime.strategy.gather(value, axis=0) for name, value in outputs.items()}
      return gathered, runtime.strategy.gather(batch["label"], axis=0)

    self._call = call

  def __call__(self, batches):
    """{name: numpy [n, ...]} over the distributed ``batches``, and their labels [n]."""
    outputs, labels = {}, []
    for batch in batches:
      values, batch_labels = self._call(batch)
      for name, value in values.items():
        outputs.setdefault(name, []).append(value.numpy())
      labels.append(batch_labels.numpy())
    return {name: np.concatenate(values) for name, values in outputs.items()}, np.concatenate(labels)
