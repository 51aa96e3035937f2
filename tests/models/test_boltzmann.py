"""The RBM: free energy and pseudo-likelihood against enumeration, the CD loss's gradient against the textbook rule,
AIS against the exact log Z, persistent chains across steps, replicas and a resume, the likelihood report, and the
config checks."""

import io
import itertools
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from evaluation import likelihood
from genscale.errors import UserError
from launch import rundir
from launch.configs import rbm as rbm_config
from models import base
from models.boltzmann import ais
from models.boltzmann import energy
from tests.conftest import build_trainer
from tests.models.test_autoencoder import resumed_and_unbroken


def tiny(**model):
  """An 8x8 RBM (64 visible units) with 16 hidden units, batch 8."""
  c = rbm_config.get_config("cpu")
  c.model.update({"hidden": 16, "sample_steps": 5, "strip_every": 2, **model})
  c.update(resolution=8, batch_size=8)
  c.runtime.steps_per_loop = 1
  return c


def _random_params(visible, hidden, scale, seed=0):
  rng = np.random.default_rng(seed)
  return energy.Parameters(tf.constant(rng.normal(0, scale, [visible, hidden]), tf.float32),
                           tf.constant(rng.normal(0, 1, [visible]), tf.float32),
                           tf.constant(rng.normal(0, 1, [hidden]), tf.float32))


def _all_states(n):
  return np.array(list(itertools.product([0.0, 1.0], repeat=n)), np.float32)


def _energy(params, v, h):
  w, b, c = (np.asarray(t, np.float64) for t in (params.weights, params.visible_bias, params.hidden_bias))
  return -(v @ b) - (h @ c) - v @ w @ h


# ---- the maths against enumeration

def test_the_free_energy_of_a_3x2_rbm_is_minus_log_the_sum_over_its_hidden_states():
  params = energy.Parameters(tf.constant([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]]), tf.constant([0.2, -0.1, 0.3]),
                             tf.constant([-0.5, 0.25]))
  visible = _all_states(3)
  expected = [-np.log(sum(np.exp(-_energy(params, v, h)) for h in _all_states(2))) for v in visible]
  np.testing.assert_allclose(energy.free_energy(params, visible).numpy(), expected, rtol=1e-6)
  # And log Z by enumerating the hidden states equals the sum over all 2^3 * 2^2 joint states.
  joint = np.log(sum(np.exp(-_energy(params, v, h)) for v in visible for h in _all_states(2)))
  assert energy.log_partition_by_enumeration(params).numpy() == pytest.approx(joint, rel=1e-9)


def test_the_pseudo_likelihood_is_the_sum_of_each_pixels_conditional():
  params = _random_params(5, 3, 1.0)
  visible = _all_states(5)
  free = energy.free_energy(params, visible).numpy().astype(np.float64)
  index = {tuple(v): i for i, v in enumerate(visible)}
  expected = []
  for v in visible:
    total = 0.0
    for i in range(5):
      flipped = v.copy()
      flipped[i] = 1.0 - flipped[i]
      f, g = free[index[tuple(v)]], free[index[tuple(flipped)]]
      total += -f - np.logaddexp(-f, -g)  # log p(v_i | v_-i) = p(v) / (p(v) + p(v with i flipped))
    expected.append(total)
  np.testing.assert_allclose(energy.pseudo_log_likelihood(params, visible).numpy(), expected, rtol=1e-5)


def test_the_cd_loss_gradient_is_the_positive_minus_the_negative_statistics():
  params = _random_params(6, 4, 0.5)
  rng = np.random.default_rng(1)
  data, negative = (tf.constant(rng.integers(0, 2, [5, 6]), tf.float32) for _ in range(2))
  variables = [tf.Variable(t) for t in (params.weights, params.visible_bias, params.hidden_bias)]
  with tf.GradientTape() as tape:
    p = energy.Parameters(*variables)
    loss = tf.reduce_mean(energy.free_energy(p, data) - energy.free_energy(p, tf.stop_gradient(negative)))
  grads = tape.gradient(loss, variables)
  h_data, h_negative = energy.hidden_probabilities(params, data), energy.hidden_probabilities(params, negative)
  n = 5.0
  # Hinton 2002: ΔW ∝ <v hᵀ>_data - <v hᵀ>_negative, Δb ∝ <v>_data - <v>_negative,
  # Δc ∝ <h>_data - <h>_negative;
  # a descent step on the loss is that update.
  expected = [(tf.matmul(data, h_data, transpose_a=True) - tf.matmul(negative, h_negative, transpose_a=True)) / n,
              tf.reduce_mean(data - negative, axis=0), tf.reduce_mean(h_data - h_negative, axis=0)]
  for grad, update in zip(grads, expected):
    np.testing.assert_allclose(-grad.numpy(), update.numpy(), rtol=1e-5, atol=1e-6)


