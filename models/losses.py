"""GAN losses, per example, in float32.

Every function takes discriminator logits (float, shape [batch]) and returns one loss value per example. The
training step sums them and divides by the global batch size once.

Names follow the papers:
  minimax        Goodfellow et al. 2014, the saturating game: G minimises log(1 - D(G(z))).
  nonsaturating  Goodfellow et al. 2014, the practical variant: G maximises log D(G(z)).
  lsgan          Mao et al. 2017, least squares with targets a=0 (fake), b=1 (real), c=1 (G).
  wgan           Arjovsky et al. 2017, critic difference; Lipschitz by weight clipping.
  wgan-gp        Gulrajani et al. 2017, critic difference plus a gradient penalty on interpolates.
  hinge          Lim & Ye 2017 / Miyato et al. 2018.
"""

import tensorflow as tf

KINDS = ("minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge")


def _f32(x):
  return tf.cast(x, tf.float32)


def discriminator_loss(kind, real_logits, fake_logits):
  """Per-example loss of the discriminator (critic) for one real and one fake logit each."""
  r, f = _f32(real_logits), _f32(fake_logits)
  if kind in ("minimax", "nonsaturating"):
    # -log sigmoid(r) - log(1 - sigmoid(f))
    return tf.nn.softplus(-r) + tf.nn.softplus(f)
  if kind == "lsgan":
    return 0.5 * tf.square(r - 1.0) + 0.5 * tf.square(f)
  if kind in ("wgan", "wgan-gp"):
    return f - r
  if kind == "hinge":
    return tf.nn.relu(1.0 - r) + tf.nn.relu(1.0 + f)
  raise ValueError(f"unknown GAN loss {kind!r}")


def generator_loss(kind, fake_logits):
  """Per-example loss of the generator."""
  f = _f32(fake_logits)
  if kind == "minimax":
    # log(1 - sigmoid(f)) = -softplus(f)
    return -tf.nn.softplus(f)
  if kind == "nonsaturating":
    # -log sigmoid(f)
    return tf.nn.softplus(-f)
  if kind == "lsgan":
    return 0.5 * tf.square(f - 1.0)
  if kind in ("wgan", "wgan-gp", "hinge"):
    return -f
  raise ValueError(f"unknown GAN loss {kind!r}")


def _input_gradient_norm_sq(critic, images):
  """||d critic(x) / d x||² per example, in float32. The target is summed inside the tape (see TF_FACTS)."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    total = tf.reduce_sum(_f32(critic(images)))
  grads = _f32(tape.gradient(total, images))
  return tf.reduce_sum(tf.square(grads), axis=list(range(1, len(images.shape))))


def gradient_penalty(critic, real, fake, epsilon):
  """WGAN-GP penalty (||∇ critic(x̂)|| - 1)² per example, x̂ = ε real + (1 - ε) fake with ε ~ U[0, 1].

  Args:
    critic: function from images [b, H, W, C] to logits [b]; must treat examples independently.
    real, fake: image batches of the same shape.
    epsilon: [b] interpolation weights.
  """
  eps = tf.cast(tf.reshape(epsilon, [-1, 1, 1, 1]), real.dtype)
  mixed = eps * real + (1.0 - eps) * tf.cast(fake, real.dtype)
  norm = tf.sqrt(_input_gradient_norm_sq(critic, mixed) + 1e-12)
  return tf.square(norm - 1.0)


def r1_penalty(critic, real):
  """R1 (Mescheder et al. 2018): ||∇ D(x)||² on real images, per example. Multiply by γ/2 to use it."""
  return _input_gradient_norm_sq(critic, real)
