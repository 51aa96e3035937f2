"""DDPM and EDM formulations: closed-form noising, schedules, preconditioning, prediction algebra, loss buckets."""

import math

import numpy as np
import pytest
import tensorflow as tf

from models import base
from models.diffusion import formulations

T = 1000


def _linear_alphas_cumprod():
  # Ho et al.: β_t = 1e-4 + (t - 1) (0.02 - 1e-4) / (T - 1), ᾱ_t = Π_{s<=t} (1 - β_s), via a sum of logs.
  betas = 1e-4 + np.arange(T) * (0.02 - 1e-4) / (T - 1)
  return np.exp(np.cumsum(np.log1p(-betas)))


def _cosine_alphas_cumprod():
  # Nichol & Dhariwal eq. 17 at the paper's t = 1..T (index 0..T-1 here).
  f = lambda t: np.cos((t / T + 0.008) / 1.008 * math.pi / 2)**2
  return f(np.arange(1, T + 1)) / f(0)


@pytest.mark.parametrize("schedule,closed_form", [("linear", _linear_alphas_cumprod),
                                                  ("cosine", _cosine_alphas_cumprod)])
def test_forward_noising_matches_the_closed_form(schedule, closed_form):
  ddpm = formulations.DDPM(schedule, T)
  expected = closed_form()
  usable = slice(0, T - 1) if schedule == "cosine" else slice(0, T)  # the last cosine β is clipped at 0.999
  np.testing.assert_allclose(ddpm.alphas_cumprod[usable], expected[usable], rtol=1e-9)
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1, 1, size=(6, 4, 4, 1)).astype(np.float32)
  eps = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
  t = np.array([0, 1, 10, 250, 700, 998])
  noisy = ddpm.noise(tf.constant(x0), tf.constant(t), tf.constant(eps)).numpy()
  a = expected[t][:, None, None, None]
  np.testing.assert_allclose(noisy, np.sqrt(a) * x0 + np.sqrt(1 - a) * eps, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule,closed_form", [("linear", _linear_alphas_cumprod),
                                                  ("cosine", _cosine_alphas_cumprod)])
def test_the_v_target_is_the_formula_and_the_eps_target_is_the_noise(schedule, closed_form):
  """v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0 (Salimans & Ho 2022), with ᾱ_t from the closed form, not the class's table."""
  rng = np.random.default_rng(3)
  x0 = rng.uniform(-1, 1, size=(5, 4, 4, 1)).astype(np.float32)
  eps = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
  t = np.array([0, 3, 100, 500, 990])
  a = closed_form()[t][:, None, None, None]
  v = formulations.DDPM(schedule, T, prediction="v").target(tf.constant(x0), tf.constant(t), tf.constant(eps))
  np.testing.assert_allclose(v.numpy(), np.sqrt(a) * eps - np.sqrt(1 - a) * x0, rtol=1e-5, atol=1e-6)
  e = formulations.DDPM(schedule, T, prediction="eps").target(tf.constant(x0), tf.constant(t), tf.constant(eps))
  np.testing.assert_array_equal(e.numpy(), eps)
  # v at the two ends: mostly noise at t = 0 (ᾱ near 1), mostly -x0 at the last step (ᾱ near 0).
  assert np.abs(v.numpy()[0] - eps[0]).max() < 0.02 and np.abs(v.numpy()[-1] + x0[-1]).max() < 0.1


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_one_step_chain_reaches_the_closed_form_marginal(schedule):
  # Running q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t) step by step gives N(sqrt(ᾱ_t) x0, 1 - ᾱ_t).
  ddpm = formulations.DDPM(schedule, T)
  rng = np.random.default_rng(1)
  x = np.full(25_000, 0.8)  # standard errors: at most 0.0064 for the mean, 0.45% for the std
  for t in range(T):
    x = np.sqrt(1 - ddpm.betas[t]) * x + np.sqrt(ddpm.betas[t]) * rng.normal(size=x.shape)
    if t in (0, 99, 499, T - 1):
      a = ddpm.alphas_cumprod[t]
      assert x.mean() == pytest.approx(math.sqrt(a) * 0.8, abs=0.025)
      assert x.std() == pytest.approx(math.sqrt(1 - a), rel=0.02, abs=1e-3)