def test_the_paper_schedule_has_14500_steps_in_three_pieces():
  schedule = ais.betas(14_500)
  assert len(schedule) == 14_501 and schedule[0] == 0.0 and schedule[-1] == 1.0
  assert schedule[500] == pytest.approx(0.5) and schedule[4500] == pytest.approx(0.9)
  assert np.all(np.diff(schedule) > 0)
  assert len(ais.betas(10)) == 11 and ais.betas(10)[-1] == 1.0


def test_ais_finds_the_exact_log_partition_within_its_band():
  params = _random_params(24, 12, 0.3, seed=3)
  exact = energy.log_partition_by_enumeration(params).numpy()
  base_logits = tf.constant(np.random.default_rng(4).normal(-1.0, 0.5, [24]), tf.float32)
  rng = base.BatchRng(tf.constant([7, 0], tf.int64), 0, 100, 1)
  log_w = ais.log_weights(params, base_logits, ais.betas(1000), rng.uniform([24], "start"),
                          rng.per_step([12], "h", "uniform"), rng.per_step([24], "v", "uniform")).numpy()
  estimate, low, high = likelihood.ais_log_partition(log_w, ais.log_partition_base(base_logits.numpy(), 12))
  assert low <= exact <= high, (low, estimate, exact, high)
  assert high - low < 1.0  # a band that says something
  # The base model's own log Z: with W = 0 and c = 0 the weights are all 1, and the estimate is exact.
  flat = energy.Parameters(tf.zeros([24, 12]), base_logits, tf.zeros([12]))
  flat_w = ais.log_weights(flat, base_logits, ais.betas(20), rng.uniform([24], "start"),
                           rng.per_step([12], "h", "uniform"), rng.per_step([24], "v", "uniform")).numpy()
  np.testing.assert_allclose(flat_w, 0.0, atol=1e-9)
  assert likelihood.ais_log_partition(flat_w, 3.0) == pytest.approx((3.0, 3.0, 3.0))


# ---- training through the loop

def test_persistent_chains_carry_over_from_step_to_step():
  trainer = build_trainer(tiny(training="pcd", gibbs_steps=2))
  model = trainer.model
  assert trainer.run(1).finite
  chains = model.layer.chains.numpy()
  assert set(np.unique(chains)) <= {0.0, 1.0} and chains.std() > 0
  params = energy.Parameters(*(tf.constant(v.numpy()) for v in model.layer.trainables))
  assert trainer.run(1).finite
  # Step 1's negative samples are 2 sweeps from the chains step 0 left, with step 1's random draws.
  rng = base.BatchRng(tf.constant([trainer.seed, 1], tf.int64), 0, 8, 1)
  expected = energy.gibbs(params, chains, 2, rng.per_step([16], "rbm/gibbs_h", "uniform"),
                          rng.per_step([64], "rbm/gibbs_v", "uniform"))
  np.testing.assert_array_equal(model.layer.chains.numpy(), expected.numpy())


