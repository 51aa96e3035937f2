"""GAN losses against values computed by hand from their definitions."""

import numpy as np
import pytest
import tensorflow as tf

from models import losses

REAL = np.array([1.0, -2.0], np.float32)
FAKE = np.array([0.5, 3.0], np.float32)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("kind,expected", [
    ("minimax", -np.log(sigmoid(REAL)) - np.log(1.0 - sigmoid(FAKE))),
    ("nonsaturating", -np.log(sigmoid(REAL)) - np.log(1.0 - sigmoid(FAKE))),
    ("lsgan", [0.125, 9.0]),  # 0.5 (r - 1)² + 0.5 f²
    ("wgan", [-0.5, 5.0]),  # f - r
    ("wgan-gp", [-0.5, 5.0]),
    ("hinge", [1.5, 7.0]),  # max(0, 1 - r) + max(0, 1 + f)
])
def test_discriminator_loss(kind, expected):
  got = losses.discriminator_loss(kind, tf.constant(REAL), tf.constant(FAKE)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("kind,expected", [
    ("minimax", np.log(1.0 - sigmoid(FAKE))),
    ("nonsaturating", -np.log(sigmoid(FAKE))),
    ("lsgan", [0.125, 2.0]),  # 0.5 (f - 1)²
    ("wgan", [-0.5, -3.0]),
    ("wgan-gp", [-0.5, -3.0]),
    ("hinge", [-0.5, -3.0]),
])
def test_generator_loss(kind, expected):
  got = losses.generator_loss(kind, tf.constant(FAKE)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_losses_accept_bfloat16_logits_and_return_float32():
  got = losses.discriminator_loss("hinge", tf.constant(REAL, tf.bfloat16), tf.constant(FAKE, tf.bfloat16))
  assert got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), [1.5, 7.0])


def test_unknown_loss_is_refused():
  with pytest.raises(ValueError, match="unknown GAN loss"):
    losses.generator_loss("wasserstein", tf.constant(FAKE))


def test_gradient_penalty_of_linear_critic_is_known():
  # critic(x) = <a, x> has gradient a everywhere, so the penalty is (||a|| - 1)² = (3 - 1)² for every example.
  a = np.zeros([1, 2, 2, 1], np.float32)
  a[0, 0, 0, 0], a[0, 1, 1, 0] = 2.0, np.sqrt(5.0)
  critic = lambda x: tf.reduce_sum(x * a, axis=[1, 2, 3])
  real = tf.random.normal([3, 2, 2, 1], seed=1)
  fake = tf.random.normal([3, 2, 2, 1], seed=2)
  got = losses.gradient_penalty(critic, real, fake, tf.constant([0.0, 0.3, 1.0])).numpy()
  np.testing.assert_allclose(got, [4.0, 4.0, 4.0], rtol=1e-5)


def test_gradient_penalty_uses_the_interpolate():
  # critic(x) = ||x||² / 2 has gradient x, so the norm at x̂ = ε r + (1 - ε) f is ||x̂||.
  critic = lambda x: 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])
  real = np.full([2, 1, 1, 2], 3.0, np.float32)
  fake = np.zeros([2, 1, 1, 2], np.float32)
  eps = np.array([0.5, 1.0], np.float32)
  norms = eps * 3.0 * np.sqrt(2.0)  # ||(3ε, 3ε)||
  got = losses.gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.constant(eps)).numpy()
  np.testing.assert_allclose(got, (norms - 1.0)**2, rtol=1e-5)


def test_r1_penalty_is_squared_input_gradient_norm():
  a = np.arange(8, dtype=np.float32).reshape([1, 2, 2, 2])
  critic = lambda x: tf.reduce_sum(tf.cast(x, tf.float32) * a, axis=[1, 2, 3])
  got = losses.r1_penalty(critic, tf.random.normal([4, 2, 2, 2])).numpy()
  np.testing.assert_allclose(got, np.full([4], np.sum(a**2)), rtol=1e-6)
