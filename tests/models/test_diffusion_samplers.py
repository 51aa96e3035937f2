"""Diffusion samplers against analytic denoisers: Gaussian and mixture data, equivalences, determinism, guidance."""

import math

import numpy as np
import pytest
import tensorflow as tf

from models import base
from models.diffusion import formulations
from models.diffusion import samplers

SHAPE = (2, 2, 1)  # 4-dimensional "images"
COUNT = 8000


def _gaussian():
  """Mean and a full covariance (eigenvalues 0.3 .. 0.01) for 4-dimensional data."""
  rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
  covariance = rotation @ np.diag([0.3, 0.1, 0.03, 0.01]) @ rotation.T
  return np.array([0.4, -0.3, 0.1, 0.0]), covariance


def gaussian_oracle(mean, covariance):
  """The ideal denoiser for N(mean, covariance): E[x0 | x0 + σ n = x] = μ + Σ (Σ + σ² I)⁻¹ (x - μ)."""
  values, vectors = np.linalg.eigh(covariance)
  values_t, vectors_t = tf.constant(values, tf.float32), tf.constant(vectors, tf.float32)
  mean_t = tf.constant(mean, tf.float32)

  def denoise(x, sigma):
    flat = tf.reshape(x, [-1, 4]) - mean_t
    shrink = values_t / (values_t + tf.square(tf.cast(sigma, tf.float32)))
    out = tf.matmul(tf.matmul(flat, vectors_t) * shrink, vectors_t, transpose_b=True) + mean_t
    return tf.reshape(out, tf.shape(x))

  return denoise


def mixture_oracle(means, stds, weights):
  """The ideal denoiser for a 1-D mixture of Gaussians (applied to every pixel independently)."""
  means_t, variances_t = tf.constant(means, tf.float32), tf.constant(np.square(stds), tf.float32)
  log_weights = tf.math.log(tf.constant(weights, tf.float32))

  def denoise(x, sigma):
    total = variances_t + tf.square(tf.cast(sigma, tf.float32))
    x = x[..., None]
    log_post = log_weights - 0.5 * tf.math.log(total) - 0.5 * tf.square(x - means_t) / total
    posterior = tf.nn.softmax(log_post, axis=-1)
    component_means = means_t + variances_t / total * (x - means_t)
    return tf.reduce_sum(posterior * component_means, axis=-1)

  return denoise


def _rng(seed=0, count=COUNT):
  return base.BatchRng(tf.constant([seed, 7], tf.int64), 0, count, 1)


def _sample(name, denoise, sigmas, prior_std=None, seed=0, shape=SHAPE, count=COUNT, **settings):
  rng = _rng(seed, count)

  @tf.function
  def run():
    x = rng.normal(shape, "start") * (prior_std if prior_std is not None else sigmas[0])
    return samplers.run(name, denoise, x, sigmas, samplers.step_noise(rng, shape, "noise"), **settings)

  return run().numpy()


_DDPM = formulations.DDPM("linear", 1000)
_KARRAS = lambda n: formulations.karras_sigmas(n, 0.002, 80.0, 7.0)

