"""Boltzmann machines: the restricted Boltzmann machine (CD-k, persistent CD; AIS for its likelihood) and the deep
belief network (a greedily trained stack of RBMs, fine-tuned as a classifier).

``resolve_rbm`` and ``resolve_dbn`` check the model sections; ``RBM`` and ``DBN`` are the models. The energy maths
(models/boltzmann/energy.py) and AIS (ais.py) are functions of an RBM's parameters, for any stack of them.
"""

from genscale.errors import require, require_choice
from genscale.shapes import parse_resolution
from models.boltzmann.dbn import DBN, parse_layers
from models.boltzmann.rbm import RBM

__all__ = ["DBN", "RBM", "check_binary_data", "resolve_dbn", "resolve_rbm"]


def check_binary_data(config):
  """Binary pixels of grey images, square: a Bernoulli unit per pixel."""
  require(int(config.channels) == 1, f"--config.channels={config.channels}: a Boltzmann machine's visible units "
          "are the binarised pixels of grey images; set it to 1")
  height, width = parse_resolution(config.resolution)
  require(height == width, f"--config.resolution={config.resolution}: use square images")


def _check_training(m):
  """The CD training keys an RBM and a DBN's layers share."""
  require_choice(m.training, ("cd", "pcd"), "--config.model.training")
  require(int(m.gibbs_steps) >= 1, f"--config.model.gibbs_steps={m.gibbs_steps} must be at least 1 (k of CD-k)")
  require(float(m.lr) > 0, f"--config.model.lr={m.lr} must be positive")
  require_choice(m.lr_decay, ("none", "linear"), "--config.model.lr_decay")
  for key in ("momentum", "initial_momentum"):
    require(0.0 <= float(m[key]) < 1.0, f"--config.model.{key}={m[key]} must be in [0, 1)")
  require(int(m.momentum_steps) >= 0, f"--config.model.momentum_steps={m.momentum_steps} must be at least 0")
  require(float(m.weight_cost) >= 0.0, f"--config.model.weight_cost={m.weight_cost} must be at least 0")
  require(float(m.init_std) > 0.0, f"--config.model.init_std={m.init_std} must be positive")
  require(int(m.sample_steps) >= 1, f"--config.model.sample_steps={m.sample_steps} must be at least 1")


def resolve_rbm(config):
  m = config.model
  check_binary_data(config)
  require(int(m.hidden) >= 1, f"--config.model.hidden={m.hidden} must be at least 1")
  _check_training(m)
  require(int(m.strip_every) >= 1, f"--config.model.strip_every={m.strip_every} must be at least 1")
  return config


def resolve_dbn(config):
  m = config.model
  check_binary_data(config)
  try:
    layers = parse_layers(m.layers)
  except ValueError:
    layers = ()
  require(len(layers) >= 2 and min(layers) >= 1, f"--config.model.layers={m.layers!r} must be two or more "
          "comma-separated hidden layer sizes, bottom first, e.g. 500,500,2000 (one layer is an RBM: rbm.py)")
  require(int(m.layer_steps) >= 1, f"--config.model.layer_steps={m.layer_steps} must be at least 1")
  _check_training(m)
  require(float(m.finetune_lr) > 0, f"--config.model.finetune_lr={m.finetune_lr} must be positive")
  return config
