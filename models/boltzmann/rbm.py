"""Bernoulli restricted Boltzmann machine on binarised digits, trained by CD-k or persistent CD.

Training (Hinton 2002; Tieleman 2008 for PCD) follows Hinton's practical guide (2010): SGD with a momentum of
``model.initial_momentum`` for the first ``model.momentum_steps`` steps and ``model.momentum`` after, an L2 weight
cost on W, weights from N(0, ``model.init_std``²), hidden biases 0 and visible biases the log-odds of the pixel means
(set from the first global batch). The step is a loss, F(v_data) - F(v_negative) + ``weight_cost``/2 |W|² per
example (models/boltzmann/energy.py), so it runs through the loop's optimizer, loss scaling and strategies like
every other family:
  cd   v_negative: ``model.gibbs_steps`` Gibbs sweeps from the example itself (CD-k);
  pcd  v_negative: the persistent chains after ``model.gibbs_steps`` more sweeps. There is one chain per example
       of the global batch, a model variable saved in checkpoints, each replica sweeping its own rows; the new
       states come back as a ``Statistic`` of global rows, so any replica split, and a resumed run, continues the
       same chains.

Likelihood: the free energy is exact and log Z is estimated by AIS from the base-rate model of the pixel means
seen in training (models/boltzmann/ais.py); ``launch.evaluate --metrics=nll`` reports -log p(x) = F(x) + log Z with
log Z's ±3σ band, and the pseudo-likelihood, named as such. Samples: ``model.sample_steps`` Gibbs sweeps from the
base-rate model; the image is the last sweep's visible probabilities. TensorBoard shows a Gibbs chain from
training digits, a frame every ``model.strip_every`` sweeps.
"""

import keras
import tensorflow as tf

from models import base
from models import binary
from models.boltzmann import ais
from models.boltzmann import energy

AIS_PIECE = 500  # AIS transitions per compiled call (progress is reported between calls)
STRIP_FRAMES = 8  # frames of the Gibbs-chain strip after the starting digit
_SMOOTHING = 0.5  # pseudo-count of the pixel means behind the visible biases and AIS's base-rate model


class ScheduledMomentumSGD(keras.optimizers.SGD):
  """SGD whose momentum is ``initial_momentum`` for the first ``switch_step`` updates, then ``momentum``."""

  def __init__(self, learning_rate, momentum, initial_momentum, switch_step, **kwargs):
    super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
    self.initial_momentum = float(initial_momentum)
    self.switch_step = int(switch_step)

  def update_step(self, gradient, variable, learning_rate):
    learning_rate = tf.cast(learning_rate, variable.dtype)
    gradient = tf.cast(gradient, variable.dtype)
    momentum = tf.where(self.iterations < self.switch_step, self.initial_momentum, self.momentum)
    m = self.momentums[self._get_variable_index(variable)]
    self.assign(m, m * tf.cast(momentum, variable.dtype) - gradient * learning_rate)
    self.assign_add(variable, m)

  def get_config(self):
    return {**super().get_config(), "initial_momentum": self.initial_momentum, "switch_step": self.switch_step}


def optimizer(model_config, steps):
  """The RBM's SGD for a training of ``steps`` steps (the learning rate's linear decay reaches 0 at the last)."""
  m = model_config
  rate = float(m.lr)
  if m.lr_decay == "linear":  # to 0 at the last step (Tieleman 2008 decays PCD's rate to 0)
    rate = keras.optimizers.schedules.PolynomialDecay(rate, int(steps), end_learning_rate=0.0, power=1.0)
  return ScheduledMomentumSGD(rate, float(m.momentum), float(m.initial_momentum), int(m.momentum_steps))


def log_odds(sums, count):
  """Smoothed log-odds of pixel means from their sums over ``count`` images."""
  p = (sums + _SMOOTHING) / (count + 2.0 * _SMOOTHING)
  return tf.math.log(p) - tf.math.log1p(-p)


