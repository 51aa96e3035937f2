"""The autoencoder family: AE (plain or denoising), VAE (β-VAE, capacity annealing, conditional) and VQ-VAE.

``resolve_ae``, ``resolve_vae`` and ``resolve_vqvae`` check the model sections; ``Autoencoder``, ``VAE`` and
``VQVAE`` are the models.
"""

from genscale.errors import require, require_choice
from genscale.shapes import parse_resolution
from models.autoencoder.model import Autoencoder, VAE
from models.autoencoder.networks import parse_widths
from models.autoencoder.vqvae import VQVAE

__all__ = ["Autoencoder", "VAE", "VQVAE", "resolve_ae", "resolve_vae", "resolve_vqvae"]


def _check_shape(config):
  m = config.model
  height, width = parse_resolution(config.resolution)
  try:
    widths = parse_widths(m.widths)
  except ValueError:
    widths = []
  require(widths and min(widths) >= 1,
          f"--config.model.widths={m.widths!r} must be comma-separated channel counts, e.g. 32,64")
  factor = 2**len(widths)
  require(height == width and height % factor == 0 and height >= factor,
          f"--config.resolution={config.resolution}: with {len(widths)} stride-2 layers (--config.model.widths) the "
          f"autoencoders need square images whose side is a multiple of {factor}")
  if "latent_dim" in m:
    require(int(m.latent_dim) >= 1, f"--config.model.latent_dim={m.latent_dim} must be at least 1")
  require(float(m.lr) > 0, f"--config.model.lr={m.lr} must be positive")
  require_choice(m.lr_decay, ("none", "cosine"), "--config.model.lr_decay")


def resolve_ae(config):
  m = config.model
  _check_shape(config)
  require_choice(m.reconstruction, ("mse", "bce"), "--config.model.reconstruction")
  require_choice(m.denoise, ("none", "gaussian", "mask"), "--config.model.denoise")
  if m.denoise == "mask":
    require(0.0 <= float(m.noise) < 1.0, f"--config.model.noise={m.noise} is a masking probability: use [0, 1)")
  else:
    require(float(m.noise) >= 0.0, f"--config.model.noise={m.noise} must be at least 0")
  return config


def resolve_vae(config):
  m = config.model
  _check_shape(config)
  require_choice(m.likelihood, ("bernoulli", "gaussian"), "--config.model.likelihood")
  require_choice(m.binarize, ("dynamic", "none"), "--config.model.binarize")
  require(m.likelihood == "bernoulli" or m.binarize == "none",
          f"--config.model.binarize={m.binarize} applies to the bernoulli likelihood only; set it to none")
  require(float(m.beta) >= 0.0, f"--config.model.beta={m.beta} must be at least 0")
  require(float(m.capacity_nats) >= 0.0, f"--config.model.capacity_nats={m.capacity_nats} must be at least 0 "
          "(0: no capacity objective)")
  require(int(m.capacity_steps) >= 0, f"--config.model.capacity_steps={m.capacity_steps} must be at least 0")
  require(float(m.capacity_gamma) > 0.0, f"--config.model.capacity_gamma={m.capacity_gamma} must be positive")
  return config


def resolve_vqvae(config):
  m = config.model
  _check_shape(config)
  require_choice(m.reconstruction, ("mse", "bce"), "--config.model.reconstruction")
  require_choice(m.codebook, ("ema", "loss"), "--config.model.codebook")
  require(int(m.codebook_size) >= 2, f"--config.model.codebook_size={m.codebook_size} must be at least 2")
  require(int(m.code_dim) >= 1, f"--config.model.code_dim={m.code_dim} must be at least 1")
  require(float(m.commitment) >= 0.0, f"--config.model.commitment={m.commitment} must be at least 0")
  require(0.0 <= float(m.ema_decay) < 1.0, f"--config.model.ema_decay={m.ema_decay} must be in [0, 1)")
  require(float(m.restart_below) >= 0.0, f"--config.model.restart_below={m.restart_below} must be at least 0 "
          "(0: no dead-code restarts)")
  return config
