"""Autoencoder (AE) and variational autoencoder (VAE, β-VAE, conditional VAE) models.

AE: code = encoder(x), x̂ = decoder(code); the loss is the reconstruction error (``model.reconstruction``: mse, or
bce on pixel intensities), summed over pixels. As a denoising AE (``model.denoise``) the encoder sees a corrupted
input (Gaussian noise of std ``model.noise``, or pixels set to the background with probability ``model.noise``)
and the loss compares with the clean image. An AE has no prior, so it has no samples; its reconstructions are its
output.

VAE (Kingma & Welling 2014): q(z|x) = N(mean, diag(exp(logvar))) from the encoder, p(z) = N(0, I), p(x|z) from
the decoder: ``model.likelihood=bernoulli`` on binary pixels (with ``model.binarize=dynamic`` every batch redraws
x ~ Bernoulli(intensity), Salakhutdinov & Murray 2008) or ``gaussian``, a Gaussian with a learned scale per
channel integrated over the 256 levels of 8-bit images (for grey or colour images). The loss of one example is

  -E_q[log p(x|z)] + β KL(q(z|x) || p(z))              (β = ``model.beta``; Higgins et al. 2017), or
  -E_q[log p(x|z)] + γ |KL(q(z|x) || p(z)) - C|        with ``model.capacity_nats`` = C_max > 0 (Burgess et al.
                                                       2018): C rises linearly from 0 to C_max over
                                                       ``model.capacity_steps`` steps,

in nats, summed over pixels and latents, ONE value per example: the loop averages it over the global batch. (Averaging
the reconstruction over pixels instead, while the KL stays a sum, weighs the KL hundreds of times too much: the
posterior collapses to the prior.)
"""

import math

import keras
import numpy as np
import tensorflow as tf

from genscale.errors import UserError
from models import base
from models import binary
from models.autoencoder import bounds
from models.autoencoder import networks

# A posterior's latent dimension counts as active when the variance of its mean over the data exceeds this
# (Burda et al. 2016).
ACTIVE_UNIT_THRESHOLD = 0.01
_MIN_LOG_SCALE = -7.0  # the Gaussian likelihood's scale stays above e^-7 (far below an 8-bit level, 1/127.5)


def optimizer(config):
  """Adam at ``model.lr``; with ``model.lr_decay=cosine`` the rate falls along a half cosine to 5% of it at the
  run's last step (the optimizer's step count drives it, so a resume continues the schedule)."""
  m = config.model
  rate = float(m.lr)
  if m.lr_decay == "cosine":
    rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=int(config.steps), alpha=0.05)
  return keras.optimizers.Adam(learning_rate=rate)


def output_image(reconstruction, out):
  """A decoder's output as an image in [-1, 1]: intensities from logits (bce), the output itself (mse)."""
  image = tf.sigmoid(out) * 2.0 - 1.0 if reconstruction == "bce" else out
  return tf.clip_by_value(image, -1.0, 1.0)


def reconstruction_error(reconstruction, images, out):
  """(error, mean squared error per pixel), per example, of the decoder output ``out`` for ``images``: the error
  is the squared error summed over pixels in [0, 1] units (mse), or the cross-entropy of the intensities (bce)."""
  target = (images + 1.0) / 2.0
  if reconstruction == "bce":
    error = -bounds.bernoulli_log_prob(target, out)
  else:
    error = tf.reduce_sum(tf.square((out + 1.0) / 2.0 - target), axis=[1, 2, 3])
  pixel_mse = tf.reduce_mean(tf.square((output_image(reconstruction, out) + 1.0) / 2.0 - target), axis=[1, 2, 3])
  return error, pixel_mse