class Layer(tf.Module):
  """One RBM's variables (weights from N(0, ``init_std``²), zero biases), the sums of the inputs it has seen, which
  give its visible biases' start (the log-odds of the first global batch's means; Hinton 2010, 8.1) and AIS's
  base-rate model, and for persistent CD its chains: one per example of the global batch (``chains``; 0 for CD).
  Created under the strategy's scope, like every model variable."""

  def __init__(self, visible, hidden, init_std, seed, name, chains=0):
    super().__init__(name=name)
    key = tf.constant([int(seed), 0x2B3], tf.int64)
    self.weights = tf.Variable(tf.random.stateless_normal([visible, hidden], key, stddev=float(init_std)),
                               name="weights")
    self.visible_bias = tf.Variable(tf.zeros([visible]), name="visible_bias")
    self.hidden_bias = tf.Variable(tf.zeros([hidden]), name="hidden_bias")
    self.input_sums = base.state_variable(tf.zeros([visible]), "input_sums")
    self.input_count = base.state_variable(0.0, "input_count")
    self.persistent = chains > 0
    self.chains = base.state_variable(tf.zeros([chains, visible] if self.persistent else [0]), "chains")

  def params(self, dtype):
    return energy.Parameters(self.weights, self.visible_bias, self.hidden_bias, dtype)

  @property
  def trainables(self):
    return [self.weights, self.visible_bias, self.hidden_bias]

  def chain_start(self, v, rng):
    """Where this replica's negative chains start: its rows of the persistent chains (once they exist), or the
    data v (CD, and PCD's first step)."""
    if not self.persistent:
      return v
    first = tf.cast(rng.replica_id, tf.int32) * rng.per_replica_batch
    mine = tf.slice(self.chains, [first, 0], [rng.per_replica_batch, int(self.chains.shape[1])])
    return tf.where(self.input_count > 0, mine, v)

  def statistics(self, prefix, v, negative, rng):
    """This replica's input sums and count, and its chains' new states as global rows, as ``Statistic``s for
    ``update``."""
    out = {f"{prefix}/input_sums": base.Statistic(tf.reduce_sum(v, axis=0)),
           f"{prefix}/input_count": base.Statistic(tf.cast(tf.shape(v)[0], tf.float32))}
    if self.persistent:
      out[f"{prefix}/chains"] = base.Statistic(rng.global_rows(negative))
    return out

  def update(self, prefix, metrics):
    """Between steps: adds the global batch's input sums; after the first step, sets the visible biases; keeps the
    chains' new states."""
    first = self.input_count <= 0
    self.input_sums.assign_add(metrics[f"{prefix}/input_sums"])
    self.input_count.assign_add(metrics[f"{prefix}/input_count"])
    self.visible_bias.assign(tf.where(first, log_odds(self.input_sums, self.input_count), self.visible_bias))
    if self.persistent:
      self.chains.assign(metrics[f"{prefix}/chains"])

  def train(self, v, rng, prefix, stream, sweeps, weight_cost, dtype):
    """CD-k or PCD-k of this RBM on one replica's inputs v [b, D]: (loss [b], metrics named "<prefix>/...")."""
    loss, negative, values = contrastive_divergence(self.params(dtype), v, self.chain_start(v, rng), sweeps, rng,
                                                    stream, weight_cost)
    metrics = {f"{prefix}/{name}": value for name, value in values.items()}
    metrics.update(self.statistics(prefix, v, negative, rng))
    return loss, metrics

  def base_rate_logits(self):
    """The base-rate model's visible biases: log-odds of the input means seen in training."""
    return log_odds(self.input_sums, tf.maximum(self.input_count, 1.0))


def contrastive_divergence(params, v, start, sweeps, rng, stream, weight_cost):
  """The CD loss of one replica's examples v [b, D]: F(v) - F(v_negative) + ``weight_cost``/2 |W|², with v_negative
  ``sweeps`` Gibbs sweeps from ``start`` (v itself for CD-k, chains for PCD), random streams "<stream>/gibbs_h|v".

  Returns (loss [b], v_negative [b, D], {"free_energy_data", "free_energy_negative", "reconstruction_error": [b]}).
  The reconstruction error is the mean squared difference between v and p(v | h = p(h | v)).
  """
  negative = tf.stop_gradient(energy.gibbs(
      params, start, sweeps, rng.per_step([params.hidden], f"{stream}/gibbs_h", "uniform"),
      rng.per_step([params.visible], f"{stream}/gibbs_v", "uniform")))
  f_data, f_negative = energy.free_energy(params, v), energy.free_energy(params, negative)
  cost = 0.5 * weight_cost * tf.reduce_sum(tf.square(params.weights))
  reconstruction = energy.visible_probabilities(params, energy.hidden_probabilities(params, v))
  metrics = {"free_energy_data": f_data, "free_energy_negative": f_negative,
             "reconstruction_error": tf.reduce_mean(tf.square(reconstruction - v), axis=-1)}
  return f_data - f_negative + cost, negative, metrics


