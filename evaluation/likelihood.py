"""Held-out likelihood of models that have one, in nats per image and bits per dimension, on ONE set of data.

Every likelihood model of the project reports on the same data: the held-out split of the run's data
(``embedded:mnist`` -> ``embedded:mnist:test``, ``tfds:NAME`` -> ``tfds:NAME:test``, or ``--nll_data``), and for
models of binary pixels one FIXED binarisation of it: pixel i of image n is 1 when u < intensity, with u drawn by
NumPy's PCG64 from ``BINARIZATION_SEED`` (written in the result), so two models, or two evaluations, see the same
bits. docs/likelihood.md is the table of every model's figure.

A model declares how its likelihood is obtained (``likelihood_method``) and provides ``likelihood_data()``
("binary" or "8bit"):

  iwae   a latent-variable model with an encoder (the VAE): ``log_weights(x, labels, noise)``, for each example and
         each draw z_i of its posterior, log p(x, z_i) - log q(z_i|x) and log p(x|z_i), and the KL of its posterior.
         The draws come in chunks, so k = 5,000 fits in memory; per example the chunks combine exactly.
           -ELBO   = -(mean_i log p(x|z_i) - KL)       (analytic KL, the reconstruction averaged over the k draws)
           -IWAE_k = -log (1/k) sum_i p(x, z_i) / q(z_i|x)
         Both are upper bounds on -log p(x) (nll_elbo, nll_iwae).
  exact  ``log_likelihood(x, labels)``: log p(x) itself (fully visible belief net, HMM, mixture): nll_exact.
  ais    an energy model (the RBM): ``free_energy(x, labels)`` exactly and log Z estimated by annealed importance
         sampling, ``ais_log_weights(runs, betas, seed)`` (Salakhutdinov & Murray 2008): nll_ais = mean F(x) + log Z,
         with nll_ais_low/high from log Z's ±3σ band. AIS underestimates log Z more often than not, so nll_ais errs
         on the optimistic side. The pseudo-likelihood (``pseudo_log_likelihood``) is reported as pseudo_nll: it is
         not a likelihood.
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
    out = {}
    for name, values in {"nll_elbo": -self.elbo, "nll_iwae": -self.iwae}.items():
      out.update(per_image(name, values, self.dims))
    return out


# How a model's held-out likelihood is obtained: its ``likelihood_method`` (module docstring).
METHODS = ("iwae", "exact", "ais")


def method_of(model):
  """The model's likelihood method (one of METHODS), or None for a model without a likelihood."""
  return getattr(model, "likelihood_method", None)


def check_model(model):
  require(method_of(model) in METHODS, f"--metrics=nll needs a model with a likelihood of images (vae, rbm, fvsbn, "
          f"hmm, mixture, imagegpt over pixels); {type(model).__name__} has none")


