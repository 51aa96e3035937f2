"""Diffusion formulations: how data is noised for training, what the network predicts, and how its output becomes a
denoised image. Each class is named after its paper.

Common frame. Samplers (samplers.py) see every formulation through one function, the ideal-denoiser estimate
D(x; σ) ≈ E[x0 | x], where x = x0 + σ n, n ~ N(0, I) (the "variance exploding" frame of Karras et al. 2022, §2).
A variance-preserving DDPM state x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε is the same thing scaled: x = x_t / sqrt(ᾱ) and
σ = sqrt((1 - ᾱ) / ᾱ), so ᾱ = 1 / (1 + σ²). So any sampler runs with any formulation, and with an analytic
denoiser in the tests.

Precision: schedules are computed in float64 with NumPy and used as float32 constants; every σ, coefficient and
loss is float32 whatever the network's compute dtype. Everything here runs per replica (inside the compiled loss or
``generate``) except the NumPy schedule set-up, which runs once on the host when the model is built.
"""

import math

import numpy as np
import tensorflow as tf

from genscale.errors import UserError

# Upper edges of the σ buckets in which the training loss is also reported (the last bucket is open-ended).
BUCKET_EDGES = (0.1, 0.5, 1.0, 2.0, 5.0, 20.0)


def bucket_names(edges=BUCKET_EDGES):
  bounds = (0.0,) + tuple(edges) + (math.inf,)
  return [f"loss_bucket/sigma_{lo:g}-{hi:g}" for lo, hi in zip(bounds[:-1], bounds[1:])]


def bucket_metrics(per_example_loss, sigma, edges=BUCKET_EDGES):
  """Loss per σ bucket as (numerator [b], denominator [b]) pairs: the loop reports sum(loss in bucket) / count."""
  bounds = (0.0,) + tuple(edges) + (math.inf,)
  metrics = {}
  for name, lo, hi in zip(bucket_names(edges), bounds[:-1], bounds[1:]):
    inside = tf.cast(tf.logical_and(sigma >= lo, sigma < hi), tf.float32)
    metrics[name] = (per_example_loss * inside, inside)
  return metrics


def karras_sigmas(steps, sigma_min, sigma_max, rho=7.0):
  """The EDM time steps (Karras et al. 2022, eq. 5): ``steps`` levels from sigma_max to sigma_min, evenly spaced in
  σ^(1/ρ), then 0. NumPy float64 [steps + 1]."""
  if steps == 1:
    return np.array([sigma_max, 0.0])
  ramp = np.arange(steps) / (steps - 1)
  inverse_rho = 1.0 / rho
  levels = (sigma_max**inverse_rho + ramp * (sigma_min**inverse_rho - sigma_max**inverse_rho))**rho
  return np.append(levels, 0.0)


def karras_sigmas_graph(steps, sigma_min, sigma_max, rho=7.0):
  """``karras_sigmas`` for a step count that is a graph value (int32 scalar >= 1): float64 [steps + 1]."""
  steps = tf.convert_to_tensor(steps, tf.int32)
  inverse_rho = 1.0 / rho
  top, bottom = sigma_max**inverse_rho, sigma_min**inverse_rho  # Python floats, as in karras_sigmas
  ramp = tf.range(steps, dtype=tf.float64) / tf.cast(tf.maximum(steps - 1, 1), tf.float64)
  levels = tf.pow(top + ramp * (bottom - top), rho)
  levels = tf.where(tf.equal(steps, 1), tf.fill([steps], tf.constant(sigma_max, tf.float64)), levels)
  return tf.concat([levels, tf.zeros([1], tf.float64)], axis=0)


def _mean_over_pixels(x):
  return tf.reduce_mean(x, axis=list(range(1, len(x.shape))))


def _expand(v, x):
  """Per-example [b] values broadcast against an image batch."""
  return tf.reshape(v, [-1] + [1] * (len(x.shape) - 1))