def test_cosine_betas_are_clipped_and_the_schedule_ends_near_pure_noise():
  ddpm = formulations.DDPM("cosine", T)
  assert ddpm.betas.max() <= 0.999 and ddpm.alphas_cumprod[-1] < 1e-6
  assert np.all(np.diff(ddpm.sigmas) > 0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_an_exact_prediction_denoises_exactly(schedule, prediction):
  # A "network" that outputs the true target makes D(x; σ) return x0, at the table's timesteps.
  ddpm = formulations.DDPM(schedule, T, prediction)
  rng = np.random.default_rng(2)
  x0 = tf.constant(rng.uniform(-1, 1, size=(5, 3, 3, 1)), tf.float32)
  eps = tf.constant(rng.normal(size=(5, 3, 3, 1)), tf.float32)
  t = tf.constant([0, 3, 100, 600, 990])
  sigma = tf.constant(ddpm.sigmas[t.numpy()], tf.float32)
  seen = []

  def oracle(x_t, timestep, labels, rng):
    del labels, rng
    seen.append(timestep.numpy())
    np.testing.assert_allclose(x_t.numpy(), ddpm.noise(x0, t, eps).numpy(), rtol=1e-4, atol=1e-4)
    return ddpm.target(x0, t, eps)

  x = x0 + sigma[:, None, None, None] * eps  # the same sample in the σ frame
  np.testing.assert_allclose(ddpm.denoise(oracle, x, sigma).numpy(), x0.numpy(), atol=2e-3 if schedule == "cosine"
                             else 2e-4)
  np.testing.assert_allclose(seen[0], t.numpy(), atol=1e-3)  # σ maps back to the integer timestep


def test_timestep_interpolates_between_table_entries_and_clamps():
  ddpm = formulations.DDPM("linear", T)
  middle = math.exp(0.5 * (math.log(ddpm.sigmas[10]) + math.log(ddpm.sigmas[11])))
  got = ddpm.timestep(tf.constant([middle, 1e-6, 1e6], tf.float32)).numpy()
  np.testing.assert_allclose(got, [10.5, 0.0, T - 1], atol=1e-3)


def test_ddpm_sampling_grid_covers_the_table():
  ddpm = formulations.DDPM("linear", T)
  grid = ddpm.sampling_sigmas("ddim", 50, 0.002, 80.0, 7.0)
  assert len(grid) == 51 and grid[-1] == 0
  assert grid[0] == pytest.approx(ddpm.sigma_max) and grid[-2] == pytest.approx(ddpm.sigma_min)
  np.testing.assert_allclose(ddpm.sampling_sigmas("ddpm", T, 0.002, 80.0, 7.0)[:-1], ddpm.sigmas[::-1])
  heun = ddpm.sampling_sigmas("heun", 18, 0.002, 80.0, 7.0)
  assert heun[0] == pytest.approx(80.0) and heun[-2] == pytest.approx(ddpm.sigma_min)


def _random_network():
  """A fixed nonlinear F(x, c_noise) with a large output, so c_skip and c_out are what the test sees."""

  def network(x, noise, labels=None, rng=None):
    del labels, rng
    return 3.0 * tf.tanh(2.0 * x + noise[:, None, None, None]) + 1.0

  return network


def test_edm_denoiser_is_the_identity_as_sigma_goes_to_zero():
  edm = formulations.EDM()
  x = tf.constant(np.random.default_rng(3).uniform(-1, 1, size=(4, 5, 5, 1)), tf.float32)
  net = _random_network()
  for sigma, tolerance in [(1e-3, 1e-2), (1e-5, 2e-4)]:
    out = edm.denoise(net, x, tf.fill([4], sigma)).numpy()
    np.testing.assert_allclose(out, x.numpy(), atol=tolerance)
  # Far from zero the network matters (the identity above is not trivial).
  assert np.abs(edm.denoise(net, x, tf.fill([4], 1.0)).numpy() - x.numpy()).max() > 0.5


def test_edm_preconditioning_and_weight_match_the_paper():
  edm = formulations.EDM(sigma_data=0.5)
  sigma = tf.constant([0.002, 0.5, 2.0, 80.0])
  c_skip, c_out, c_in, c_noise = [v.numpy() for v in edm.preconditioning(sigma)]
  s = sigma.numpy().astype(np.float64)
  np.testing.assert_allclose(c_skip, 0.25 / (s**2 + 0.25), rtol=1e-5)
  np.testing.assert_allclose(c_out, s * 0.5 / np.sqrt(s**2 + 0.25), rtol=1e-5)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(s**2 + 0.25), rtol=1e-5)
  np.testing.assert_allclose(c_noise, np.log(s) / 4, rtol=1e-5)
  # λ(σ) c_out(σ)² = 1: the network's effective loss weight is uniform (Karras et al. 2022, §5).
  np.testing.assert_allclose(edm.loss_weight(sigma).numpy() * c_out**2, 1.0, rtol=1e-5)


