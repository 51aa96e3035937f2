"""The autoencoder family: the bounds against closed forms, the VAE's reductions, β, the AE against PCA, previews,
the likelihood evaluation, resume, and the config checks."""

import math

import numpy as np
import pytest
import tensorflow as tf

from evaluation import likelihood
from genscale.errors import UserError
from launch import rundir
from launch.configs import ae as ae_config
from launch.configs import vae as vae_config
from models import base
from models.autoencoder import bounds
from tests.conftest import build_trainer
from pipelines import transforms
import pipelines

INFO = pipelines.DataInfo(spec="test", count=10, resolution=32, channels=1, num_classes=10)


def _tiny(config_module, **model):
  c = config_module.get_config("cpu")
  c.model.update({"widths": "8,16", **model})
  c.batch_size = 16
  c.runtime.steps_per_loop = 1
  return c


def tiny_vae(**model):
  return _tiny(vae_config, **{"latent_dim": 4, **model})


def tiny_ae(**model):
  return _tiny(ae_config, **{"latent_dim": 8, **model})


def _model(config, info=INFO):
  import models  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(config)
  return models.build(config, info, base.Hardware())


def _digits(count=16, split="train"):
  images, labels = pipelines.embedded.load(split)
  return transforms.to_model_range(images[:count]), tf.constant(labels[:count])


# ---- bounds against closed forms

W, B, SIGMA = 1.5, 0.3, 0.7  # p(z) = N(0, 1), p(x|z) = N(W z + B, SIGMA²): a VAE whose posterior has a closed form


def _linear_decoder(x, z, labels):
  del labels
  return -0.5 * (math.log(2 * math.pi) + 2 * math.log(SIGMA) + (x - W * z[:, 0] - B)**2 / SIGMA**2)


def _exact_posterior(x):
  var = SIGMA**2 / (SIGMA**2 + W**2)
  return (W * (x - B) / (SIGMA**2 + W**2))[:, None], tf.fill([x.shape[0], 1], math.log(var))


def _log_px(x):
  total = W**2 + SIGMA**2
  return (-0.5 * (math.log(2 * math.pi * total) + (x - B)**2 / total)).numpy()


X = tf.constant([-2.0, 0.0, 0.5, 3.0])


def test_elbo_and_iwae_equal_the_log_likelihood_when_the_posterior_is_exact():
  mean, logvar = _exact_posterior(X)
  # With the exact posterior every importance weight p(x, z) / q(z|x) is p(x): IWAE is exact for any k, even 1.
  log_w, _, _ = bounds.log_weights(_linear_decoder, X, mean, logvar, tf.random.stateless_normal([4, 3, 1], [1, 2]))
  np.testing.assert_allclose(log_w.numpy(), np.broadcast_to(_log_px(X), [3, 4]), rtol=1e-5)
  np.testing.assert_allclose(bounds.iwae_bound(log_w).numpy(), _log_px(X), rtol=1e-5)
  # The ELBO (analytic KL, Monte-Carlo reconstruction) equals it in expectation: the KL gap is 0.
  _, log_px, kl = bounds.log_weights(_linear_decoder, X, mean, logvar,
                                     tf.random.stateless_normal([4, 20_000, 1], [1, 3]))
  np.testing.assert_allclose(bounds.elbo(log_px, kl).numpy(), _log_px(X), atol=0.03)


def test_with_a_wrong_posterior_the_bounds_sit_below_the_likelihood_and_iwae_closes_the_gap():
  mean, logvar = _exact_posterior(X)
  mean, logvar = mean + 0.8, logvar + 0.7  # shifted and too wide (so the weights have a finite variance)
  log_w, log_px, kl = bounds.log_weights(_linear_decoder, X, mean, logvar,
                                         tf.random.stateless_normal([4, 4000, 1], [3, 4]))
  elbo = bounds.elbo(log_px, kl).numpy()
  np.testing.assert_allclose(log_w.numpy().mean(axis=0), elbo, atol=0.1)  # the mean log weight is the ELBO
  gap_elbo = _log_px(X) - elbo
  # IWAE_10 in expectation: the mean over 400 independent groups of 10 draws.
  groups = tf.transpose(tf.reshape(log_w, [400, 10, 4]), [1, 0, 2])  # [10 draws, 400 groups, 4 examples]
  gap_10 = _log_px(X) - bounds.iwae_bound(groups).numpy().mean(axis=0)
  gap_4000 = _log_px(X) - bounds.iwae_bound(log_w).numpy()
  assert (gap_elbo > 0.3).all() and (gap_elbo > gap_10).all() and (gap_10 > gap_4000).all(), (gap_elbo, gap_10)
  assert (np.abs(gap_4000) < 0.1).all()