class LikelihoodRunner:
  """Compiled, distributed per-example values of a model on host batches. Each replica takes its rows of the
  global batch; the values come back gathered, padding rows dropped.

  Args:
    runtime: the Runtime the model was built with.
    model: the model (with a likelihood, for ``bounds``; see module docstring).
    batch_size: examples per call; rounded up to a multiple of the replicas.
  """

  def __init__(self, runtime, model, batch_size=64):
    self.runtime = runtime
    self.model = model
    replicas = runtime.num_replicas
    self.batch_size = -(-int(batch_size) // replicas) * replicas
    self.per_replica = self.batch_size // replicas
    self.chunk = max(1, _DECODES_PER_CALL // self.batch_size)
    self._calls = {}

  def _distributed(self, name, replica_values):
    """A compiled call (images, labels, key) -> gathered [batch, ...] tensors of ``replica_values(x, labels, key,
    replica_id)``, which returns per-example tensors for this replica's rows; built once per ``name``."""
    if name in self._calls:
      return self._calls[name]
    runtime, per_replica = self.runtime, self.per_replica
    compiled = runtime.compile(replica_values)

    def replica_fn(images, labels, key):
      replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
      start = replica_id * per_replica
      return compiled(tf.slice(images, [start, 0, 0, 0], [per_replica, -1, -1, -1]),
                      tf.slice(labels, [start], [per_replica]), key, replica_id)

    @tf.function
    def call(images, labels, key):
      out = runtime.strategy.run(replica_fn, args=(images, labels, key))
      return [runtime.strategy.gather(v, axis=0) for v in out]

    self._calls[name] = call
    return call

  def _batches(self, images, labels):
    """(index, x, y, real rows) of host batches of ``batch_size``; the last one padded with copies of its last row."""
    for b, first in enumerate(range(0, images.shape[0], self.batch_size)):
      x = images[first:first + self.batch_size]
      y = labels[first:first + self.batch_size]
      real = x.shape[0]
      if real < self.batch_size:
        x = np.concatenate([x, np.repeat(x[-1:], self.batch_size - real, axis=0)])
        y = np.concatenate([y, np.repeat(y[-1:], self.batch_size - real, axis=0)])
      yield b, tf.constant(x), tf.constant(y, tf.int32), real

  def _labels(self, labels):
    return labels if getattr(self.model, "num_classes", 0) else None

  def per_example(self, name, images, labels, show_progress=False, with_labels=False, what="likelihood"):
    """The model's method ``name`` (x, labels) -> [b, ...] on every example, as float64 numpy [n, ...]. The labels
    go to the method when the model is conditional, or always ``with_labels``. ``what`` names the progress bar."""
    method = getattr(self.model, name)
    call = self._distributed(name, lambda x, labels, key, replica_id: (
        method(x, labels if with_labels else self._labels(labels)),))
    progress = Progress(images.shape[0], f"{what} ({name})", unit="img") if show_progress else None
    values = []
    for _, x, y, real in self._batches(images, labels):
      values.append(call(x, y, tf.constant([0, 0], tf.int64))[0].numpy().astype(np.float64)[:real])
      if progress is not None:
        progress.update(done=sum(len(v) for v in values))
    if progress is not None:
      progress.close()
    return np.concatenate(values)

  def _iwae_call(self, draws):
    model, runtime, per_replica = self.model, self.runtime, self.per_replica

    def replica_bounds(x, labels, key, replica_id):
      rng = BatchRng(key, replica_id, per_replica, runtime.num_replicas)
      noise = rng.normal([draws, model.latent_dim], "nll/noise")
      log_w, log_px, kl = model.log_weights(x, self._labels(labels), noise)
      return tf.reduce_logsumexp(log_w, axis=0), tf.reduce_sum(log_px, axis=0), kl

    return self._distributed(("iwae", draws), replica_bounds)

  def bounds(self, images, labels, samples, seed=0, progress=None):
    """ELBO and IWAE_``samples`` per example for ``images`` (float32 [n, H, W, C] in the model's data space) and
    ``labels`` [n]. Deterministic in ``seed``."""
    samples = int(samples)
    require(samples >= 1, f"--nll_samples={samples} must be at least 1")
    elbo, iwae = [], []
    chunks = [min(self.chunk, samples - start) for start in range(0, samples, self.chunk)]
    for b, x, y, real in self._batches(images, labels):
      log_sum, recon_sum, kl = None, 0.0, None
      for c, draws in enumerate(chunks):
        chunk_lse, chunk_recon, kl = (v.numpy().astype(np.float64) for v in self._iwae_call(draws)(
            x, y, tf.constant([seed, b * len(chunks) + c], tf.int64)))
        log_sum = chunk_lse if log_sum is None else np.logaddexp(log_sum, chunk_lse)
        recon_sum = recon_sum + chunk_recon
      elbo.append((recon_sum / samples - kl)[:real])
      iwae.append((log_sum - math.log(samples))[:real])
      if progress is not None:
        progress.update(done=min((b + 1) * self.batch_size, images.shape[0]))
    return Bounds(np.concatenate(elbo), np.concatenate(iwae), samples, int(np.prod(images.shape[1:])))


def per_image(name, nats, dims):
  """{name: mean nats per image, name_std: its standard error over the examples, bpd: bits per dimension} of
  per-example ``nats`` (numpy [n])."""
  n = len(nats)
  mean = float(nats.mean())
  error = float(nats.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
  return {name: mean, f"{name}_std": error, name.replace("nll", "bpd"): mean / (dims * math.log(2.0))}


def ais_log_partition(log_weights, log_z_base, sigmas=3.0):
  """log Z from AIS importance weights, and its band: (log Z, low, high) in nats.

  Z = Z_base * mean(w) (Neal 2001); the band is log Z_base + log(mean(w) ± ``sigmas`` standard errors of that mean)
  (Salakhutdinov & Murray 2008 report ±3σ). The low end is -inf when the band reaches 0.
  """
  log_w = np.asarray(log_weights, np.float64)
  shift = log_w.max()
  w = np.exp(log_w - shift)
  mean = w.mean()
  error = w.std(ddof=1) / math.sqrt(len(w)) if len(w) > 1 else 0.0
  base = float(log_z_base) + shift
  low = base + math.log(mean - sigmas * error) if mean > sigmas * error else -math.inf
  return base + math.log(mean), low, base + math.log(mean + sigmas * error)


def _iwae(runner, images, labels, show_progress, samples, seed):
  progress = Progress(len(images), f"likelihood (IWAE k={samples})", unit="img") if show_progress else None
  values = runner.bounds(images, labels, samples, seed=seed, progress=progress).summary()
  if progress is not None:
    progress.close()
  return values, {"nll_samples": int(samples)}


def _exact(runner, images, labels, show_progress):
  return per_image("nll_exact", -runner.per_example("log_likelihood", images, labels, show_progress),
                   int(np.prod(images.shape[1:]))), {}


def _ais(runner, images, labels, show_progress, runs, betas, seed):
  """The AIS estimate for a model with an unnormalised density: -log p(x) = F(x) + log Z, with log Z estimated
  by ``model.ais_log_weights`` and the free energies F exact; and the pseudo-likelihood, named as such."""
  bar = Progress(int(betas), f"AIS log Z ({runs} runs)", unit="β") if show_progress else None
  log_w, log_z_base = runner.model.ais_log_weights(int(runs), int(betas), int(seed), progress=bar)
  if bar is not None:
    bar.close()
  log_z, low, high = ais_log_partition(log_w, log_z_base)
  free = runner.per_example("free_energy", images, labels, show_progress)
  dims = int(np.prod(images.shape[1:]))
  values = per_image("nll_ais", free + log_z, dims)
  values.update({"nll_ais_low": values["nll_ais"] - log_z + low, "nll_ais_high": values["nll_ais"] - log_z + high,
                 "log_z": log_z})
  pseudo = per_image("pseudo_nll", -runner.per_example("pseudo_log_likelihood", images, labels, show_progress),
                     dims)
  values.update({k: v for k, v in pseudo.items() if k != "pseudo_bpd"})
  return values, {"ais_runs": int(runs), "ais_betas": int(betas)}


def describe(record):
  """How a record's likelihood was obtained, in words: "exact", "IWAE with k=64", "AIS with 100 runs of 14500
  distributions"."""
  method = record.get("likelihood_method", "iwae")
  if method == "iwae":
    return f"IWAE with k={record['nll_samples']}"
  if method == "ais":
    return f"AIS with {record['ais_runs']} runs of {record['ais_betas']} distributions, log Z band ±3σ"
  return method


def spread(count, num):
  """Indices of ``num`` of ``count`` examples evenly spaced over them (all when ``num`` is None or larger): a
  subset that covers every class of a split stored in class order, as the embedded digits are."""
  if not num or int(num) >= count:
    return np.arange(count)
  return np.unique(np.linspace(0, count - 1, int(num)).round().astype(np.int64))


def heldout_data(model, spec, resolution, channels, num, input_options=None):
  """The evaluation images in the model's data space (binarised with the fixed seed for binary-pixel models),
  their labels, and a description for the record. With ``num``, that many images evenly spread over the split
  (``spread``), binarised as they are in the whole split."""
  source = pipelines.open_source(spec, input_options)
  images, labels = source.arrays(pipelines.parse_resolution(resolution), int(channels))
  keep = spread(len(images), num)
  require(len(keep) >= 2, f"{spec} has {len(images)} images; the likelihood needs at least 2")
  if model.likelihood_data() == "binary":
    return binarize(images)[keep], labels[keep], {"binarization_seed": BINARIZATION_SEED}
  return transforms.to_model_range(images[keep]).numpy(), labels[keep], {"binarization_seed": None}


def evaluate(runtime, model, spec, resolution, channels, samples, num=None, batch_size=64, seed=0,
             input_options=None, show_progress=True, ais_runs=100, ais_betas=14_500):
  """{name: value} for the held-out data ``spec``, and the record's extra fields.

  ``samples``: k of the IWAE bound; ``ais_runs``, ``ais_betas``: AIS runs and intermediate distributions.
  """
  check_model(model)
  method = method_of(model)
  images, labels, extra = heldout_data(model, spec, resolution, channels, num, input_options)
  runner = LikelihoodRunner(runtime, model, batch_size)
  if method == "iwae":
    values, more = _iwae(runner, images, labels, show_progress, samples, seed)
  elif method == "exact":
    values, more = _exact(runner, images, labels, show_progress)
  else:
    values, more = _ais(runner, images, labels, show_progress, ais_runs, ais_betas, seed)
  extra.update({"nll_data": str(spec), "nll_count": int(len(images)), "likelihood_method": method, **more})
  return values, extra
