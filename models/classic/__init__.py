"""Classic probabilistic models of binary images, each with an exact log-likelihood.

  mixture  a mixture of K products of Bernoullis (one latent class per image)      models/classic/mixture.py
  fvsbn    the fully visible sigmoid belief network (a logistic autoregression)    models/classic/fvsbn.py
  hmm      a hidden Markov model over image rows (one latent state per row)        models/classic/hmm.py

They share ``BinaryImageModel``: images in {-1, 1} are read as bits x in {0, 1}^D (D = height x width, raster
order), a training step is one phase whose per-example loss is -log p(x) in nats of a freshly binarised batch
(``binary.dynamic_binarize``), and ``log_likelihood(x, labels)`` is the exact log p(x) that
``launch.evaluate --metrics=nll`` reports (``likelihood_method = "exact"``). All the log-space maths runs in float32
whatever the precision policy: the parameters are float32 variables and no tensor is cast to the compute dtype.
(TensorFlow may still run float32 matrix products at reduced precision on GPUs with TensorFloat-32 and on TPUs,
which moves log p(x) by hundredths to tenths of a nat: score a model on CPUs for figures to compare.)
The models are unconditional and keep no EMA copy (every step's weights are the model).

``resolve_mixture``, ``resolve_fvsbn`` and ``resolve_hmm`` check the model sections.
"""

from genscale.errors import require, require_choice
from genscale.shapes import parse_resolution
from models.classic.common import OPTIMIZERS
from models.classic.fvsbn import FVSBN
from models.classic.hmm import RowHMM
from models.classic.mixture import BernoulliMixture

_MAX_FVSBN_PIXELS = 64 * 64  # its weights grow with pixels² and its sampler takes one step per pixel

__all__ = ["BernoulliMixture", "FVSBN", "RowHMM", "resolve_fvsbn", "resolve_hmm", "resolve_mixture"]


def _check_common(config):
  m = config.model
  require(int(config.channels) == 1, f"--config.channels={config.channels}: the {m.name} model is of binary pixels, "
          "one channel; set --config.channels=1")
  require_choice(m.optimizer, OPTIMIZERS, "--config.model.optimizer")
  require(float(m.lr) > 0, f"--config.model.lr={m.lr} must be positive")
  return parse_resolution(config.resolution)


def resolve_mixture(config):
  _check_common(config)
  m = config.model
  require(int(m.components) >= 1, f"--config.model.components={m.components} must be at least 1")
  return config


def resolve_fvsbn(config):
  height, width = _check_common(config)
  require(height * width <= _MAX_FVSBN_PIXELS, f"--config.resolution={config.resolution}: the FVSBN has a weight per "
          f"pair of pixels and a sampling step per pixel; use at most {_MAX_FVSBN_PIXELS} pixels (64x64)")
  require(float(config.model.l2) >= 0, f"--config.model.l2={config.model.l2} must be at least 0")
  return config


def resolve_hmm(config):
  height, _ = _check_common(config)
  require(height >= 2, f"--config.resolution={config.resolution}: the HMM runs over image rows; it needs 2 or more")
  require(int(config.model.states) >= 1, f"--config.model.states={config.model.states} must be at least 1")
  return config