def test_the_visible_biases_start_at_the_log_odds_of_the_first_batch():
  trainer = build_trainer(tiny(lr=1e-9))  # so small a rate that the step itself moves nothing visible
  assert trainer.run(1).finite
  model = trainer.model
  means = model.layer.input_sums.numpy() / model.layer.input_count.numpy()
  assert model.layer.input_count.numpy() == 8.0
  np.testing.assert_allclose(model.layer.visible_bias.numpy(), np.log((means * 8 + 0.5) / (9.0 - means * 8 - 0.5)),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", ["cd", "pcd"])
def test_one_device_and_two_replicas_train_the_same_rbm(training):
  values = []
  for replicas in (1, 2):
    trainer = build_trainer(tiny(training=training, gibbs_steps=2), cpu_replicas=replicas)
    assert trainer.run(2).finite
    m = trainer.model
    values.append([v.numpy() for v in (*m.layer.trainables, m.layer.chains, m.layer.input_sums)])
  for one, two in zip(*values):
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_a_resumed_pcd_run_equals_the_unbroken_one(tmp_path):

  def config(steps):
    c = tiny(training="pcd", lr_decay="none", momentum_steps=2)
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=100, histogram_every=0)  # no grids: faster
    return c

  unbroken, resumed = resumed_and_unbroken(config, tmp_path)
  # The chains, the input statistics and the momentum slots (the optimizer's _variables 2-4) are saved too.
  assert {"model/layer/chains/.ATTRIBUTES/VARIABLE_VALUE", "model/layer/input_sums/.ATTRIBUTES/VARIABLE_VALUE",
          "model/optimizers/rbm/_variables/4/.ATTRIBUTES/VARIABLE_VALUE"} <= set(unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


def test_the_momentum_switches_after_its_steps():
  config = rundir.prepare_config(tiny(momentum_steps=3, lr_decay="none"))
  from models.boltzmann import rbm  # pylint: disable=g-import-not-at-top
  optimizer = rbm.optimizer(config.model, config.steps)
  w = tf.Variable([0.0])
  optimizer.build([w])
  lr = float(config.model.lr)
  position = velocity = 0.0
  for step in range(6):
    optimizer.apply_gradients([(tf.constant([1.0]), w)])
    velocity = (0.5 if step < 3 else 0.9) * velocity - lr
    position += velocity
    assert w.numpy()[0] == pytest.approx(position, rel=1e-5), step


# ---- a trained run: samples, previews, the likelihood report

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from launch import loop  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("rbm"))
  c = tiny(hidden=32, lr=0.1)
  c.update(steps=300, log_every=100, checkpoint_every=300, sample_every=300, histogram_every=0)
  loop.train(c, workdir)
  return workdir


def test_the_run_writes_samples_and_a_gibbs_strip(trained):
  assert os.path.exists(os.path.join(trained, "samples", "ema_0000300.png"))
  assert os.path.exists(os.path.join(trained, "samples", "gibbs_chain_0000300.png"))


def test_the_likelihood_report_names_its_method_and_band(trained):
  from evaluation.evaluator import EvalSettings  # pylint: disable=g-import-not-at-top
  from launch import scoring  # pylint: disable=g-import-not-at-top
  stream = io.StringIO()
  scoring.evaluate_checkpoint(trained, EvalSettings(metrics="nll", nll_num=64, ais_runs=50, ais_betas=500),
                              stream=stream, progress=False)
  printed = stream.getvalue()
  assert "AIS with 50 runs of 500 distributions" in printed and "pseudo_nll" in printed, printed
  with open(os.path.join(trained, "metrics.jsonl")) as f:
    record = json.loads(f.read().splitlines()[-1])
  values = record["metrics"]
  assert record["likelihood_method"] == "ais" and record["binarization_seed"] == likelihood.BINARIZATION_SEED
  assert values["nll_ais_low"] <= values["nll_ais"] <= values["nll_ais_high"]
  # Trained at all: better than the base-rate-free guess of log 2 per pixel.
  assert values["nll_ais"] < 64 * math.log(2.0)
  assert values["bpd_ais"] == pytest.approx(values["nll_ais"] / (64 * math.log(2.0)))


# ---- the deep belief network

def tiny_dbn(**model):
  """An 8x8 DBN of two RBMs (12 and 8 hidden units), 2 CD steps each, then fine-tuning; batch 8."""
  from launch.configs import dbn as dbn_config  # pylint: disable=g-import-not-at-top
  c = dbn_config.get_config("cpu")
  c.model.update({"layers": "12,8", "layer_steps": 2, "sample_steps": 3, **model})
  c.update(resolution=8, batch_size=8, steps=6)
  c.input.labelled = None
  c.runtime.steps_per_loop = 1
  return c


def _values(variables):
  return [v.numpy().copy() for v in variables]


