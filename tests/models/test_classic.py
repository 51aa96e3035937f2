"""The classic models of binary images (mixture of Bernoullis, FVSBN, HMM over rows): each exact likelihood against
a NumPy computation by other means (per-pixel conditionals, every state path, every component), probabilities of
every image of a tiny size summing to one, ancestral samples that follow hand-set weights, the same SGD step on one
device and on two replicas, a resumed run equal to the unbroken one, the export, and the config checks."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import fvsbn as fvsbn_config
from launch.configs import hmm as hmm_config
from launch.configs import mixture as mixture_config
from models import base
from models import binary
from models.classic import fvsbn, hmm, mixture
from tests.conftest import build_trainer
from tests.models.test_autoencoder import _model as build_model
from tests.models.test_autoencoder import resumed_and_unbroken

CONFIGS = {"mixture": mixture_config, "fvsbn": fvsbn_config, "hmm": hmm_config}
FAMILIES = sorted(CONFIGS)
_TINY_MODEL = {"mixture": {"components": 4}, "fvsbn": {}, "hmm": {"states": 4}}


def tiny(family, resolution=8, **model):
  c = CONFIGS[family].get_config("cpu")
  c.model.update({**_TINY_MODEL[family], **model})
  c.resolution = resolution
  c.batch_size = 8
  c.runtime.steps_per_loop = 1
  return c


def _rng(batch, seed=3):
  return base.BatchRng(tf.constant([seed, 0], tf.int64), 0, batch, 1)


def _randomize(model, seed=0, scale=1.5):
  """Every parameter (the FVSBN's masked upper triangle too) set to N(0, scale²) values."""
  state = np.random.RandomState(seed)
  for variable in model.parameters:
    variable.assign(state.normal(scale=scale, size=variable.shape).astype(np.float32))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _log_bernoulli(bits, probabilities):
  """log prod_i p_i^x_i (1 - p_i)^(1 - x_i) over the last axis."""
  return np.sum(np.log(np.where(bits > 0, probabilities, 1.0 - probabilities)), axis=-1)


def _softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


# ---- exact likelihoods against NumPy

def test_the_mixture_likelihood_sums_the_components_weighted_by_pi():
  state = np.random.RandomState(1)
  mixing, pixels = state.normal(size=[3]), state.normal(scale=2.0, size=[3, 6])
  bits = state.randint(0, 2, size=[5, 6]).astype(np.float32)
  weights, means = _softmax(mixing), _sigmoid(pixels)
  expected = [np.log(sum(weights[k] * np.exp(_log_bernoulli(x, means[k])) for k in range(3))) for x in bits]
  got = mixture.log_prob(bits, mixing.astype(np.float32), pixels.astype(np.float32))
  assert got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_the_fvsbn_likelihood_is_the_product_of_its_conditionals_one_pixel_at_a_time():
  state = np.random.RandomState(2)
  d = 12
  weights = state.normal(size=[d, d]).astype(np.float32)  # the upper triangle too: the mask must drop it
  bias = state.normal(size=[d]).astype(np.float32)
  bits = state.randint(0, 2, size=[5, d]).astype(np.float32)
  expected = np.zeros(5)
  for n, i in itertools.product(range(5), range(d)):
    p = _sigmoid(bias[i] + sum(weights[i, j] * bits[n, j] for j in range(i)))
    expected[n] += np.log(p if bits[n, i] else 1.0 - p)
  np.testing.assert_allclose(fvsbn.log_prob(bits, weights, bias).numpy(), expected, rtol=1e-5)
  # p(x_i | x_<i) reads no pixel j >= i: flipping x_j leaves the conditionals of pixels 0..j as they were and
  # moves pixel j+1's.
  logits = fvsbn.conditional_logits(bits, weights, bias).numpy()
  for j in range(d):
    flipped = bits.copy()
    flipped[:, j] = 1.0 - flipped[:, j]
    changed = fvsbn.conditional_logits(flipped, weights, bias).numpy()
    np.testing.assert_array_equal(changed[:, :j + 1], logits[:, :j + 1], err_msg=f"pixel {j}")
    if j + 1 < d:
      assert (changed[:, j + 1] != logits[:, j + 1]).all()


def _hmm_by_every_path(images, initial, transition, emission):
  """log p(x) [n] of row images [n, T, W]: a log-sum-exp over all K^T state paths, in float64."""
  k, rows = len(initial), images.shape[1]
  log_pi = initial - np.logaddexp.reduce(initial)
  log_a = transition - np.logaddexp.reduce(transition, axis=1, keepdims=True)
  log_on, log_off = -np.logaddexp(0.0, -emission), -np.logaddexp(0.0, emission)  # log sigmoid(+-theta)
  out = []
  for x in images:
    paths = []
    for path in itertools.product(range(k), repeat=rows):
      log_p = log_pi[path[0]] + sum(log_a[path[t - 1], path[t]] for t in range(1, rows))
      paths.append(log_p + sum(np.where(x[t] > 0, log_on[s], log_off[s]).sum() for t, s in enumerate(path)))
    out.append(np.logaddexp.reduce(paths))
  return np.array(out)


def test_the_hmm_forward_algorithm_equals_the_sum_over_every_state_path():
  state = np.random.RandomState(3)
  k, rows, width = 3, 4, 3
  initial, transition = state.normal(size=[k]), state.normal(size=[k, k])
  emission = state.normal(scale=2.0, size=[k, width])
  images = state.randint(0, 2, size=[5, rows, width]).astype(np.float32)
  got = hmm.log_prob(images, *(tf.constant(v, tf.float32) for v in (initial, transition, emission)))
  np.testing.assert_allclose(got.numpy(), _hmm_by_every_path(images, initial, transition, emission), rtol=1e-5)
  # Transitions that underflow float32 (A_jk = e^-300) and emissions far apart: still exact, and finite gradients.
  transition = np.where(state.rand(k, k) < 0.5, -150.0, 150.0)
  transition[:, 0] = 0.0
  emission = state.normal(scale=30.0, size=[k, width])
  params = [tf.Variable(v, dtype=tf.float32) for v in (initial, transition, emission)]
  with tf.GradientTape() as tape:
    got = hmm.log_prob(images, *params)
    total = tf.reduce_sum(got)
  gradients = tape.gradient(total, params)
  assert all(np.isfinite(g.numpy()).all() for g in gradients)
  np.testing.assert_allclose(got.numpy(), _hmm_by_every_path(images, initial, transition, emission), rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_probabilities_of_every_image_sum_to_one(family):
  model = build_model(tiny(family, resolution="2x4"))  # 8 pixels: 256 images, 2 rows of 4 for the HMM
  _randomize(model)
  bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
  images = tf.constant(bits.reshape([256, 2, 4, 1]) * 2.0 - 1.0, tf.float32)
  log_p = model.log_likelihood(images)
  assert log_p.shape == (256,) and log_p.dtype == tf.float32
  assert abs(float(tf.reduce_logsumexp(log_p))) < 1e-5
  assert float(tf.reduce_max(log_p) - tf.reduce_min(log_p)) > 1.0  # not the uniform distribution
  assert model.likelihood_method == "exact" and model.likelihood_data() == "binary"


def test_the_loss_is_the_nll_of_a_fresh_binarisation_of_the_batch():
  model = build_model(tiny("mixture", components=3))
  _randomize(model)
  images = tf.random.stateless_uniform([6, 8, 8, 1], [1, 2], -1.0, 1.0)  # grey levels
  loss, metrics = model.loss({"image": images}, _rng(6))
  bits = binary.dynamic_binarize(images, _rng(6), "mixture/binarize")
  np.testing.assert_allclose(loss.numpy(), -model.log_likelihood(bits).numpy(), rtol=1e-6)
  np.testing.assert_array_equal(metrics["Mixture/nll_nats"].numpy(), loss.numpy())


# ---- ancestral samples

def test_fvsbn_samples_follow_hand_set_weights_where_each_pixel_copies_the_one_before():
  model = build_model(tiny("fvsbn"))
  d = model.dims
  weights = np.zeros([d, d], np.float32)
  weights[np.arange(1, d), np.arange(d - 1)] = 10.0  # p(x_i = 1 | x_{i-1}) = sigmoid(10 x_{i-1} - 5)
  weights[np.arange(d - 1), np.arange(1, d)] = -100.0  # above the diagonal: masked out
  bias = np.full([d], -5.0, np.float32)
  bias[0] = 0.0  # the first pixel is a fair coin
  model.weights.assign(weights)
  model.bias.assign(bias)
  bits, conditionals = (v.numpy() for v in model.ancestral(_rng(256)))
  assert set(np.unique(bits)) <= {0.0, 1.0}
  assert (bits[:, 1:] == bits[:, :-1]).mean() > 0.985  # sigmoid(5) = 0.9933; independent pixels would give 0.5
  assert 0.35 < bits[:, 0].mean() < 0.65
  assert 0.2 < bits.mean() < 0.8
  # The conditionals shown are those of the drawn bits under the likelihood's own (masked) logits.
  np.testing.assert_allclose(conditionals, _sigmoid(fvsbn.conditional_logits(bits, weights, bias).numpy()),
                             atol=1e-6)
  images = model.generate(_rng(256)).numpy()
  assert images.shape == (256, 8, 8, 1)
  np.testing.assert_allclose(images, conditionals.reshape(images.shape) * 2.0 - 1.0, atol=1e-6)


def test_hmm_samples_follow_hand_set_transitions_from_a_uniform_start():
  model = build_model(tiny("hmm", states=3))
  cycle = np.full([3, 3], -20.0, np.float32)
  cycle[[0, 1, 2], [1, 2, 0]] = 20.0  # state k -> k + 1 mod 3
  emission = np.full([3, 8], -9.0, np.float32)
  for k in range(3):
    emission[k, 3 * k:3 * k + 2] = 9.0  # state k lights pixels 3k and 3k+1 of its row
  model.initial_logits.assign(np.zeros(3, np.float32))
  model.transition_logits.assign(cycle)
  model.emission_logits.assign(emission)
  images = (model.generate(_rng(300)).numpy()[..., 0] + 1.0) / 2.0  # [300, 8 rows, 8]
  states = np.argmax(images[:, :, [0, 3, 6]], axis=-1)  # the state each row shows
  np.testing.assert_array_equal(states[:, 1:], (states[:, :-1] + 1) % 3)
  starts = np.bincount(states[:, 0], minlength=3) / 300
  assert np.abs(starts - 1 / 3).max() < 0.1, starts
  np.testing.assert_array_equal(states, model.sample_states(_rng(300)).numpy())


def test_mixture_components_are_drawn_with_their_weights():
  model = build_model(tiny("mixture"))
  weights = np.array([0.1, 0.2, 0.6, 0.1], np.float32)
  model.mixing_logits.assign(np.log(weights))
  drawn = model.sample_components(_rng(4000)).numpy()
  np.testing.assert_allclose(np.bincount(drawn, minlength=4) / 4000, weights, atol=0.025)
  means = tf.gather(tf.sigmoid(model.pixel_logits), drawn).numpy()
  np.testing.assert_allclose((model.generate(_rng(4000)).numpy().reshape(4000, -1) + 1.0) / 2.0, means, atol=1e-6)


# ---- through the loop

@pytest.mark.parametrize("family", FAMILIES)
def test_one_device_and_two_replicas_take_the_same_sgd_step(family):
  updates, losses = [], []
  for replicas in (1, 2):
    trainer = build_trainer(tiny(family, optimizer="sgd", lr=0.05), cpu_replicas=replicas)
    variables = trainer.model.parameters
    before = [v.numpy() for v in variables]
    result = trainer.run(1)
    losses.append(result.metrics[f"{trainer.model.phase_name}/nll_nats"].value)
    updates.append([v.numpy() - b for v, b in zip(variables, before)])
  moved = [np.abs(u).max() for u in updates[0]]
  assert min(moved) > 1e-4, moved  # every parameter moved: the comparison could fail
  for one, two, size in zip(updates[0], updates[1], moved):
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-4 * size)
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_a_resumed_hmm_run_equals_the_unbroken_one(tmp_path):

  def config(steps):
    c = tiny("hmm")
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=4, histogram_every=0)
    return c

  unbroken, resumed = resumed_and_unbroken(config, tmp_path)
  assert any("emission_logits" in k for k in unbroken) and any("optimizer" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_exported_model_serves_the_sampler_images(family, tmp_path):
  from launch import serving  # pylint: disable=g-import-not-at-top
  from tests.launch.test_serving import SEEDS, _sampler_images  # pylint: disable=g-import-not-at-top
  trainer = build_trainer(tiny(family), strategy="cpu", xla=False)
  model = trainer.model
  _randomize(model, scale=3.0)  # built, not trained: random parameters, so the seeds' images differ
  for start in ("mixing_logits", "initial_logits"):  # every component or first state equally likely
    if hasattr(model, start):
      getattr(model, start).assign(tf.zeros_like(getattr(model, start)))
  run = rundir.LoadedRun(workdir=None, config=trainer.config, info=trainer.source.info, runtime=trainer.runtime,
                         model=model, checkpoint="(initial weights)", step=0)
  path = serving.export(run, str(tmp_path / family), version=1)
  served = tf.saved_model.load(path).signatures["serving_default"](seed=tf.constant(SEEDS, tf.int64))
  expected = _sampler_images(run, family)  # launch.sample --seed=s --num=1, for each seed
  np.testing.assert_array_equal(served["images"].numpy(), expected)
  assert len({image.tobytes() for image in expected}) > 1


# ---- configs

@pytest.mark.parametrize("family,key,value,fragment", [
    ("mixture", "model.components", 0, "--config.model.components"),
    ("hmm", "model.states", 0, "--config.model.states"),
    ("mixture", "channels", 3, "--config.channels"),
    ("fvsbn", "channels", 3, "--config.channels"),
    ("hmm", "channels", 3, "--config.channels"),
    ("fvsbn", "model.l2", -1.0, "--config.model.l2"),
    ("fvsbn", "resolution", 128, "--config.resolution"),
    ("hmm", "resolution", "1x32", "--config.resolution"),
    ("hmm", "model.optimizer", "rmsprop", "--config.model.optimizer"),
    ("mixture", "model.lr", 0.0, "--config.model.lr"),
])
def test_bad_settings_are_one_line_errors(family, key, value, fragment):
  config = tiny(family)
  section, leaf = (config.model, key[6:]) if key.startswith("model.") else (config, key)
  section[leaf] = value
  with pytest.raises(UserError) as error:
    rundir.prepare_config(config)
  assert fragment in str(error.value) and "\n" not in str(error.value)