def test_the_analytic_kl_matches_monte_carlo():
  mean = tf.constant([[0.5, -1.0, 0.0]])
  logvar = tf.constant([[0.2, -0.7, 1.1]])
  z = mean + tf.exp(0.5 * logvar) * tf.random.stateless_normal([200_000, 3], seed=[5, 6])
  monte_carlo = tf.reduce_mean(bounds.log_normal_diag(z, mean, logvar) - bounds.log_standard_normal(z))
  analytic = tf.reduce_sum(bounds.kl_to_standard_normal(mean, logvar))
  assert abs(float(monte_carlo) - float(analytic)) < 0.01


def test_the_discretised_gaussian_gives_each_pixel_a_distribution_over_its_256_levels():
  levels = tf.constant(np.arange(256) / 127.5 - 1.0, tf.float32)[:, None, None, None]  # every level, one pixel
  for mean, log_scale in [(0.02, -2.0), (0.9, -4.0), (-1.0, 0.0), (0.3, -7.0)]:
    log_p = bounds.discretized_gaussian_log_prob(levels, tf.fill([256, 1, 1, 1], mean), tf.constant(log_scale))
    assert abs(float(tf.reduce_sum(tf.exp(log_p))) - 1.0) < 1e-3, (mean, log_scale)
    assert int(tf.argmax(log_p)) == int(np.clip(round((mean + 1) * 127.5), 0, 255))


def test_bernoulli_log_prob_sums_over_pixels():
  x = tf.constant([[[[1.0], [0.0]]]])
  logits = tf.constant([[[[0.4], [-1.2]]]])
  sigmoid = lambda v: 1 / (1 + math.exp(-v))
  expected = math.log(sigmoid(0.4)) + math.log(1 - sigmoid(-1.2))
  np.testing.assert_allclose(bounds.bernoulli_log_prob(x, logits).numpy(), [expected], rtol=1e-6)


# ---- the VAE's loss and its reductions

def test_the_loss_of_an_example_is_its_negative_elbo_in_nats_at_any_batch_size():
  model = _model(tiny_vae())
  images, labels = _digits(64)
  key = tf.constant([0, 0], tf.int64)
  big, metrics = model.loss({"image": images, "label": labels}, base.BatchRng(key, 0, 64, 1))
  one, _ = model.loss({"image": images[:1], "label": labels[:1]}, base.BatchRng(key, 0, 1, 1))
  np.testing.assert_allclose(one.numpy()[0], big.numpy()[0], rtol=1e-5)
  # A sum over 1,024 pixels and the latents, not a mean: an untrained decoder costs about log 2 per pixel.
  assert big.numpy().mean() > 0.5 * 1024 * math.log(2.0)
  np.testing.assert_allclose(big.numpy(), metrics["VAE/reconstruction_nats"].numpy() + metrics["VAE/kl_nats"].numpy(),
                             rtol=1e-5)
  np.testing.assert_allclose(-big.numpy(), metrics["VAE/elbo_nats"].numpy(), rtol=1e-5)


def test_the_logged_loss_is_the_mean_over_the_global_batch_on_one_and_two_replicas():
  config = tiny_vae()
  config.batch_size = 8
  losses = []
  for replicas in (1, 2):
    trainer = build_trainer(config.copy_and_resolve_references(), cpu_replicas=replicas)
    local = trainer.runtime.strategy.experimental_local_results(next(iter(trainer.dataset(0))))
    batch = {key: tf.concat([part[key] for part in local], axis=0) for key in ("image", "label")}
    rng = base.BatchRng(tf.constant([trainer.seed, 0], tf.int64), 0, 8, 1)
    expected = trainer.model.loss(batch, rng)[0].numpy().mean()  # the model's own per-example values
    result = trainer.run(1)
    losses.append(result.metrics["VAE/loss"].value)
    np.testing.assert_allclose(losses[-1], expected, rtol=1e-4)
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_kl_falls_as_beta_rises():
  kls = []
  for beta in (0.5, 2.0, 8.0):
    config = tiny_vae(beta=beta)
    trainer = build_trainer(config, steps_per_loop=60)
    kls.append(trainer.run(60).metrics["VAE/kl_nats"].value)
  assert kls[0] > kls[1] > kls[2], kls


