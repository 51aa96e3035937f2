"""Counter-based random numbers that are the same with and without XLA, on every device and for any batch split.

TensorFlow's stateless Philox ops give different values under XLA, so every random draw of a training step
(models/base.py ``BatchRng``) and of the input pipeline (flips) comes from here instead: element i of a draw is a
hash of (key, stream name, i), computed with 32-bit integer operations only.
"""

import zlib

import tensorflow as tf


def stream_id(name):
  """A stable 31-bit integer for a random stream name."""
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _mix32(x):
  """A bijective 32-bit integer hash with strong avalanche (the "lowbias32" constants by C. Wellons)."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
  x = x * tf.constant(0x7FEB352D, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
  x = x * tf.constant(0x846CA68B, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _low32(x):
  return tf.cast(tf.bitwise.bitwise_and(tf.cast(x, tf.int64), tf.constant(0xFFFFFFFF, tf.int64)), tf.uint32)


def random_bits(key, stream, counters):
  """uint32 random bits for int64 ``counters`` under ``key`` (int64 [2]) and a stream name.

  Counter-based: element i of a draw depends only on (key, stream, i), so any slice of a draw can be computed
  alone, and only integer operations are involved, so the bits are the same with and without XLA and on every
  device (TensorFlow's stateless Philox gives different values under XLA).
  """
  key = tf.cast(key, tf.int64)
  k0 = _mix32(_low32(key[0]) ^ tf.constant(0x9E3779B9, tf.uint32))
  k1 = _mix32(k0 ^ _low32(key[1]) ^ _low32(tf.bitwise.right_shift(key[1], tf.constant(32, tf.int64))))
  k2 = _mix32(k1 ^ tf.constant(stream_id(stream), tf.uint32))
  high = _low32(tf.bitwise.right_shift(counters, tf.constant(32, tf.int64)))
  return _mix32(_mix32(_low32(counters) ^ k2) + (high ^ k1))


def _unit_uniform(bits):
  """uint32 bits -> float32 in [0, 1), exactly (24 significant bits)."""
  return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * (2.0**-24)


def uniform_values(key, stream, counters):
  return _unit_uniform(random_bits(key, stream, counters))


def normal_values(key, stream, counters):
  """Standard normal values by the Box-Muller transform of two uniforms per value."""
  u1 = 1.0 - uniform_values(key, stream, 2 * counters)  # in (0, 1], so the log is finite
  u2 = uniform_values(key, stream, 2 * counters + 1)
  return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos((2.0 * 3.141592653589793) * u2)