# (name, sigmas, prior std, settings): every sampler, deterministic and stochastic, with enough steps that the
# discretisation error is below the tolerance (each converges as the steps grow: first order for ddpm, ddim and
# euler, second order for heun).
_CHURN = {"s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.0}
CASES = {
    "ddpm_full_chain": ("ddpm", _DDPM.sampling_sigmas("ddpm", 1000, 0.002, 80, 7),
                        _DDPM.prior_std(_DDPM.sigma_max), {}),
    "ddpm_karras": ("ddpm", _KARRAS(300), None, {}),
    "ddim_eta0": ("ddim", _KARRAS(200), None, {"eta": 0.0}),
    "ddim_eta0_ddpm_table": ("ddim", _DDPM.sampling_sigmas("ddim", 250, 0.002, 80, 7),
                             _DDPM.prior_std(_DDPM.sigma_max), {"eta": 0.0}),
    "ddim_eta0.5": ("ddim", _KARRAS(200), None, {"eta": 0.5}),
    "euler": ("euler", _KARRAS(200), None, {}),
    "euler_churn": ("euler", _KARRAS(1000), None, dict(_CHURN, churn=40.0)),
    "heun": ("heun", _KARRAS(80), None, {}),
    "heun_churn": ("heun", _KARRAS(160), None, dict(_CHURN, churn=30.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_samplers_reproduce_gaussian_mean_and_covariance(case):
  name, sigmas, prior_std, settings = CASES[case]
  mean, covariance = _gaussian()
  x = _sample(name, gaussian_oracle(mean, covariance), sigmas, prior_std, **settings).reshape(-1, 4)
  # Sampling error of the estimates with 8000 samples is ~0.007 (mean) and ~0.005 (covariance); the largest
  # variance is 0.3, so 0.015 is a 5% error.
  np.testing.assert_allclose(x.mean(axis=0), mean, atol=0.03)
  np.testing.assert_allclose(np.cov(x, rowvar=False), covariance, atol=0.015)


@pytest.mark.parametrize("case", ["ddpm_full_chain", "ddim_eta0.5", "heun", "heun_churn"])
def test_samplers_reproduce_mixture_weights(case):
  # A bimodal 1-D mixture: the modes' weights (0.3 / 0.7) depend on the sampler following the score correctly.
  name, sigmas, prior_std, settings = CASES[case]
  denoise = mixture_oracle([-0.6, 0.5], [0.1, 0.15], [0.3, 0.7])
  x = _sample(name, denoise, sigmas, prior_std, shape=(1, 1, 1), **settings).ravel()
  assert np.mean(x > 0) == pytest.approx(0.7, abs=0.03)
  assert x.mean() == pytest.approx(0.3 * -0.6 + 0.7 * 0.5, abs=0.03)
  assert x[x > 0].std() == pytest.approx(0.15, abs=0.02)


def test_a_broken_noise_scale_fails_the_oracle_check():
  # The tolerance above is tight enough to catch a sampler that injects 30% too much churn noise.
  mean, covariance = _gaussian()
  name, sigmas, _, settings = CASES["heun_churn"]
  x = _sample(name, gaussian_oracle(mean, covariance), sigmas, **dict(settings, s_noise=1.3)).reshape(-1, 4)
  assert np.abs(np.cov(x, rowvar=False) - covariance).max() > 0.015


def test_euler_without_churn_equals_ddim_eta0():
  denoise = gaussian_oracle(*_gaussian())
  sigmas = _KARRAS(12)
  a = _sample("euler", denoise, sigmas, count=64)
  b = _sample("ddim", denoise, sigmas, count=64, eta=0.0)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_ddpm_ancestral_equals_ddim_eta1_with_the_same_noise():
  denoise = gaussian_oracle(*_gaussian())
  sigmas = _DDPM.sampling_sigmas("ddpm", 25, 0.002, 80, 7)
  a = _sample("ddpm", denoise, sigmas, count=64)
  b = _sample("ddim", denoise, sigmas, count=64, eta=1.0)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _with_noise(name, sigmas, step_noise, start, **settings):
  denoise = gaussian_oracle(*_gaussian())
  return samplers.run(name, denoise, start, sigmas, step_noise, **settings).numpy()


def test_ddim_eta0_is_deterministic_and_ignores_step_noise():
  start = _rng(1, 32).normal(SHAPE, "start") * 80.0
  sigmas = _KARRAS(10)
  noise_a = samplers.step_noise(_rng(2, 32), SHAPE, "noise")
  noise_b = samplers.step_noise(_rng(3, 32), SHAPE, "other")
  first = _with_noise("ddim", sigmas, noise_a, start, eta=0.0)
  np.testing.assert_array_equal(first, _with_noise("ddim", sigmas, noise_a, start, eta=0.0))
  np.testing.assert_array_equal(first, _with_noise("ddim", sigmas, noise_b, start, eta=0.0))
  # With eta > 0 the step noise matters, so the comparison above is not vacuous.
  stochastic_a = _with_noise("ddim", sigmas, noise_a, start, eta=0.5)
  stochastic_b = _with_noise("ddim", sigmas, noise_b, start, eta=0.5)
  assert np.abs(stochastic_a - stochastic_b).max() > 1e-2


def test_step_noise_is_per_step_and_split_independent():
  whole = samplers.step_noise(base.BatchRng(tf.constant([4, 5], tf.int64), 0, 8, 1), SHAPE, "noise")
  halves = [samplers.step_noise(base.BatchRng(tf.constant([4, 5], tf.int64), r, 4, 2), SHAPE, "noise")
            for r in range(2)]
  for step in (0, 3):
    joined = np.concatenate([h(tf.constant(step)).numpy() for h in halves])
    np.testing.assert_allclose(joined, whole(step).numpy(), rtol=1e-6, atol=1e-6)
  assert not np.allclose(whole(0).numpy(), whole(1).numpy())
  draws = np.concatenate([whole(i).numpy().ravel() for i in range(50)])
  assert abs(draws.mean()) < 0.05 and abs(draws.std() - 1) < 0.05


def test_sampling_compiles_with_xla():
  denoise = gaussian_oracle(*_gaussian())
  rng = _rng(0, 16)
  sigmas = _KARRAS(6)

  def run():
    x = rng.normal(SHAPE, "start") * 80.0
    return samplers.run("heun", denoise, x, sigmas, samplers.step_noise(rng, SHAPE, "noise"), churn=10.0)

  np.testing.assert_allclose(tf.function(run, jit_compile=True)().numpy(), tf.function(run)().numpy(),
                             rtol=1e-4, atol=1e-4)


def test_karras_schedule_matches_the_paper():
  sigmas = formulations.karras_sigmas(18, 0.002, 80.0, 7.0)
  assert len(sigmas) == 19 and sigmas[-1] == 0.0
  assert sigmas[0] == pytest.approx(80.0) and sigmas[17] == pytest.approx(0.002)
  # Evenly spaced in σ^(1/ρ).
  roots = sigmas[:-1]**(1 / 7)
  np.testing.assert_allclose(np.diff(roots), np.full(17, (0.002**(1 / 7) - 80**(1 / 7)) / 17), rtol=1e-9)


def test_guidance_convention():
  conditional, unconditional = tf.constant([1.0, 2.0]), tf.constant([0.5, -1.0])
  np.testing.assert_allclose(samplers.classifier_free_guidance(conditional, unconditional, 1.0), conditional)
  np.testing.assert_allclose(samplers.classifier_free_guidance(conditional, unconditional, 0.0), unconditional)
  np.testing.assert_allclose(samplers.classifier_free_guidance(conditional, unconditional, 3.0),
                             [0.5 + 3 * 0.5, -1.0 + 3 * 3.0])


def test_churn_raises_noise_only_inside_its_range():
  sigmas = _KARRAS(10)
  raised = samplers._churned(sigmas, 3.0, 0.1, 10.0)  # γ = 3 / 10  # pylint: disable=protected-access
  inside = (sigmas[:-1] >= 0.1) & (sigmas[:-1] <= 10.0)
  np.testing.assert_allclose(raised[inside], sigmas[:-1][inside] * 1.3)
  np.testing.assert_allclose(raised[~inside], sigmas[:-1][~inside])
  capped = samplers._churned(sigmas, 100.0, 0.0, math.inf)  # pylint: disable=protected-access
  np.testing.assert_allclose(capped, sigmas[:-1] * math.sqrt(2.0))