class RBM(base.GenerativeModel):
  """A Bernoulli RBM over the pixels of binarised images."""

  shape_keys = ("hidden",)
  likelihood_method = "ais"  # evaluation/likelihood.py: exact free energies, log Z by AIS

  def __init__(self, config, info, hardware):
    super().__init__(name="rbm")
    del info  # unconditional
    m = config.model
    height = width = int(config.resolution)
    self.image_shape = (height, width, 1)
    self.visible, self.hidden = height * width, int(m.hidden)
    self.gibbs_steps, self.sample_steps, self.strip_every = int(m.gibbs_steps), int(m.sample_steps), int(
        m.strip_every)
    self.weight_cost = float(m.weight_cost)
    self.global_batch = int(config.batch_size)
    self.num_classes = 0
    self.dtype = hardware.compute_dtype
    self.layer = Layer(self.visible, self.hidden, m.init_std, config.seed, "layer",
                       chains=self.global_batch if m.training == "pcd" else 0)
    self.optimizers = {"rbm": optimizer(m, config.steps)}
    self.ema_pairs = []
    self._ais = {}

  @property
  def params(self):
    return self.layer.params(self.dtype)

  def likelihood_data(self):
    return "binary"

  # ---- training

  def loss(self, batch, rng):
    v = binary.to_bits(binary.dynamic_binarize(batch["image"], rng, "rbm/binarize"))
    return self.layer.train(v, rng, "RBM", "rbm", self.gibbs_steps, self.weight_cost, self.dtype)

  def phases(self, stage):
    del stage
    return [base.Phase("RBM", "rbm", self.layer.trainables, self.loss)]

  def update_state(self, stage, step, nimg, metrics):
    del stage, step, nimg
    self.layer.update("RBM", metrics)

  def base_rate_logits(self):
    return self.layer.base_rate_logits()

  # ---- likelihood (evaluation/likelihood.py)

  def free_energy(self, x, labels=None):
    del labels
    return energy.free_energy(self.params, binary.to_bits(x))

  def pseudo_log_likelihood(self, x, labels=None):
    del labels
    return energy.pseudo_log_likelihood(self.params, binary.to_bits(x))

  def ais_log_weights(self, runs, num_betas, seed, progress=None):
    """(log weights [runs] float64, log Z of the base-rate model): ``runs`` AIS runs over ``num_betas``
    distributions (models/boltzmann/ais.py), deterministic in ``seed``. Host; the schedule runs in compiled pieces
    of ``AIS_PIECE`` transitions, each reported to ``progress`` (a genscale.progress.Progress over num_betas)."""
    key = (int(runs), int(num_betas))
    if key not in self._ais:
      schedule = ais.betas(int(num_betas))

      def rng(seed):
        return base.BatchRng(tf.stack([seed, tf.constant(0, tf.int64)]), 0, int(runs), 1)

      @tf.function
      def first(seed):
        return ais.start(self.base_rate_logits(), rng(seed).uniform([self.visible], "ais/start"))

      @tf.function
      def piece(seed, v, log_w, begin, end):
        return ais.anneal(self.params, self.base_rate_logits(), schedule, v, log_w, begin, end,
                          *self._sweeps(rng(seed), "ais"))

      self._ais[key] = (first, piece)
    first, piece = self._ais[key]
    seed = tf.constant(int(seed), tf.int64)
    v, log_w = first(seed)
    for begin in range(1, int(num_betas) + 1, AIS_PIECE):
      end = min(begin + AIS_PIECE, int(num_betas) + 1)
      v, log_w = piece(seed, v, log_w, tf.constant(begin), tf.constant(end))
      if progress is not None:
        progress.update(done=end - 1)
    return log_w.numpy(), ais.log_partition_base(self.base_rate_logits().numpy(), self.hidden)

  # ---- samples and previews

  def _sweeps(self, rng, stream):
    return (rng.per_step([self.hidden], f"{stream}/h", "uniform"),
            rng.per_step([self.visible], f"{stream}/v", "uniform"))

  def generate(self, rng, labels=None, ema=True, **options):
    """Gibbs chains from the base-rate model; the last sweep's visible probabilities, as images."""
    del labels, ema
    self.check_sampling_options(**options)
    params = self.params
    start = binary.sample_bits(tf.sigmoid(self.base_rate_logits())[None, :],
                               rng.uniform([self.visible], "sample/start"))
    v = energy.gibbs(params, start, self.sample_steps - 1, *self._sweeps(rng, "sample"))
    h = binary.sample_bits(energy.hidden_probabilities(params, v),
                      rng.uniform([self.hidden], "sample/last_h"))
    return binary.to_image(energy.visible_probabilities(params, h), self.image_shape)

  def preview(self, images, labels, rng):
    """A Gibbs chain from each (binarised) image: the start, then a frame every ``strip_every`` sweeps."""
    del labels
    params = self.params
    v = binary.to_bits(binary.dynamic_binarize(images, rng, "preview/binarize"))
    frames = [v]
    hidden_u, visible_u = self._sweeps(rng, "preview")
    for i in range(STRIP_FRAMES):
      frames.append(energy.gibbs(params, frames[-1], self.strip_every, hidden_u, visible_u,
                                 first=i * self.strip_every))
    strip = [binary.to_image(f, self.image_shape) for f in frames]
    return {"gibbs_chain": tf.concat(strip, axis=2)}