def test_the_capacity_target_follows_its_schedule_and_the_kl_follows_it():
  config = tiny_vae(capacity_nats=20.0, capacity_steps=40, capacity_gamma=50.0)
  trainer = build_trainer(config, steps_per_loop=10)
  trainer.run(10)
  np.testing.assert_allclose(float(trainer.model.capacity.numpy()), 20.0 * 10 / 40, rtol=1e-6)  # C for step 10
  while int(trainer.step.numpy()) < 60:
    result = trainer.run(10)
  assert float(trainer.model.capacity.numpy()) == 20.0
  assert abs(result.metrics["VAE/kl_nats"].value - 20.0) < 5.0


def test_conditional_vae_samples_depend_on_the_label():
  model = _model(tiny_vae(conditional=True))
  rng = base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1)
  a = model.generate(rng, tf.constant([1, 1, 1, 1]))
  b = model.generate(rng, tf.constant([7, 7, 7, 7]))
  assert a.shape == (4, 32, 32, 1) and not np.allclose(a.numpy(), b.numpy())
  with pytest.raises(UserError, match="has no labels"):
    _model(tiny_vae(conditional=True), pipelines.DataInfo(spec="x", count=1, resolution=32, channels=1, num_classes=0))


def test_previews_pair_inputs_with_reconstructions_and_map_two_latents():
  model = _model(tiny_vae(latent_dim=2))
  images, labels = _digits(4)
  out = model.preview(images, labels, base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1))
  assert out["reconstructions"].shape == (4, 32, 64, 1)
  np.testing.assert_array_equal(out["reconstructions"][:, :, :32].numpy(),
                                model.binarize(images, base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1)))
  assert out["interpolation"].shape == (4, 32, 256, 1)
  np.testing.assert_allclose(out["interpolation"][:, :, :32].numpy(), out["reconstructions"][:, :, 32:].numpy(),
                             atol=1e-6)  # the strip starts at the example's own reconstruction
  assert out["latent_means"].shape == (4, 2)


# ---- likelihood evaluation

@pytest.fixture(scope="module")
def trained_vae():
  config = tiny_vae()
  trainer = build_trainer(config, steps_per_loop=100)
  trainer.run(300)
  return trainer


def test_iwae_bounds_rise_with_k_above_the_elbo_on_a_trained_model(trained_vae):
  runner = likelihood.LikelihoodRunner(trained_vae.runtime, trained_vae.model, batch_size=32)
  images, labels, _ = likelihood.heldout_data(trained_vae.model, "embedded:mnist:test", 32, 1, num=96)
  small = runner.bounds(images, labels, samples=4, seed=1)
  large = runner.bounds(images, labels, samples=64, seed=2)
  assert -small.elbo.mean() < 250  # trained: far below the ~700 nats of an untrained decoder
  for lower, upper in [(small.elbo, small.iwae), (large.elbo, large.iwae), (small.iwae, large.iwae)]:
    difference = upper - lower  # paired per example; its standard error is the Monte-Carlo error of the mean
    error = difference.std(ddof=1) / math.sqrt(len(difference))
    assert difference.mean() > -2 * error, (difference.mean(), error)
  assert large.iwae.mean() > large.elbo.mean() + 0.5  # a real gap on a model this small
  again = runner.bounds(images, labels, samples=4, seed=1)
  np.testing.assert_array_equal(again.iwae, small.iwae)  # one seed, one answer


def test_the_fixed_binarisation_is_the_same_bits_every_time():
  images, _ = pipelines.embedded.load("test")
  first, second = likelihood.binarize(images[:10]), likelihood.binarize(images[:10])
  np.testing.assert_array_equal(first, second)
  assert set(np.unique(first)) == {-1.0, 1.0}
  intensity = images[:10] / 255.0
  assert abs((first > 0).mean() - intensity.mean()) < 0.01  # a pixel is on with its intensity's probability


