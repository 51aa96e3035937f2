"""Binary images: the data of the likelihood models that treat a pixel as on or off (VAE with Bernoulli pixels,
RBM, DBN, the fully visible belief net, the HMM over rows, the mixture of Bernoullis).

Images reach models in [-1, 1]; a binary image has values in {-1, 1}. Training binarises each batch afresh
(dynamic binarisation, Salakhutdinov & Murray 2008): pixel = 1 with probability equal to its intensity. Held-out
likelihoods use one fixed binarisation instead (``evaluation.likelihood.binarize``), so every model is scored on
the same bits.
"""

import tensorflow as tf


def dynamic_binarize(images, rng, stream):
  """Images in {-1, 1}: pixel = 1 where a uniform draw of ``rng`` (stream ``stream``) is below its intensity."""
  p = (images + 1.0) / 2.0
  return tf.where(rng.uniform(images.shape[1:], stream) < p, 1.0, -1.0)


def to_bits(images):
  """{-1, 1} images -> {0, 1} values, flattened per example: float32 [b, H*W*C]."""
  x = (tf.cast(images, tf.float32) + 1.0) / 2.0
  return tf.reshape(x, [tf.shape(x)[0], -1])


def to_image(bits, shape):
  """{0, 1} values or probabilities [b, D] -> images in [-1, 1] of ``shape`` (H, W, C) per example."""
  return tf.reshape(bits * 2.0 - 1.0, [-1, *shape])


def bernoulli_log_prob(bits, logits):
  """log p(bits) under independent Bernoulli(sigmoid(logits)), summed over every axis but the first (per example):
  [b] for bits [b, D] or images [b, H, W, C] of values in {0, 1}."""
  cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=bits, logits=logits)
  return -tf.reduce_sum(tf.reshape(cross_entropy, [tf.shape(cross_entropy)[0], -1]), axis=1)


def sample_bits(probabilities, uniforms):
  """Bernoulli draws (float32 0/1) of ``probabilities`` from uniform values of the same shape."""
  return tf.cast(uniforms < probabilities, tf.float32)