def linear_betas(num_timesteps, beta_start=1e-4, beta_end=0.02):
  """Ho et al. 2020: β rising linearly from 1e-4 to 0.02 over T = 1000 steps (scaled here to any T)."""
  return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_alphas_cumprod(num_timesteps, offset=0.008):
  """Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2), t = 0..T."""
  t = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  f = np.cos((t + offset) / (1 + offset) * math.pi / 2)**2
  return f / f[0]


def cosine_betas(num_timesteps, offset=0.008, max_beta=0.999):
  """β_t = 1 - ᾱ(t) / ᾱ(t - 1), clipped at 0.999 so the last steps stay finite (Nichol & Dhariwal 2021)."""
  alphas_cumprod = cosine_alphas_cumprod(num_timesteps, offset)
  return np.minimum(1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1], max_beta)


class DDPM:
  """Denoising diffusion probabilistic models (Ho et al. 2020), discrete time.

  Timestep index t = 0..T-1 (t = 0 is the paper's t = 1). Training draws t uniformly and noises
  x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε. The network gets x_t and t and predicts ε (the paper's L_simple) or, with
  ``prediction="v"``, v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0 (Salimans & Ho 2022). The per-example loss is the mean
  squared error of that prediction over pixels.

  As a denoiser (for samplers) a noise level σ is mapped back to a fractional timestep by interpolating log σ over
  the schedule's table, so the DDPM/DDIM samplers, which step on the table, hit integer timesteps exactly, and
  Euler/Heun can use any σ in the table's range.

  Args:
    schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal 2021).
    num_timesteps: T.
    prediction: "eps" or "v".
    beta_start, beta_end: the linear schedule's ends.
  """

  name = "ddpm"

  def __init__(self, schedule="linear", num_timesteps=1000, prediction="eps", beta_start=1e-4, beta_end=0.02):
    if schedule == "linear":
      betas = linear_betas(num_timesteps, beta_start, beta_end)
    elif schedule == "cosine":
      betas = cosine_betas(num_timesteps)
    else:
      raise UserError(f"unknown --config.model.schedule={schedule!r}: choose linear or cosine")
    if prediction not in ("eps", "v"):
      raise UserError(f"unknown --config.model.prediction={prediction!r}: choose eps or v")
    self.schedule = schedule
    self.prediction = prediction
    self.num_timesteps = int(num_timesteps)
    self.betas = betas
    self.alphas_cumprod = np.cumprod(1.0 - betas)  # float64 [T]
    self.sigmas = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)  # increasing in t
    self.sigma_min = float(self.sigmas[0])
    self.sigma_max = float(self.sigmas[-1])
    self._sqrt_ab = tf.constant(np.sqrt(self.alphas_cumprod), tf.float32)
    self._sqrt_1mab = tf.constant(np.sqrt(1.0 - self.alphas_cumprod), tf.float32)
    self._sigmas = tf.constant(self.sigmas, tf.float32)
    self._log_sigmas = tf.constant(np.log(self.sigmas), tf.float32)

  def noise(self, x0, t, eps):
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε for int timesteps t [b]."""
    return _expand(tf.gather(self._sqrt_ab, t), x0) * x0 + _expand(tf.gather(self._sqrt_1mab, t), x0) * eps

  def target(self, x0, t, eps):
    """What the network learns to output: ε, or v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0."""
    if self.prediction == "eps":
      return eps
    return _expand(tf.gather(self._sqrt_ab, t), x0) * eps - _expand(tf.gather(self._sqrt_1mab, t), x0) * x0

  def loss(self, net, x0, labels, rng):
    """Per-example loss [b] and each example's noise level σ [b]. Runs per replica."""
    t = rng.integers([], "ddpm/t", self.num_timesteps)
    eps = rng.normal(x0.shape[1:], "ddpm/eps")
    prediction = net(self.noise(x0, t, eps), tf.cast(t, tf.float32), labels, rng)
    per_example = _mean_over_pixels(tf.square(prediction - self.target(x0, t, eps)))
    return per_example, tf.gather(self._sigmas, t)

  def timestep(self, sigma):
    """Fractional timestep [b] whose noise level is σ [b] (linear in log σ between table entries, clamped)."""
    log_sigma = tf.math.log(sigma)
    below = tf.reduce_sum(tf.cast(self._log_sigmas[None, :] <= log_sigma[:, None], tf.int32), axis=1) - 1
    low = tf.clip_by_value(below, 0, self.num_timesteps - 2)
    lo, hi = tf.gather(self._log_sigmas, low), tf.gather(self._log_sigmas, low + 1)
    fraction = tf.clip_by_value((log_sigma - lo) / (hi - lo), 0.0, 1.0)
    return tf.cast(low, tf.float32) + fraction

  def denoise(self, net, x, sigma, labels=None, rng=None):
    """D(x; σ) for x = x0 + σ n (float32 [b, H, W, C]) and σ [b]. Runs per replica."""
    scale = tf.math.rsqrt(1.0 + tf.square(sigma))  # sqrt(ᾱ)
    out = net(x * _expand(scale, x), self.timestep(sigma), labels, rng)
    if self.prediction == "eps":
      return x - _expand(sigma, x) * out
    # x0 = sqrt(ᾱ) x_t - sqrt(1 - ᾱ) v with x_t = sqrt(ᾱ) x and sqrt(1 - ᾱ) = σ sqrt(ᾱ).
    return _expand(tf.square(scale), x) * x - _expand(sigma * scale, x) * out

  def prior_std(self, sigma):
    """Standard deviation of the sampler's starting point at level σ: x_T ~ N(0, I) is x = x_T / sqrt(ᾱ_T)."""
    if isinstance(sigma, tf.Tensor):
      return tf.sqrt(1.0 + tf.square(sigma))
    return math.sqrt(1.0 + sigma**2)

  def sampling_sigmas(self, sampler, steps, sigma_min, sigma_max, rho):
    """Noise levels a sampler steps through, ending with 0 (NumPy float64 [steps + 1]).

    DDPM and DDIM step on ``steps`` timesteps evenly spaced over 0..T-1 (both ends included; all T for a full
    DDPM chain). Euler and Heun use the EDM schedule inside the table's range.
    """
    if sampler in ("ddpm", "ddim"):
      if steps > self.num_timesteps:
        raise UserError(f"--steps={steps} is more than the {self.num_timesteps} DDPM timesteps; use at most "
                        f"{self.num_timesteps}")
      timesteps = np.round(np.linspace(0, self.num_timesteps - 1, steps)).astype(np.int64)[::-1]
      return np.append(self.sigmas[timesteps], 0.0)
    return karras_sigmas(steps, max(sigma_min, self.sigma_min), min(sigma_max, self.sigma_max), rho)

  def sampling_sigmas_graph(self, sampler, steps, sigma_min, sigma_max, rho):
    """``sampling_sigmas`` for a step count that is a graph value (int32 scalar in 1..T): float64 [steps + 1]."""
    if sampler not in ("ddpm", "ddim"):
      return karras_sigmas_graph(steps, max(sigma_min, self.sigma_min), min(sigma_max, self.sigma_max), rho)
    steps = tf.convert_to_tensor(steps, tf.int32)
    last = float(self.num_timesteps - 1)
    # np.linspace(0, last, steps): i * (last / (steps - 1)), the last one exactly ``last``; then round half to even.
    spaced = tf.range(steps, dtype=tf.float64) * (last / tf.cast(tf.maximum(steps - 1, 1), tf.float64))
    is_last = tf.logical_and(tf.equal(tf.range(steps), steps - 1), steps > 1)
    spaced = tf.where(is_last, tf.constant(last, tf.float64), spaced)
    timesteps = tf.reverse(tf.cast(tf.round(spaced), tf.int32), [0])
    return tf.concat([tf.gather(tf.constant(self.sigmas, tf.float64), timesteps), tf.zeros([1], tf.float64)], 0)