class Autoencoder(base.GenerativeModel):
  """A deterministic autoencoder (AE) or a denoising one."""

  shape_keys = ("latent_dim", "widths")
  samples_from_prior = False

  def __init__(self, config, info, hardware):
    super().__init__(name="ae")
    del info  # an AE takes no labels
    m = config.model
    self.latent_dim = int(m.latent_dim)
    self.reconstruction = m.reconstruction
    self.denoise, self.noise = m.denoise, float(m.noise)
    self.num_classes = 0
    self.encoder, self.decoder = networks.build(config, hardware, self.latent_dim)
    self.optimizers = {"ae": optimizer(config)}
    self.ema_pairs = []

  def corrupt(self, images, rng):
    if self.denoise == "gaussian":
      return images + self.noise * rng.normal(images.shape[1:], "ae/noise")
    if self.denoise == "mask":
      keep = rng.uniform(images.shape[1:], "ae/mask") >= self.noise
      return tf.where(keep, images, -tf.ones_like(images))
    return images

  def decode(self, code):
    """Images in [-1, 1] from codes."""
    return output_image(self.reconstruction, self.decoder(code))

  def loss(self, batch, rng):
    images = batch["image"]
    out = self.decoder(self.encoder(self.corrupt(images, rng)))
    error, pixel_mse = reconstruction_error(self.reconstruction, images, out)
    return error, {"AE/reconstruction": error, "AE/mse_per_pixel": pixel_mse}

  def phases(self, stage):
    del stage
    variables = [*self.encoder.trainable_variables, *self.decoder.trainable_variables]
    return [base.Phase("AE", "ae", variables, self.loss)]

  def reconstruct(self, images, labels=None):
    del labels
    return self.decode(self.encoder(images))

  def preview(self, images, labels, rng):
    del rng
    return {"reconstructions": tf.concat([images, self.reconstruct(images, labels)], axis=2)}

  def generate(self, rng, labels=None, ema=True, **options):
    raise UserError("an autoencoder has no prior to sample from: train a VAE (launch/configs/vae.py) for samples, "
                    "or look at the reconstructions in TensorBoard")