def test_a_heldout_subset_spans_the_classes_and_keeps_the_whole_splits_bits():
  model = _model(tiny_vae())
  every, every_labels, _ = likelihood.heldout_data(model, "embedded:mnist:test", 32, 1, None)
  some, labels, _ = likelihood.heldout_data(model, "embedded:mnist:test", 32, 1, 20)
  assert len(some) == 20 and sorted(set(labels.tolist())) == list(range(10))  # the split is in class order
  keep = likelihood.spread(500, 20)
  np.testing.assert_array_equal(some, every[keep])  # the same bits as in the whole split's binarisation
  np.testing.assert_array_equal(labels, every_labels[keep])


def test_heldout_splits_and_models_without_a_likelihood():
  assert likelihood.heldout_spec("embedded:mnist") == "embedded:mnist:test"
  assert likelihood.heldout_spec("tfds:mnist:train") == "tfds:mnist:test"
  with pytest.raises(UserError, match="--nll_data"):
    likelihood.heldout_spec("folder:/images")
  with pytest.raises(UserError, match="needs a model with a likelihood"):
    likelihood.check_model(_model(tiny_ae()))


# ---- the AE

def test_the_autoencoder_beats_pca_of_the_same_size_on_heldout_digits():
  config = tiny_ae(widths="16,32", lr=3e-3)
  config.batch_size = 32
  trainer = build_trainer(config, steps_per_loop=700)
  trainer.run(1400)  # it passes PCA at about 1,000 steps; 15% below it here
  train, _ = pipelines.embedded.load("train")
  test, _ = pipelines.embedded.load("test")
  x_train = train.reshape(len(train), -1) / 255.0
  x_test = test.reshape(len(test), -1) / 255.0
  centre = x_train.mean(axis=0)
  _, _, vt = np.linalg.svd(x_train - centre, full_matrices=False)
  basis = vt[:8]  # PCA with as many components as the code has values
  pca = ((x_test - centre) @ basis.T @ basis + centre)
  pca_mse = ((pca - x_test)**2).mean()
  images = transforms.to_model_range(test)
  reconstruction = (trainer.model.reconstruct(images).numpy() + 1.0) / 2.0
  ae_mse = ((reconstruction.reshape(len(test), -1) - x_test)**2).mean()
  assert ae_mse < pca_mse, (ae_mse, pca_mse)


def test_denoising_corrupts_the_input_only():
  model = _model(tiny_ae(denoise="mask", noise=0.5))
  images, _ = _digits(4)
  rng = base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1)
  corrupted = model.corrupt(images, rng).numpy()
  masked = corrupted != images.numpy()
  assert (corrupted[masked] == -1.0).all()
  strokes = images.numpy() > -1.0  # masking a background pixel changes nothing
  assert 0.4 < masked[strokes].mean() < 0.6
  gaussian = _model(tiny_ae(denoise="gaussian", noise=0.3)).corrupt(images, rng).numpy()
  assert abs((gaussian - images.numpy()).std() - 0.3) < 0.02


# ---- configs

@pytest.mark.parametrize("family,key,value,fragment", [
    ("vae", "likelihood", "laplace", "--config.model.likelihood"),
    ("vae", "binarize", "static", "--config.model.binarize"),
    ("vae", "beta", -1.0, "--config.model.beta"),
    ("vae", "capacity_nats", -3.0, "--config.model.capacity_nats"),
    ("vae", "widths", "8,16,32,64,128,256", "--config.resolution"),
    ("vae", "widths", "eight", "--config.model.widths"),
    ("ae", "reconstruction", "l1", "--config.model.reconstruction"),
    ("ae", "denoise", "blur", "--config.model.denoise"),
    ("ae", "noise", 1.5, "--config.model.noise"),
])
def test_bad_settings_are_one_line_errors(family, key, value, fragment):
  config = tiny_vae() if family == "vae" else tiny_ae()
  if key == "noise":
    config.model.denoise = "mask"
  config.model[key] = value
  with pytest.raises(UserError) as error:
    rundir.prepare_config(config)
  assert fragment in str(error.value) and "\n" not in str(error.value)


def test_gaussian_likelihood_needs_no_binarisation():
  config = tiny_vae(likelihood="gaussian")
  with pytest.raises(UserError, match="--config.model.binarize"):
    rundir.prepare_config(config)
  config.model.binarize = "none"
  model = _model(config)
  assert model.likelihood_data() == "8bit"
  assert any(v is model.log_scale for v in model.phases(None)[0].variables)