class EDM:
  """Elucidating the design space of diffusion models (Karras et al. 2022): preconditioning, σ sampling, loss weight.

  D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)) with
    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / sqrt(σ² + σ_d²),  c_in = 1 / sqrt(σ² + σ_d²),  c_noise = ln(σ) / 4.
  Training draws ln σ ~ N(P_mean, P_std²) and minimises λ(σ) |D(x0 + σ n; σ) - x0|² (mean over pixels) with
  λ(σ) = (σ² + σ_d²) / (σ σ_d)², which makes the network's effective target unit-variance at every σ.

  Args:
    sigma_data: σ_d, the data's standard deviation (0.5 for images in [-1, 1]).
    p_mean, p_std: the log-normal σ distribution of training.
  """

  name = "edm"

  def __init__(self, sigma_data=0.5, p_mean=-1.2, p_std=1.2, sigma_min=0.002, sigma_max=80.0):
    self.sigma_data = float(sigma_data)
    self.p_mean = float(p_mean)
    self.p_std = float(p_std)
    self.sigma_min = float(sigma_min)
    self.sigma_max = float(sigma_max)

  def preconditioning(self, sigma):
    """(c_skip, c_out, c_in, c_noise), each float32 like σ."""
    sigma = tf.cast(sigma, tf.float32)
    sd2 = self.sigma_data**2
    total = tf.square(sigma) + sd2
    c_skip = sd2 / total
    c_out = sigma * self.sigma_data * tf.math.rsqrt(total)
    c_in = tf.math.rsqrt(total)
    c_noise = tf.math.log(sigma) / 4.0
    return c_skip, c_out, c_in, c_noise

  def loss_weight(self, sigma):
    """λ(σ) = (σ² + σ_d²) / (σ σ_d)²."""
    return (tf.square(sigma) + self.sigma_data**2) / tf.square(sigma * self.sigma_data)

  def sample_sigma(self, rng):
    """σ [b] with ln σ ~ N(P_mean, P_std²)."""
    return tf.exp(self.p_mean + self.p_std * rng.normal([], "edm/log_sigma"))

  def loss(self, net, x0, labels, rng):
    """Per-example weighted loss [b] and σ [b]. Runs per replica."""
    sigma = self.sample_sigma(rng)
    noisy = x0 + _expand(sigma, x0) * rng.normal(x0.shape[1:], "edm/noise")
    denoised = self.denoise(net, noisy, sigma, labels, rng)
    per_example = self.loss_weight(sigma) * _mean_over_pixels(tf.square(denoised - x0))
    return per_example, sigma

  def denoise(self, net, x, sigma, labels=None, rng=None):
    """D(x; σ) for float32 x [b, H, W, C] and σ [b]. Runs per replica."""
    c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
    out = net(x * _expand(c_in, x), c_noise, labels, rng)
    return _expand(c_skip, x) * x + _expand(c_out, x) * out

  def prior_std(self, sigma):
    """The sampler starts from N(0, σ_max² I) (Karras et al. 2022, Algorithm 1)."""
    return sigma if isinstance(sigma, tf.Tensor) else float(sigma)

  def sampling_sigmas(self, sampler, steps, sigma_min, sigma_max, rho):
    """Every sampler steps through the EDM schedule (NumPy float64 [steps + 1], ending with 0)."""
    del sampler
    return karras_sigmas(steps, sigma_min, sigma_max, rho)

  def sampling_sigmas_graph(self, sampler, steps, sigma_min, sigma_max, rho):
    """``sampling_sigmas`` for a step count that is a graph value (int32 scalar >= 1): float64 [steps + 1]."""
    del sampler
    return karras_sigmas_graph(steps, sigma_min, sigma_max, rho)