def _changed(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_a_dbn_trains_one_rbm_at_a_time_then_a_classifier_started_from_the_stack():
  trainer = build_trainer(tiny_dbn())
  model = trainer.model
  first, second = model.stack
  classifier = [v for pair in model.classifier for v in pair]
  for steps, trained in ((2, first), (2, second)):
    before = _values(first.trainables + second.trainables)
    assert trainer.run(steps).finite
    changed = _changed(before, first.trainables + second.trainables)
    assert changed == [trained is first] * 3 + [trained is second] * 3, changed
  # The classifier's layers are the stack's weights and hidden biases at the end of pretraining.
  for layer, (weights, bias) in zip(model.stack, model.classifier):
    np.testing.assert_array_equal(weights.numpy(), layer.weights.numpy())
    np.testing.assert_array_equal(bias.numpy(), layer.hidden_bias.numpy())
  before_stack, before_classifier = _values(first.trainables + second.trainables), _values(classifier)
  assert trainer.run(2).finite
  assert not any(_changed(before_stack, first.trainables + second.trainables))  # the generative stack stays
  assert all(_changed(before_classifier, classifier))


def test_fine_tuning_counts_only_labelled_examples():
  trainer = build_trainer(tiny_dbn())
  model = trainer.model
  images = tf.constant(np.random.default_rng(0).uniform(-1, 1, [4, 8, 8, 1]), tf.float32)
  labels = tf.constant([3, -1, 7, -1])
  loss, metrics = model.finetune_loss({"image": images, "label": labels}, None)
  logits = model.classify(images).numpy()
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  np.testing.assert_allclose(loss.numpy(), [-log_p[0, 3], 0.0, -log_p[2, 7], 0.0], rtol=1e-5)
  np.testing.assert_array_equal(metrics["classifier/labelled_fraction"].numpy(), [1, 0, 1, 0])


def test_one_device_and_two_replicas_train_the_same_dbn():
  values = []
  for replicas in (1, 2):
    trainer = build_trainer(tiny_dbn(), cpu_replicas=replicas)
    while int(trainer.step.numpy()) < 6:  # calls end at stage ends
      assert trainer.run(6 - int(trainer.step.numpy())).finite
    values.append(_values(trainer.model.trainable_variables))
  for one, two in zip(*values):
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_a_dbn_resumed_in_the_middle_of_its_second_rbm_equals_the_unbroken_run(tmp_path):

  def config(steps):
    c = tiny_dbn(layer_steps=3)  # RBM 1: steps 0-2, RBM 2: steps 3-5, then fine-tuning
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=100, histogram_every=0)
    return c

  # Stopped after the second RBM's first step, resumed to the end of the fine-tuning.
  unbroken, resumed = resumed_and_unbroken(config, tmp_path, steps=8, stop=4)
  assert "model/stack/1/chains/.ATTRIBUTES/VARIABLE_VALUE" in unbroken  # the second RBM's persistent chains
  assert any("classifier" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


def test_the_held_out_error_is_the_share_of_wrong_classes(tmp_path):
  from evaluation.evaluator import EvalSettings  # pylint: disable=g-import-not-at-top
  from launch import loop  # pylint: disable=g-import-not-at-top
  from launch import scoring  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "dbn")
  c = tiny_dbn(finetune_lr=0.03, pretrain=False, layers="32,32")  # every step fine-tunes, from Glorot's weights
  c.update(steps=60, log_every=30, checkpoint_every=60, sample_every=60, histogram_every=0)
  loop.train(c, workdir)
  assert os.path.exists(os.path.join(workdir, "samples", "ema_0000060.png"))
  stream = io.StringIO()
  evaluator = scoring.evaluate_checkpoint(workdir, EvalSettings(metrics="error"), stream=stream, progress=False)
  assert "classification error on 500 images of embedded:mnist:test" in stream.getvalue()
  run = rundir.load_run(workdir)
  images, labels = pipelines.open_source("embedded:mnist:test").arrays((8, 8), 1)
  from pipelines import transforms  # pylint: disable=g-import-not-at-top
  predicted = np.argmax(run.model.classify(transforms.to_model_range(images)).numpy(), axis=1)
  expected = float(np.mean(predicted != labels))
  assert evaluator.last_record["metrics"]["error"] == pytest.approx(expected)
  assert expected < 0.85  # 60 steps of fine-tuning learn something: one class for all is 0.9


@pytest.mark.parametrize("family,key,value,fragment", [
    ("rbm", "model.hidden", 0, "--config.model.hidden"),
    ("rbm", "model.training", "gibbs", "--config.model.training"),
    ("rbm", "model.gibbs_steps", 0, "--config.model.gibbs_steps"),
    ("rbm", "model.momentum", 1.0, "--config.model.momentum"),
    ("rbm", "channels", 3, "--config.channels"),
    ("rbm", "resolution", "8x16", "--config.resolution"),
    ("dbn", "model.layers", "500", "--config.model.layers"),
    ("dbn", "model.layers", "8,x", "--config.model.layers"),
    ("dbn", "model.layer_steps", 0, "--config.model.layer_steps"),
    ("dbn", "model.finetune_lr", 0.0, "--config.model.finetune_lr"),
    ("dbn", "channels", 3, "--config.channels"),
])
def test_bad_settings_are_one_line_errors(family, key, value, fragment):
  config = {"rbm": tiny, "dbn": tiny_dbn}[family]()
  section, leaf = (config.model, key[6:]) if key.startswith("model.") else (config, key)
  section[leaf] = value
  with pytest.raises(UserError) as error:
    rundir.prepare_config(config)
  assert fragment in str(error.value) and "\n" not in str(error.value)
