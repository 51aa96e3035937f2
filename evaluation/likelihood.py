"""Held-out likelihood of models that have one: the negative ELBO and the importance-weighted bound (IWAE), in nats
per image and bits per dimension.

Every likelihood model of the project reports on the same data: the held-out split of the run's data
(``embedded:mnist`` -> ``embedded:mnist:test``, ``tfds:NAME`` -> ``tfds:NAME:test``, or ``--nll_data``), and for
models of binary pixels one FIXED binarisation of it: pixel i of image n is 1 when u < intensity, with u drawn by
NumPy's PCG64 from ``BINARIZATION_SEED`` (written in the result), so two models, or two evaluations, see the same
bits.

A model provides ``likelihood_data()`` ("binary" or "8bit") and ``log_weights(x, labels, noise)`` (see
``models.autoencoder.model.VAE``): for each example and each draw z_i of its posterior, log p(x, z_i) - log q(z_i|x)
and log p(x|z_i), and the KL of its posterior. The draws come in chunks, so k = 5,000 fits in memory; per example
the chunks combine exactly (log-sum-exp of the weights, the mean of the reconstruction terms).

  -ELBO   = -(mean_i log p(x|z_i) - KL)       (analytic KL, the reconstruction averaged over the k draws)
  -IWAE_k = -log (1/k) sum_i p(x, z_i) / q(z_i|x)
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from genscale.errors import UserError, require
from genscale.progress import Progress
from models.base import BatchRng
from pipelines import transforms
import pipelines

BINARIZATION_SEED = 20140101  # the fixed binarisation of the held-out images (the VAE paper's year)
_DECODES_PER_CALL = 4096  # examples x draws through the decoder in one compiled call


def heldout_spec(spec):
  """The held-out split of a data spec: its ``test`` split. Raises UserError when there is none to name."""
  spec = str(spec)
  if spec.startswith("embedded:mnist"):
    return "embedded:mnist:test"
  if spec.startswith("tfds:"):
    name = spec.split(":")[1]
    return f"tfds:{name}:test"
  raise UserError(f"the held-out split of {spec} is unknown: pass --nll_data (or --config.eval_nll_data) with a "
                  "held-out data spec")


def binarize(images_uint8, seed=BINARIZATION_SEED):
  """Images in {-1, 1} (float32): pixel = 1 where a uniform draw is below its intensity."""
  u = np.random.Generator(np.random.PCG64(seed)).random(images_uint8.shape, dtype=np.float64)
  return np.where(u < images_uint8 / 255.0, 1.0, -1.0).astype(np.float32)


@dataclasses.dataclass
class Bounds:
  """Per-example bounds in nats (numpy [n]) and what they were computed on."""
  elbo: np.ndarray
  iwae: np.ndarray
  samples: int
  dims: int

  def summary(self):
    """{name: value}: nats per image (negated bounds, so lower is better), bits/dim, standard errors over the
    examples."""
    n = len(self.elbo)
    nats = {"nll_elbo": -self.elbo, "nll_iwae": -self.iwae}
    out = {}
    for name, values in nats.items():
      out[name] = float(values.mean())
      out[f"{name}_std"] = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
      out[name.replace("nll", "bpd")] = float(values.mean() / (self.dims * math.log(2.0)))
    return out


def check_model(model):
  require(hasattr(model, "log_weights"), f"--metrics=nll needs a model with a likelihood (vae); "
          f"{type(model).__name__} has none")


class LikelihoodRunner:
  """Compiled, distributed bounds of a model on host batches. Each replica takes its rows of the global batch.

  Args:
    runtime: the Runtime the model was built with.
    model: a model with ``log_weights`` and ``likelihood_data`` (see module docstring).
    batch_size: examples per call; rounded up to a multiple of the replicas.
  """

  def __init__(self, runtime, model, batch_size=64):
    check_model(model)
    self.runtime = runtime
    self.model = model
    replicas = runtime.num_replicas
    self.batch_size = -(-int(batch_size) // replicas) * replicas
    self.per_replica = self.batch_size // replicas
    self.chunk = max(1, _DECODES_PER_CALL // self.batch_size)
    self._calls = {}

  def _call(self, draws):
    if draws in self._calls:
      return self._calls[draws]
    model, runtime, per_replica = self.model, self.runtime, self.per_replica
    latent_dim = model.latent_dim

    def replica_bounds(x, labels, key, replica_id):
      rng = BatchRng(key, replica_id, per_replica, runtime.num_replicas)
      noise = rng.normal([draws, latent_dim], "nll/noise")
      log_w, log_px, kl = model.log_weights(x, labels if model.num_classes else None, noise)
      return tf.reduce_logsumexp(log_w, axis=0), tf.reduce_sum(log_px, axis=0), kl

    compiled = runtime.compile(replica_bounds)

    def replica_fn(images, labels, key):
      replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
      start = replica_id * per_replica
      return compiled(tf.slice(images, [start, 0, 0, 0], [per_replica, -1, -1, -1]),
                      tf.slice(labels, [start], [per_replica]), key, replica_id)

    @tf.function
    def call(images, labels, key):
      out = runtime.strategy.run(replica_fn, args=(images, labels, key))
      return [runtime.strategy.gather(v, axis=0) for v in out]

    self._calls[draws] = call
    return call

  def bounds(self, images, labels, samples, seed=0, progress=None):
    """ELBO and IWAE_``samples`` per example for ``images`` (float32 [n, H, W, C] in the model's data space) and
    ``labels`` [n]. Deterministic in ``seed``."""
    samples = int(samples)
    require(samples >= 1, f"--nll_samples={samples} must be at least 1")
    n = images.shape[0]
    elbo, iwae = [], []
    chunks = [min(self.chunk, samples - start) for start in range(0, samples, self.chunk)]
    for b, first in enumerate(range(0, n, self.batch_size)):
      x = images[first:first + self.batch_size]
      y = labels[first:first + self.batch_size]
      real = x.shape[0]
      if real < self.batch_size:  # pad the last batch; the padding rows are dropped below
        x = np.concatenate([x, np.repeat(x[-1:], self.batch_size - real, axis=0)])
        y = np.concatenate([y, np.repeat(y[-1:], self.batch_size - real, axis=0)])
      log_sum, recon_sum, kl = None, 0.0, None
      for c, draws in enumerate(chunks):
        chunk_lse, chunk_recon, kl = (v.numpy().astype(np.float64) for v in self._call(draws)(
            tf.constant(x), tf.constant(y, tf.int32), tf.constant([seed, b * len(chunks) + c], tf.int64)))
        log_sum = chunk_lse if log_sum is None else np.logaddexp(log_sum, chunk_lse)
        recon_sum = recon_sum + chunk_recon
      elbo.append((recon_sum / samples - kl)[:real])
      iwae.append((log_sum - math.log(samples))[:real])
      if progress is not None:
        progress.update(done=min(first + self.batch_size, n))
    return Bounds(np.concatenate(elbo), np.concatenate(iwae), samples, int(np.prod(images.shape[1:])))


def heldout_data(model, spec, resolution, channels, num, input_options=None):
  """The evaluation images in the model's data space (binarised with the fixed seed for binary-pixel models),
  their labels, and a description for the record."""
  source = pipelines.open_source(spec, input_options)
  images, labels = source.arrays(pipelines.parse_resolution(resolution), int(channels))
  if num:
    images, labels = images[:int(num)], labels[:int(num)]
  require(len(images) >= 2, f"{spec} has {len(images)} images; the likelihood needs at least 2")
  if model.likelihood_data() == "binary":
    return binarize(images), labels, {"binarization_seed": BINARIZATION_SEED}
  return transforms.to_model_range(images).numpy(), labels, {"binarization_seed": None}


def evaluate(runtime, model, spec, resolution, channels, samples, num=None, batch_size=64, seed=0,
             input_options=None, show_progress=True):
  """{name: value} for the held-out data ``spec``, and the record's extra fields."""
  check_model(model)
  images, labels, extra = heldout_data(model, spec, resolution, channels, num, input_options)
  runner = LikelihoodRunner(runtime, model, batch_size)
  progress = Progress(len(images), f"likelihood (k={samples})", unit="img") if show_progress else None
  bounds = runner.bounds(images, labels, samples, seed=seed, progress=progress)
  if progress is not None:
    progress.close()
  values = bounds.summary()
  extra.update({"nll_data": str(spec), "nll_count": int(len(images)), "nll_samples": int(samples)})
  return values, extra