class VAE(base.GenerativeModel):
  """A variational autoencoder; β-VAE, capacity-annealed and class-conditional versions through the config."""

  shape_keys = ("latent_dim", "widths", "likelihood", "conditional")
  samples_from_prior = True
  likelihood_method = "iwae"  # evaluation/likelihood.py: negative ELBO and IWAE bounds

  def __init__(self, config, info, hardware):
    super().__init__(name="vae")
    m = config.model
    self.channels = int(config.channels)
    self.latent_dim = int(m.latent_dim)
    self.likelihood = m.likelihood
    self.dynamic_binarization = m.binarize == "dynamic"
    self.beta = float(m.beta)
    self.capacity_nats, self.capacity_steps = float(m.capacity_nats), int(m.capacity_steps)
    self.capacity_gamma = float(m.capacity_gamma)
    self.num_classes = base.conditional_classes(m, info)
    self.encoder, self.decoder = networks.build(config, hardware, 2 * self.latent_dim, self.num_classes)
    if self.likelihood == "gaussian":
      self.log_scale = tf.Variable(tf.fill([self.channels], math.log(0.1)), name="log_scale")
    self.capacity = base.state_variable(0.0, "capacity")
    self.optimizers = {"vae": optimizer(config)}
    self.ema_pairs = []

  # ---- the model's densities

  def likelihood_data(self):
    """What the likelihood is of: "binary" pixels (images in {-1, 1}) or "8bit" images."""
    return "binary" if self.likelihood == "bernoulli" else "8bit"

  def posterior(self, x, labels=None):
    """(mean, logvar) of q(z|x), float32 [b, d]."""
    out = self.encoder(x, labels)
    return out[:, :self.latent_dim], out[:, self.latent_dim:]

  def _scale(self):
    return tf.maximum(self.log_scale, _MIN_LOG_SCALE)[None, None, None, :]

  def log_px_given_z(self, x, z, labels=None):
    """log p(x|z) per example; x in [-1, 1] ({-1, 1} for the Bernoulli likelihood)."""
    out = self.decoder(z, labels)
    if self.likelihood == "bernoulli":
      return bounds.bernoulli_log_prob((x + 1.0) / 2.0, out)
    return bounds.discretized_gaussian_log_prob(x, out, self._scale())

  def decode_mean(self, z, labels=None):
    """The mean image of p(x|z), in [-1, 1] (for Bernoulli pixels: their probabilities, as grey levels)."""
    out = self.decoder(z, labels)
    return tf.sigmoid(out) * 2.0 - 1.0 if self.likelihood == "bernoulli" else tf.clip_by_value(out, -1.0, 1.0)

  def binarize(self, images, rng):
    """Training targets: for Bernoulli pixels, a fresh binarisation (dynamic) or the intensities."""
    if self.likelihood != "bernoulli":
      return images
    if self.dynamic_binarization:
      return binary.dynamic_binarize(images, rng, "vae/binarize")
    return images

  # ---- training

  def capacity_at(self, step):
    """C of the capacity objective at ``step`` (nats)."""
    if self.capacity_steps <= 0:
      return self.capacity_nats
    return self.capacity_nats * tf.minimum(1.0, step / self.capacity_steps)

  def loss(self, batch, rng):
    labels = batch.get("label") if self.num_classes else None
    x = self.binarize(batch["image"], rng)
    mean, logvar = self.posterior(x, labels)
    z = mean + tf.exp(0.5 * logvar) * rng.normal([self.latent_dim], "vae/eps")
    log_px = self.log_px_given_z(x, z, labels)
    kl_dims = bounds.kl_to_standard_normal(mean, logvar)
    kl = tf.reduce_sum(kl_dims, axis=-1)
    if self.capacity_nats > 0:
      penalty = self.capacity_gamma * tf.abs(kl - self.capacity)
    else:
      penalty = self.beta * kl
    loss = -log_px + penalty
    metrics = {"VAE/reconstruction_nats": -log_px, "VAE/kl_nats": kl, "VAE/elbo_nats": log_px - kl,
               "VAE/active_units": self.active_units(mean)}
    for i in range(self.latent_dim):  # TensorBoard only (a second "/"): which latents carry information
      metrics[f"VAE/kl_dim/{i:02d}"] = kl_dims[:, i]
    return loss, metrics

  @staticmethod
  def active_units(mean):
    """Latent dimensions whose posterior mean varies over this replica's batch by more than the threshold."""
    variance = tf.math.reduce_variance(mean, axis=0)
    return tf.reduce_sum(tf.cast(variance > ACTIVE_UNIT_THRESHOLD, tf.float32))

  def phases(self, stage):
    del stage
    variables = [*self.encoder.trainable_variables, *self.decoder.trainable_variables]
    if self.likelihood == "gaussian":
      variables.append(self.log_scale)
    return [base.Phase("VAE", "vae", variables, self.loss)]

  def update_state(self, stage, step, nimg, metrics):
    del stage, nimg, metrics
    if self.capacity_nats > 0:
      self.capacity.assign(self.capacity_at(tf.cast(step + 1, tf.float32)))

  def scalars(self):
    return {"capacity_nats": self.capacity} if self.capacity_nats > 0 else {}

  # ---- likelihood evaluation, samples, previews

  def log_weights(self, x, labels, noise):
    """``bounds.log_weights`` of this model for the batch x (in the likelihood's data space) and draws noise
    [b, k, d]: the evaluation's one entry point (evaluation/likelihood.py)."""
    mean, logvar = self.posterior(x, labels)
    return bounds.log_weights(self.log_px_given_z, x, mean, logvar, noise, labels)

  def generate(self, rng, labels=None, ema=True, **options):
    self.check_sampling_options(**options)
    return self.from_latent(self.sample_latent(rng), labels=labels, ema=ema)

  @property
  def latent_shape(self):
    return (self.latent_dim,)

  def from_latent(self, z, rng=None, labels=None, ema=True, **inputs):
    del rng, ema, inputs  # a VAE keeps no EMA copy
    return self.decode_mean(z, labels if self.num_classes else None)

  def reconstruct(self, images, labels=None):
    mean, _ = self.posterior(images, labels)
    return self.decode_mean(mean, labels)

  def preview(self, images, labels, rng):
    """Input | reconstruction pairs, and a strip decoding the straight line from each example's posterior mean
    to the next one's in 8 steps."""
    labels = labels if self.num_classes else None
    x = self.binarize(images, rng)
    mean, _ = self.posterior(x, labels)
    pairs = tf.concat([x, self.decode_mean(mean, labels)], axis=2)
    target = tf.roll(mean, -1, axis=0)
    frames = [self.decode_mean(mean + (target - mean) * t, labels) for t in np.linspace(0.0, 1.0, 8)]
    out = {"reconstructions": pairs, "interpolation": tf.concat(frames, axis=2)}
    if self.latent_dim == 2:
      out["latent_means"] = mean
    return out
