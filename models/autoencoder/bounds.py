"""Densities and likelihood bounds of the autoencoder family, in nats, per example (float32).

Notation: x an image, z a latent, q(z|x) = N(mean, diag(exp(logvar))) the encoder's posterior, p(z) = N(0, I) the
prior, p(x|z) the decoder's likelihood. Everything is summed over pixels and latent dimensions and kept per example,
so the loop can average over the global batch.

  ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))                      (Kingma & Welling 2014)
  IWAE_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)    (Burda et al. 2016)

IWAE_1 = ELBO <= IWAE_k <= IWAE_k' <= log p(x) for k <= k' (in expectation), and IWAE_k -> log p(x) as k grows.
"""

import math

import tensorflow as tf

from models.binary import bernoulli_log_prob  # pylint: disable=unused-import  (the VAE's Bernoulli pixels)

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_except_batch(x):
  return tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def log_normal_diag(z, mean, logvar):
  """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
  return -0.5 * tf.reduce_sum(_LOG_2PI + logvar + tf.square(z - mean) * tf.exp(-logvar), axis=-1)


def log_standard_normal(z):
  """log N(z; 0, I), summed over the last axis."""
  return -0.5 * tf.reduce_sum(_LOG_2PI + tf.square(z), axis=-1)


def kl_to_standard_normal(mean, logvar):
  """KL(N(mean, diag(exp(logvar))) || N(0, I)) per latent dimension, [b, d] (sum over the last axis for the
  total)."""
  return 0.5 * (tf.exp(logvar) + tf.square(mean) - 1.0 - logvar)


def _ndtr(x):
  """Φ(x), the standard normal CDF."""
  return 0.5 * tf.math.erfc(-x / math.sqrt(2.0))


def _log_ndtr(x):
  """log Φ(x), accurate far in the lower tail (where Φ underflows) by the asymptotic series of Mills' ratio."""
  tail = tf.minimum(x, -5.0)  # the series is only evaluated where it is used, so no division by 0 elsewhere
  series = (-0.5 * tf.square(tail) - tf.math.log(-tail) - 0.5 * _LOG_2PI
            + tf.math.log(1.0 - 1.0 / tf.square(tail) + 3.0 / tf.pow(tail, 4)))
  return tf.where(x > -5.0, tf.math.log(_ndtr(tf.maximum(x, -5.0))), series)


def discretized_gaussian_log_prob(x, mean, log_scale, levels=256):
  """log P(x) of images quantised to ``levels`` values evenly spread over [-1, 1], under a Gaussian of ``mean``
  and ``exp(log_scale)`` integrated over each value's bin; the outer bins reach to ±infinity. Summed per example.

  So the result is the log probability of the 8-bit image itself (comparable with bits/dim in the literature),
  not a density of a continuous value.
  """
  half_bin = 1.0 / (levels - 1)
  inv_scale = tf.exp(-log_scale)
  upper = (x + half_bin - mean) * inv_scale
  lower = (x - half_bin - mean) * inv_scale
  log_cdf_upper = _log_ndtr(upper)  # log P(X < upper edge): the lowest bin
  log_sf_lower = _log_ndtr(-lower)  # log P(X > lower edge): the highest bin
  cdf_delta = _ndtr(upper) - _ndtr(lower)
  # Far in a tail the difference underflows; there the density at the bin's centre times its width is accurate.
  log_mid = tf.where(cdf_delta > 1e-5, tf.math.log(tf.maximum(cdf_delta, 1e-12)),
                     -0.5 * (_LOG_2PI + tf.square((x - mean) * inv_scale)) - log_scale + math.log(2 * half_bin))
  edge = 1.0 - 1e-3
  log_p = tf.where(x < -edge, log_cdf_upper, tf.where(x > edge, log_sf_lower, log_mid))
  return _sum_except_batch(log_p)


def log_mean_exp(values, axis=0):
  """log(mean(exp(values))) along ``axis``, computed stably."""
  count = tf.cast(tf.shape(values)[axis], values.dtype)
  return tf.reduce_logsumexp(values, axis=axis) - tf.math.log(count)


def log_weights(log_px_given_z, x, mean, logvar, noise, labels=None):
  """The importance weights of k posterior draws per example, and their parts.

  Args:
    log_px_given_z: function (x [n, ...], z [n, d], labels [n] or None) -> log p(x|z) [n].
    x: the batch [b, ...]; labels: [b] or None.
    mean, logvar: the posterior q(z|x), [b, d].
    noise: standard normal draws [b, k, d]: z_i = mean + exp(logvar / 2) * noise_i. All b * k go through
      ``log_px_given_z`` in one batch.
  Returns:
    log p(x, z_i) - log q(z_i|x) [k, b], log p(x|z_i) [k, b], and KL(q(z|x) || p(z)) [b].
  """
  b, k, d = tf.shape(noise)[0], tf.shape(noise)[1], tf.shape(noise)[2]
  z = mean[:, None, :] + tf.exp(0.5 * logvar)[:, None, :] * noise  # [b, k, d]
  flat_labels = None if labels is None else tf.repeat(labels, k, axis=0)
  log_px = tf.reshape(log_px_given_z(tf.repeat(x, k, axis=0), tf.reshape(z, [b * k, d]), flat_labels), [b, k])
  log_w = log_px + log_standard_normal(z) - log_normal_diag(z, mean[:, None, :], logvar[:, None, :])
  kl = tf.reduce_sum(kl_to_standard_normal(mean, logvar), axis=-1)
  return tf.transpose(log_w), tf.transpose(log_px), kl


def iwae_bound(log_w):
  """IWAE_k per example [b] from the log weights [k, b] of k draws."""
  return log_mean_exp(log_w, axis=0)


def elbo(log_px, kl):
  """The ELBO per example [b]: the reconstruction term averaged over the k draws of ``log_px`` [k, b], minus the
  analytic KL [b]."""
  return tf.reduce_mean(log_px, axis=0) - kl
