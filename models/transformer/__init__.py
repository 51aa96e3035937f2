"""Generative transformers over image tokens: ImageGPT (autoregressive, exact likelihood, KV-cache sampling) and
MaskGIT (masked-token training, parallel decoding). See models/transformer/model.py.

``resolve_imagegpt`` and ``resolve_maskgit`` check the model sections.
"""

from genscale.errors import UserError, require, require_choice
from genscale.shapes import parse_resolution
from models.transformer.model import ImageGPT, MaskGIT

__all__ = ["ImageGPT", "MaskGIT", "resolve_imagegpt", "resolve_maskgit"]

_MAX_VOCAB = 65536


def _check(config):
  m = config.model
  require_choice(m.tokens, ("pixels", "vq"), "--config.model.tokens")
  for key in ("width", "depth", "heads", "mlp_ratio"):
    require(int(m[key]) >= 1, f"--config.model.{key}={m[key]} must be at least 1")
  require(int(m.width) % int(m.heads) == 0, f"--config.model.width={m.width} must be a multiple of "
          f"--config.model.heads={m.heads}")
  require(0.0 <= float(m.dropout) < 1.0, f"--config.model.dropout={m.dropout} must be in [0, 1)")
  require_choice(m.optimizer, ("adamw", "sgd"), "--config.model.optimizer")
  require(float(m.lr) > 0, f"--config.model.lr={m.lr} must be positive")
  require(int(m.warmup_steps) >= 0, f"--config.model.warmup_steps={m.warmup_steps} must be at least 0")
  require(float(m.temperature) >= 0, f"--config.model.temperature={m.temperature} must be at least 0")
  height, width = parse_resolution(config.resolution)
  if m.tokens == "pixels":
    levels, patch = int(m.levels), int(m.patch)
    require(levels >= 2, f"--config.model.levels={m.levels} must be at least 2 (2: binarised pixels)")
    require_choice(m.binarize, ("dynamic", "threshold"), "--config.model.binarize")
    require(patch >= 1 and height % patch == 0 and width % patch == 0,
            f"--config.model.patch={m.patch} must divide the resolution {config.resolution}")
    vocab = levels**(patch * patch * int(config.channels))
    require(vocab <= _MAX_VOCAB, f"pixel tokens of {patch}x{patch}x{config.channels} values at {levels} levels "
            f"make a vocabulary of {vocab}; use at most {_MAX_VOCAB} (fewer levels or a smaller patch)")
  else:
    require(m.get("vq") is not None, "--config.model.tokens=vq needs --config.model.vq_workdir=DIR, a trained "
            "VQ-VAE run (launch/configs/vqvae.py)")
    vocab = int(m.vq.model.codebook_size)
  if int(m.vocab_size) and int(m.vocab_size) != vocab:
    raise UserError(f"--config.model.vocab_size={m.vocab_size} but the tokens have a vocabulary of {vocab}"
                    + (f" (the codebook of {m.vq_workdir})" if m.tokens == "vq" else "") +
                    "; set it to 0 or to that")
  return vocab


def resolve_imagegpt(config):
  vocab = _check(config)
  m = config.model
  require(int(m.context) >= 0, f"--config.model.context={m.context} must be at least 0 (0: one image's tokens)")
  require(0 <= int(m.top_k) <= vocab, f"--config.model.top_k={m.top_k} must be in [0, {vocab}] (0: off)")
  require(0 < float(m.top_p) <= 1, f"--config.model.top_p={m.top_p} must be in (0, 1] (1: off)")
  return config


def resolve_maskgit(config):
  _check(config)
  m = config.model
  require(float(m.temperature) > 0, f"--config.model.temperature={m.temperature} must be positive")
  require(int(m.decode_steps) >= 1, f"--config.model.decode_steps={m.decode_steps} must be at least 1")
  require(float(m.choice_temperature) >= 0, f"--config.model.choice_temperature={m.choice_temperature} must be "
          "at least 0")
  return config