# ---- through the loop and the commands

def resumed_and_unbroken(config, tmp_path, steps=4, stop=2):
  """Checkpoint values ({name: array}) of a run of ``steps`` steps and of the same run stopped at step ``stop``
  and resumed, each from ``config(steps)``."""
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  from launch import loop  # pylint: disable=g-import-not-at-top
  loop.train(config(steps), str(tmp_path / "unbroken"))
  loop.train(config(stop), str(tmp_path / "resumed"))
  loop.train(config(steps), str(tmp_path / "resumed"))
  values = []
  for run in ("unbroken", "resumed"):
    reader = tf.train.load_checkpoint(checkpoints.latest(str(tmp_path / run)))
    values.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k})
  return values


def test_a_resumed_vae_run_equals_the_unbroken_one(tmp_path):

  def config(steps):
    # Model state (capacity) and labels. A constant rate: a cosine schedule spans config.steps, which differs here.
    c = tiny_vae(capacity_nats=10.0, capacity_steps=4, conditional=True, lr_decay="none")
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=4, histogram_every=0)
    return c

  unbroken, resumed = resumed_and_unbroken(config, tmp_path)
  assert any("capacity" in k for k in unbroken) and any("encoder" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


def test_train_sample_and_evaluate_from_the_command_line(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from evaluation.evaluator import EvalSettings  # pylint: disable=g-import-not-at-top
  from launch import scoring  # pylint: disable=g-import-not-at-top
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "vae")
  done = run_module("launch.train", "--config=launch/configs/vae.py:cpu_latent2", f"--workdir={workdir}",
                    "--config.model.widths=8,16", "--config.model.conditional=true", "--config.steps=20",
                    "--config.sample_every=10", "--config.checkpoint_every=10", "--config.log_every=10",
                    "--config.histogram_every=0", "--config.batch_size=16")
  assert done.returncode == 0, done.stderr[-2000:]
  for name in ("reconstructions", "interpolation", "latent_means"):
    assert os.path.exists(os.path.join(workdir, "samples", f"{name}_0000020.png")), name
  assert os.path.exists(os.path.join(workdir, "samples", "ema_0000020.png"))
  out = str(tmp_path / "threes.npz")
  sampled = run_module("launch.sample", f"--workdir={workdir}", "--num=8", "--label=3", f"--out={out}")
  assert sampled.returncode == 0, sampled.stderr[-2000:]
  with np.load(out) as arrays:
    assert arrays["images"].shape == (8, 32, 32, 1) and (arrays["labels"] == 3).all()
  import io  # pylint: disable=g-import-not-at-top
  stream = io.StringIO()
  scoring.evaluate_checkpoint(workdir, EvalSettings(metrics="nll", nll_samples=8, nll_num=64), stream=stream,
                              progress=False)
  printed = stream.getvalue()
  assert "nll_iwae" in printed and "nats/image" in printed and "embedded:mnist:test" in printed
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    record = json.loads(f.read().splitlines()[-1])
  assert record["binarization_seed"] == likelihood.BINARIZATION_SEED and record["nll_samples"] == 8
  assert record["metrics"]["nll_iwae"] <= record["metrics"]["nll_elbo"] + 1.0
  assert record["metrics"]["bpd_iwae"] == pytest.approx(record["metrics"]["nll_iwae"] / (1024 * math.log(2)))


def test_an_autoencoder_refuses_to_sample_in_one_line(tmp_path):
  from launch import loop  # pylint: disable=g-import-not-at-top
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  config = tiny_ae()
  config.update(steps=2, log_every=1, checkpoint_every=2, sample_every=2, histogram_every=0)
  workdir = str(tmp_path / "ae")
  loop.train(config, workdir)
  import os  # pylint: disable=g-import-not-at-top
  assert os.path.exists(os.path.join(workdir, "samples", "reconstructions_0000002.png"))
  assert not os.path.exists(os.path.join(workdir, "samples", "ema_0000002.png"))
  run = rundir.load_run(workdir)
  with pytest.raises(UserError, match="no prior to sample from"):
    Sampler(run.runtime, run.model, 4)
