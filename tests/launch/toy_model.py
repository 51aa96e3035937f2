"""A model family small enough for closed-form checks of the training loop.

"mean": one parameter image m; per-example loss = mean over pixels of (m - x)²; trained with plain SGD, one step
moves m to m - lr * 2 (m - x̄) / P, where x̄ is the mean image of the global batch and P the pixel count. Its EMA
copy follows the loop's EMA rule. ``model.nan_at_step`` makes the loss NaN at that data-stream position;
``model.inf_grad_at_step`` keeps the loss finite there but makes its gradient infinite (what a float16 overflow
does), which a loss-scaling optimizer must skip.
"""

import keras
import ml_collections
import tensorflow as tf

from models import base
import models


class MeanImage(base.GenerativeModel):
  shape_keys = ("width",)

  def __init__(self, config, info, hardware):
    super().__init__(name="mean_image")
    self.num_classes = 0
    shape = [int(config.resolution), int(config.resolution), int(config.channels)]
    self.m = tf.Variable(tf.fill(shape, 0.25), name="m")
    holder = tf.Module()
    holder.m = self.m
    self.holder = holder
    self.ema, self.ema_pairs = base.ema_copy(lambda keys: _holder(shape), holder, config.seed)
    self.optimizers = {"sgd": keras.optimizers.SGD(float(config.model.lr))}
    self.nan_at_step = int(config.model.nan_at_step)
    self.inf_grad_at_step = int(config.model.get("inf_grad_at_step", -1))
    self.compute_dtype = hardware.compute_dtype

  def loss(self, batch, rng):
    x = tf.cast(batch["image"], self.compute_dtype)
    m = _infinite_gradient_where(self.m, rng.key[1] == self.inf_grad_at_step)
    per_example = tf.reduce_mean(tf.square(tf.cast(m, self.compute_dtype) - x), axis=[1, 2, 3])
    if self.nan_at_step >= 0:
      poison = tf.where(rng.key[1] == self.nan_at_step, float("nan"), 1.0)
      per_example = tf.cast(per_example, tf.float32) * poison
    x_mean = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2, 3])
    bright = tf.cast(x_mean > -0.8, tf.float32)
    return per_example, {"fit/x_mean": x_mean, "fit/bright_mean": (x_mean * bright, bright)}

  def phases(self, stage):
    del stage
    return [base.Phase("fit", "sgd", [self.m], self.loss)]

  def generate(self, rng, labels=None, ema=True, **options):
    m = self.ema.m if ema else self.m
    return tf.tile(m[None], [rng.per_replica_batch, 1, 1, 1])


@tf.custom_gradient
def _infinite_gradient_where(value, poisoned):
  """The identity, whose gradient is infinite where ``poisoned`` holds."""
  def gradient(upstream):
    return tf.where(poisoned, tf.fill(tf.shape(upstream), float("inf")), upstream), None
  return tf.identity(value), gradient


def _holder(shape):
  h = tf.Module()
  h.m = tf.Variable(tf.zeros(shape), name="m")
  return h


def _resolve(config):
  return config


models.register("mean_image", _resolve, MeanImage)


def config(**overrides):
  from launch.configs import common  # pylint: disable=g-import-not-at-top
  c = common.base()
  c.model = ml_collections.ConfigDict({"name": "mean_image", "lr": 0.5, "nan_at_step": -1, "width": 1})
  c.resolution = 4
  c.batch_size = 8
  c.steps = 4
  c.runtime.strategy = "cpu"
  c.log_every = c.sample_every = c.checkpoint_every = 2
  c.sample_grid = 4
  c.update(overrides)
  return c
