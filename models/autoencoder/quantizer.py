"""Vector quantisation for VQ-VAE (van den Oord et al. 2017): a codebook, the nearest-code lookup, its losses, and
the codebook's updates between steps.

Each vector z_e of the encoder's output grid is replaced by its nearest codebook vector e_k (squared Euclidean
distance); the decoder sees z_q = e_k. Its gradient passes straight through to z_e (z_e + stop_gradient(z_q - z_e)).
Per example, summed over the grid and the code dimension:

  commitment  ||z_e - sg[e_k]||²   (weighted by ``model.commitment``, β = 0.25 in the paper)
  codebook    ||sg[z_e] - e_k||²   (``model.codebook=loss`` only: the codebook learns by gradient)

With ``model.codebook=ema`` (the paper's appendix) the codebook is not trained by gradient: between steps each
vector moves to the mean of the encoder outputs assigned to it, smoothed over steps by ``model.ema_decay``, from the
global batch's assignment counts and sums (``Statistic``s, so every replica split updates the same codebook).

Dead codes: the usage of each code (its assignments per step, averaged over steps with ``model.ema_decay``) is kept
in either mode. A code used less than ``model.restart_below`` times per step is moved onto an encoder output drawn
from the current batch (Dhariwal et al. 2020 do the same in Jukebox), so no code stays unused for long. The first
step restarts every code: the codebook starts on encoder outputs of real data.
"""

import math

import tensorflow as tf

from models import base

_SMOOTHING = 1e-5  # Laplace smoothing of the EMA counts, so an unused code divides by no zero


class Codebook(tf.Module):
  """``size`` vectors of ``dim`` values, with their usage counts and (``ema``) running sums."""

  def __init__(self, size, dim, seed, ema, decay, restart_below):
    super().__init__(name="codebook")
    self.size, self.dim, self.ema = int(size), int(dim), bool(ema)
    self.decay, self.restart_below = float(decay), float(restart_below)
    initial = tf.random.stateless_uniform([self.size, self.dim], seed=[int(seed), 7001], minval=-1.0, maxval=1.0)
    initial = initial / math.sqrt(self.dim)
    if self.ema:
      self.vectors = base.state_variable(initial, "vectors")
      self.sums = base.state_variable(tf.zeros([self.size, self.dim]), "sums")
    else:
      self.vectors = tf.Variable(initial, name="vectors")
    self.usage = base.state_variable(tf.zeros([self.size]), "usage")

  def nearest(self, flat):
    """Indices [n] of the nearest codes of the vectors ``flat`` [n, dim] (float32)."""
    e = tf.convert_to_tensor(self.vectors)
    distances = (tf.reduce_sum(tf.square(flat), 1, keepdims=True) - 2.0 * tf.matmul(flat, e, transpose_b=True)
                 + tf.reduce_sum(tf.square(e), 1)[None, :])
    return tf.argmin(distances, axis=1, output_type=tf.int32)

  def lookup(self, indices):
    """The code vectors of ``indices`` (any shape), float32 [..., dim]."""
    return tf.gather(tf.convert_to_tensor(self.vectors), indices)

  def quantize(self, z, rng, candidates_per_example):
    """Quantises the grid ``z`` [b, h, w, dim] (float32) for one replica.

    Returns (z for the decoder with the straight-through gradient, indices [b, h, w], per-example squared distance
    ||z - sg[z_q]||² [b], per-example ||sg[z] - z_q||² [b], statistics {name: Statistic} for ``update``).
    """
    b, h, w, dim = z.shape
    flat = tf.reshape(z, [-1, dim])
    indices = self.nearest(tf.stop_gradient(flat))
    z_q = tf.reshape(self.lookup(indices), tf.shape(z))
    commitment = tf.reduce_sum(tf.square(z - tf.stop_gradient(z_q)), axis=[1, 2, 3])
    codebook = tf.reduce_sum(tf.square(tf.stop_gradient(z) - z_q), axis=[1, 2, 3])
    straight_through = z + tf.stop_gradient(z_q - z)
    onehot = tf.one_hot(indices, self.size, dtype=tf.float32)  # [b*h*w, K]
    statistics = {"VQ/counts": base.Statistic(tf.reduce_sum(onehot, axis=0))}
    if self.ema:
      statistics["VQ/sums"] = base.Statistic(tf.matmul(onehot, tf.stop_gradient(flat), transpose_a=True))
    if self.restart_below > 0:
      # Restart candidates: encoder outputs at random grid places, the same per example however the batch is split.
      where = rng.integers([candidates_per_example], "vq/restart", h * w)
      picked = tf.gather(tf.reshape(tf.stop_gradient(z), [b, h * w, dim]), where, batch_dims=1)
      statistics["VQ/candidates"] = base.Statistic(rng.global_rows(picked))
    return straight_through, tf.reshape(indices, [b, h, w]), commitment, codebook, statistics

  def update(self, statistics, step):
    """Between steps (cross-replica): usage, EMA codebook and dead-code restarts from the global ``statistics``."""
    counts = statistics["VQ/counts"]
    usage = self.decay * self.usage + (1.0 - self.decay) * counts
    vectors = self.vectors
    if self.ema:
      sums = self.decay * self.sums + (1.0 - self.decay) * statistics["VQ/sums"]
      total = tf.reduce_sum(usage)
      smoothed = (usage + _SMOOTHING) / (total + self.size * _SMOOTHING) * total
      vectors = sums / tf.maximum(smoothed, 1e-12)[:, None]
    if self.restart_below > 0:
      candidates = tf.reshape(statistics["VQ/candidates"], [-1, self.dim])[:self.size]
      dead = usage < self.restart_below
      if step is not None:
        # Which candidate a dead code takes rotates with the step, so a code restarted twice moves elsewhere.
        candidates = tf.roll(candidates, tf.cast(step % self.size, tf.int32), axis=0)
      usage = tf.where(dead, self.restart_below, usage)
      vectors = tf.where(dead[:, None], candidates, vectors)
      if self.ema:
        sums = tf.where(dead[:, None], candidates * self.restart_below, sums)
    self.usage.assign(usage)
    if self.ema:
      self.sums.assign(sums)
    if self.ema or self.restart_below > 0:
      self.vectors.assign(vectors)

  def perplexity(self):
    """exp(entropy) of the codes' usage shares: the number of codes in effective use (1 to ``size``)."""
    share = self.usage / tf.maximum(tf.reduce_sum(self.usage), 1e-12)
    return tf.exp(-tf.reduce_sum(tf.where(share > 0, share * tf.math.log(tf.maximum(share, 1e-30)), 0.0)))


def candidates_per_example(codebook_size, global_batch):
  """Restart candidates each example gives, so that the global batch gives at least one per code."""
  return max(1, -(-int(codebook_size) // int(global_batch)))
