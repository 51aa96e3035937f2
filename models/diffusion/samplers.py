"""Diffusion samplers, written against any denoiser D(x, σ) ≈ E[x0 | x] with x = x0 + σ n (see formulations.py).

Every sampler has the signature ``sampler(denoise, x, sigmas, noise, **settings) -> x0`` where
  denoise(x, sigma): float32 image batch and a scalar float32 σ -> the denoised batch (a network, a guided
    network, or an analytic oracle in the tests);
  x: the starting batch at level sigmas[0] (float32);
  sigmas: decreasing noise levels ending with 0: a NumPy array, fixed when the sampler is built, or a float64
    tensor computed in the graph (an exported model takes its step count as an input); the per-step
    coefficients are computed from either in float64 with the same operations, then cast to float32;
  noise(i): standard normal values shaped like x for step i (``step_noise`` draws them from a BatchRng).

The step loop is a ``tf.while_loop`` over a static step count with per-step coefficients gathered from constant
tables, so sampling compiles with XLA and a 1000-step DDPM chain doesn't become a 1000-network graph. It also runs
eagerly. No stateful random ops: the only randomness is ``noise``. Runs per replica (inside ``model.generate``).

Samplers:
  ddpm   ancestral sampling (Ho et al. 2020): x_s ~ q(x_s | x_t, x0 = D(x_t)), the Gaussian posterior of the forward
         process, with the variance β̃ (posterior variance). On any grid; the full T-step table is the paper's chain.
  ddim   DDIM (Song et al. 2021a) with stochasticity η: η = 0 is deterministic (and equals Euler on the same grid),
         η = 1 equals ddpm.
  euler  EDM's Euler sampler on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the correction).
  heun   EDM's 2nd-order Heun sampler (Algorithm 2): 2N - 1 denoiser calls for N steps.
Euler and Heun take EDM's stochastic churn: S_churn, S_tmin, S_tmax, S_noise.
"""

import math

import numpy as np
import tensorflow as tf


SAMPLERS = ("ddpm", "ddim", "euler", "heun")


def step_noise(rng, shape, stream):
  """A function i -> standard normal [b, *shape] for step i, from a BatchRng (``BatchRng.per_step``): the same on
  one device and on many, and i may be a tensor inside a while loop."""
  return rng.per_step(shape, stream, "normal")


def classifier_free_guidance(conditional, unconditional, guidance):
  """Classifier-free guidance (Ho & Salimans 2022): D = D_u + w (D_c - D_u).

  Convention: w = 1 is the plain conditional prediction, w = 0 the unconditional one, w > 1 pushes samples
  towards the class. (The paper's w is this w - 1.) Guiding denoised images is the same as guiding ε, since
  ε = (x - D) / σ is affine in D.
  """
  return unconditional + guidance * (conditional - unconditional)


def _in_graph(sigmas):
  return isinstance(sigmas, (tf.Tensor, tf.Variable))


def _check_sigmas(sigmas):
  if _in_graph(sigmas):
    return tf.cast(sigmas, tf.float64)  # built by the formulation's graph schedule, which keeps the invariants
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or len(sigmas) < 2 or np.any(np.diff(sigmas) >= 0) or sigmas[-2] <= 0 or sigmas[-1] < 0:
    raise ValueError(f"sigmas must decrease and be positive except the last, got {sigmas}")
  return sigmas


class _GraphMath:
  """The few NumPy functions the coefficient tables use, as TensorFlow ops (float64 in, float64 out)."""
  sqrt = staticmethod(tf.sqrt)
  minimum = staticmethod(tf.minimum)
  maximum = staticmethod(tf.maximum)
  where = staticmethod(tf.where)


def _math(sigmas):
  return _GraphMath if _in_graph(sigmas) else np


def _steps(sigmas):
  return tf.shape(sigmas)[0] - 1 if _in_graph(sigmas) else len(sigmas) - 1


def _table(values):
  if _in_graph(values):
    return tf.cast(values, tf.float32)
  return tf.constant(np.asarray(values, np.float32))


def _loop(step, x, count):
  """x after ``step(i, x)`` for i = 0..count-1, as a while loop (``count`` a Python int or an int32 tensor)."""
  if not isinstance(count, tf.Tensor) and count <= 0:
    return x
  bound = None if isinstance(count, tf.Tensor) else count
  _, x = tf.while_loop(lambda i, _: i < count, lambda i, x: (i + 1, step(i, x)), (tf.constant(0), x),
                       maximum_iterations=bound, parallel_iterations=1)
  return x


def ddpm_ancestral(denoise, x, sigmas, noise):
  """Ancestral sampling through the forward process' posterior (Ho et al. 2020, eqs. 6-7), in the σ frame.

  With x_t = x0 + σ_t n, the forward process from level σ_s to σ_t adds N(0, σ_t² - σ_s²), so
  q(x_s | x_t, x0) = N(r x_t + (1 - r) x0, σ_s² (1 - r)) with r = σ_s² / σ_t². x0 is replaced by D(x_t, σ_t).
  """
  sigmas = _check_sigmas(sigmas)
  xp = _math(sigmas)
  current, following = sigmas[:-1], sigmas[1:]
  ratio = (following * following) / (current * current)
  current_t, ratio_t, std_t = _table(current), _table(ratio), _table(following * xp.sqrt(1.0 - ratio))

  def step(i, x):
    r = tf.gather(ratio_t, i)
    denoised = denoise(x, tf.gather(current_t, i))
    return r * x + (1.0 - r) * denoised + tf.gather(std_t, i) * noise(i)

  return _loop(step, x, _steps(sigmas))