def test_edm_sigma_is_log_normal():
  edm = formulations.EDM()
  rng = base.BatchRng(tf.constant([0, 3], tf.int64), 0, 20_000, 1)
  log_sigma = np.log(edm.sample_sigma(rng).numpy())
  assert log_sigma.mean() == pytest.approx(-1.2, abs=0.03)
  assert log_sigma.std() == pytest.approx(1.2, abs=0.03)


def test_edm_loss_matches_the_formula():
  edm = formulations.EDM()
  rng = base.BatchRng(tf.constant([1, 1], tf.int64), 0, 4, 1)
  x0 = tf.constant(np.random.default_rng(4).uniform(-1, 1, size=(4, 3, 3, 1)), tf.float32)
  net = _random_network()
  loss, sigma = edm.loss(net, x0, None, rng)
  # Same draws, by hand.
  s = np.exp(-1.2 + 1.2 * rng.normal([], "edm/log_sigma").numpy())
  n = rng.normal([3, 3, 1], "edm/noise").numpy()
  noisy = x0.numpy() + s[:, None, None, None] * n
  sd = 0.5
  c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / np.sqrt(s**2 + sd**2), 1 / np.sqrt(s**2 + sd**2)
  e = lambda v: v[:, None, None, None]
  f = 3.0 * np.tanh(2.0 * e(c_in) * noisy + e(np.log(s) / 4)) + 1.0
  denoised = e(c_skip) * noisy + e(c_out) * f
  weight = (s**2 + sd**2) / (s * sd)**2
  np.testing.assert_allclose(sigma.numpy(), s, rtol=1e-5)
  np.testing.assert_allclose(loss.numpy(), weight * ((denoised - x0.numpy())**2).mean(axis=(1, 2, 3)), rtol=1e-4)


def test_loss_buckets_split_examples_by_sigma():
  loss = tf.constant([1.0, 2.0, 3.0, 4.0])
  sigma = tf.constant([0.05, 0.07, 1.5, 30.0])
  metrics = formulations.bucket_metrics(loss, sigma)
  assert list(metrics) == formulations.bucket_names()
  total = {name: (float(tf.reduce_sum(n)), float(tf.reduce_sum(d))) for name, (n, d) in metrics.items()}
  assert total["loss_bucket/sigma_0-0.1"] == (3.0, 2.0)
  assert total["loss_bucket/sigma_1-2"] == (3.0, 1.0)
  assert total["loss_bucket/sigma_20-inf"] == (4.0, 1.0)
  assert total["loss_bucket/sigma_0.5-1"] == (0.0, 0.0)