def ddim(denoise, x, sigmas, noise, eta=0.0):
  """DDIM (Song et al. 2021a, eq. 12) in the σ frame: x_s = D + σ_down ε̂ + σ_up z, with ε̂ = (x_t - D) / σ_t.

  σ_up = η σ_s sqrt(σ_t² - σ_s²) / σ_t (the paper's σ_t(η) divided by sqrt(ᾱ_s)), σ_down = sqrt(σ_s² - σ_up²).
  With η = 0 no noise is drawn after the start.
  """
  sigmas = _check_sigmas(sigmas)
  xp = _math(sigmas)
  current, following = sigmas[:-1], sigmas[1:]
  up = xp.minimum(eta * following * xp.sqrt(current * current - following * following) / current, following)
  down = xp.sqrt(following * following - up * up)
  current_t, up_t, down_t = _table(current), _table(up), _table(down)
  stochastic = eta > 0

  def step(i, x):
    sigma = tf.gather(current_t, i)
    denoised = denoise(x, sigma)
    out = denoised + tf.gather(down_t, i) * (x - denoised) / sigma
    if stochastic:
      out += tf.gather(up_t, i) * noise(i)
    return out

  return _loop(step, x, _steps(sigmas))


def _churned(sigmas, churn, s_tmin, s_tmax):
  """EDM Algorithm 2: γ_i = min(S_churn / N, sqrt(2) - 1) for σ_i in [S_tmin, S_tmax], else 0; σ̂_i = σ_i (1 + γ_i)."""
  xp = _math(sigmas)
  current = sigmas[:-1]
  count = tf.cast(_steps(sigmas), tf.float64) if _in_graph(sigmas) else len(current)
  gamma = xp.where((current >= s_tmin) & (current <= s_tmax), xp.minimum(churn / count, math.sqrt(2.0) - 1),
                   0.0 * current)
  return current * (1.0 + gamma)


def _edm_sampler(denoise, x, sigmas, noise, second_order, churn, s_tmin, s_tmax, s_noise):
  sigmas = _check_sigmas(sigmas)
  xp = _math(sigmas)
  count = _steps(sigmas)
  raised = _churned(sigmas, churn, s_tmin, s_tmax)
  added = s_noise * xp.sqrt(xp.maximum(raised * raised - sigmas[:-1] * sigmas[:-1], 0.0))
  raised_t, next_t, added_t = _table(raised), _table(sigmas[1:]), _table(added)
  stochastic = churn > 0

  def step(i, x, correct):
    sigma_hat, sigma_next = tf.gather(raised_t, i), tf.gather(next_t, i)
    if stochastic:
      x = x + tf.gather(added_t, i) * noise(i)  # raise the noise level from σ_i to σ̂_i
    slope = (x - denoise(x, sigma_hat)) / sigma_hat
    x_next = x + (sigma_next - sigma_hat) * slope
    if correct:  # Heun: average the slopes at both ends
      slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
      x_next = x + (sigma_next - sigma_hat) * 0.5 * (slope + slope_next)
    return x_next

  # Every step but the last ends at σ > 0; the last goes to σ = 0, where Heun falls back to Euler.
  # (A schedule computed in the graph always ends at 0.)
  x = _loop(lambda i, x: step(i, x, second_order), x, count - 1)
  ends_above_zero = not _in_graph(sigmas) and sigmas[-1] > 0
  return step(tf.convert_to_tensor(count - 1), x, second_order and ends_above_zero)


def euler(denoise, x, sigmas, noise, churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
  """EDM Euler sampler (1st order), optionally stochastic; without churn it equals DDIM with η = 0."""
  return _edm_sampler(denoise, x, sigmas, noise, False, churn, s_tmin, s_tmax, s_noise)


def heun(denoise, x, sigmas, noise, churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
  """EDM Heun sampler (Karras et al. 2022, Algorithm 2), optionally stochastic."""
  return _edm_sampler(denoise, x, sigmas, noise, True, churn, s_tmin, s_tmax, s_noise)


def run(name, denoise, x, sigmas, noise, *, eta=0.0, churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
  """Runs the sampler called ``name`` with the settings that apply to it."""
  if name == "ddpm":
    return ddpm_ancestral(denoise, x, sigmas, noise)
  if name == "ddim":
    return ddim(denoise, x, sigmas, noise, eta=eta)
  if name in ("euler", "heun"):
    fn = euler if name == "euler" else heun
    return fn(denoise, x, sigmas, noise, churn=churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
  raise ValueError(f"unknown sampler {name!r}")
