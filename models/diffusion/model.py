"""The diffusion model family: a U-Net denoiser trained with a DDPM or EDM formulation, sampled by any sampler.

Registered twice (models/__init__.py): ``model.name="ddpm"`` (Ho et al. 2020; ε- or v-prediction, linear or
cosine schedule) and ``model.name="edm"`` (Karras et al. 2022 preconditioning, σ sampling and loss weight). Both
share the network, the samplers, classifier-free guidance and the config keys below; ``resolve_ddpm`` and
``resolve_edm`` check the keys that only one of them has.

One training step is one phase, ``diffusion``: the formulation's per-example loss on one batch (its gradients
update the network; the loop keeps the EMA copy). Logged: ``diffusion/loss`` and the loss per σ bucket,
``loss_bucket/sigma_<lo>-<hi>`` (a ratio of sums over the global batch and logging window).

Sampling (``generate``) uses the EMA network by default; its defaults come from ``config.model`` (``sampler``,
``sample_steps``, ``guidance``, ``eta``, ``churn``...), and ``launch.sample`` may override ``sampler``, ``steps``,
``guidance``, ``eta`` and ``churn``. Guidance w: 1 = conditional (the default), 0 = unconditional, > 1 stronger.
"""

import keras
import tensorflow as tf

from genscale.errors import UserError, require
from genscale.shapes import parse_resolution
from models import base
from models import layers
from models.diffusion import formulations
from models.diffusion import samplers
from models.diffusion import unet

_EMBEDDINGS = ("positional", "fourier")
_OPTIONS = ("sampler", "steps", "guidance", "eta", "churn")


def parse_ints(value, key):
  """"1,2,2" (or a sequence) -> (1, 2, 2); "" -> (). Raises UserError naming ``--config.model.<key>``."""
  if isinstance(value, (tuple, list)):
    parts = list(value)
  else:
    parts = [p for p in str(value).replace(" ", "").split(",") if p]
  try:
    return tuple(int(p) for p in parts)
  except ValueError as e:
    raise UserError(f"--config.model.{key}={value!r}: use comma-separated integers, e.g. 1,2,2") from e


def check_sampling(sampler, steps, guidance, eta, churn, conditional, prefix):
  """Checks sampling settings; ``prefix`` is how the user set them ("--config.model." or "--")."""
  require(sampler in samplers.SAMPLERS,
          f"unknown {prefix}sampler={sampler!r}: choose one of {', '.join(samplers.SAMPLERS)}")
  require(int(steps) >= 1, f"{prefix}{'sample_steps' if prefix.startswith('--config') else 'steps'}={steps} "
          "must be at least 1")
  require(float(eta) >= 0, f"{prefix}eta={eta} must be non-negative")
  require(float(churn) >= 0, f"{prefix}churn={churn} must be non-negative")
  require(conditional or float(guidance) == 1.0,
          f"{prefix}guidance={guidance} needs a class-conditional model (--config.model.conditional=true); "
          "leave it at 1")


def _resolve_common(config):
  m = config.model
  height, width = parse_resolution(config.resolution)
  mults = parse_ints(m.channel_mults, "channel_mults")
  require(mults and all(k >= 1 for k in mults),
          f"--config.model.channel_mults={m.channel_mults!r} needs at least one positive multiplier, e.g. 1,2,2")
  if m.get("patch_size") is None:
    m.patch_size = 1
  patch = int(m.patch_size)
  require(patch >= 1 and height % patch == 0 and width % patch == 0,
          f"--config.model.patch_size={m.patch_size} must be a positive divisor of the resolution {config.resolution}")
  factor = patch * 2**(len(mults) - 1)
  require(height % factor == 0 and width % factor == 0 and min(height, width) // factor >= 4,
          f"--config.resolution={config.resolution} can't be halved {len(mults) - 1} times (for "
          f"channel_mults={m.channel_mults}, patch_size={patch}) down to at least 4 pixels; use fewer levels or a "
          "larger resolution")
  sizes = [min(height, width) // patch // 2**level for level in range(len(mults))]
  for size in parse_ints(m.attention_resolutions, "attention_resolutions"):
    require(size in sizes, f"--config.model.attention_resolutions={m.attention_resolutions!r}: {size} is not a "
            f"feature-map size of this U-Net ({','.join(map(str, sizes))}); pick from those or leave it empty")
  require(int(m.channels) >= 4 and int(m.channels) % 2 == 0,
          f"--config.model.channels={m.channels} must be an even number of at least 4")
  require(int(m.num_blocks) >= 1, f"--config.model.num_blocks={m.num_blocks} must be at least 1")
  require(int(m.num_heads) >= 1 and all(int(m.channels) * k % int(m.num_heads) == 0 for k in mults),
          f"--config.model.num_heads={m.num_heads} must divide every level's width")
  require(0.0 <= float(m.dropout) < 1.0, f"--config.model.dropout={m.dropout} must be in [0, 1)")
  require(0.0 <= float(m.label_dropout) < 1.0, f"--config.model.label_dropout={m.label_dropout} must be in [0, 1)")
  require(m.noise_embedding in _EMBEDDINGS,
          f"unknown --config.model.noise_embedding={m.noise_embedding!r}: choose one of {', '.join(_EMBEDDINGS)}")
  require(float(m.lr) > 0, f"--config.model.lr={m.lr} must be positive")
  require(float(m.lr_warmup_kimg) >= 0, f"--config.model.lr_warmup_kimg={m.lr_warmup_kimg} must be non-negative")
  require(0 < float(m.sigma_min) < float(m.sigma_max),
          f"--config.model.sigma_min={m.sigma_min} and sigma_max={m.sigma_max} need 0 < sigma_min < sigma_max")
  require(float(m.rho) > 0, f"--config.model.rho={m.rho} must be positive")
  check_sampling(m.sampler, m.sample_steps, m.guidance, m.eta, m.churn, bool(m.conditional), "--config.model.")
  return config


def resolve_ddpm(config):
  """Checks a ``ddpm`` model section. Raises UserError."""
  _resolve_common(config)
  m = config.model
  require(m.schedule in ("linear", "cosine"),
          f"unknown --config.model.schedule={m.schedule!r}: choose linear or cosine")
  require(m.prediction in ("eps", "v"), f"unknown --config.model.prediction={m.prediction!r}: choose eps or v")
  require(int(m.num_timesteps) >= 2, f"--config.model.num_timesteps={m.num_timesteps} must be at least 2")
  require(m.sampler not in ("ddpm", "ddim") or int(m.sample_steps) <= int(m.num_timesteps),
          f"--config.model.sample_steps={m.sample_steps} is more than num_timesteps={m.num_timesteps}")
  return config


def resolve_edm(config):
  """Checks an ``edm`` model section. Raises UserError."""
  _resolve_common(config)
  m = config.model
  require(float(m.sigma_data) > 0, f"--config.model.sigma_data={m.sigma_data} must be positive")
  require(float(m.p_std) > 0, f"--config.model.p_std={m.p_std} must be positive")
  return config


def build_formulation(m):
  if m.name == "ddpm":
    return formulations.DDPM(m.schedule, int(m.num_timesteps), m.prediction, float(m.beta_start),
                             float(m.beta_end))
  if m.name == "edm":
    return formulations.EDM(float(m.sigma_data), float(m.p_mean), float(m.p_std), float(m.sigma_min),
                            float(m.sigma_max))
  raise UserError(f"unknown diffusion formulation --config.model.name={m.name!r}: choose ddpm or edm")


class WarmupLearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """lr · min(1, (step + 1) / warmup_steps): the linear warm-up of DDPM and EDM (lr_rampup_kimg)."""

  def __init__(self, lr, warmup_steps):
    self.lr = float(lr)
    self.warmup_steps = float(warmup_steps)

  def __call__(self, step):
    if self.warmup_steps <= 0:
      return tf.constant(self.lr, tf.float32)
    return self.lr * tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / self.warmup_steps)

  def get_config(self):
    return {"lr": self.lr, "warmup_steps": self.warmup_steps}


class DiffusionModel(base.GenerativeModel):
  """A diffusion model of either formulation; ``config`` must have been through ``resolve_ddpm``/``resolve_edm``.

  Attributes:
    formulation: formulations.DDPM or formulations.EDM.
    network, network_ema: the U-Net and its EMA copy.
    num_classes: classes of a conditional model (0: unconditional); label ``num_classes`` is the null class.
  """

  shape_keys = ("channels", "channel_mults", "num_blocks", "attention_resolutions", "conditional",
                "noise_embedding", "scale_shift", "patch_size")

  def __init__(self, config, info, hardware):
    super().__init__(name=config.model.name)
    m = config.model
    self.config = m
    self.formulation = build_formulation(m)
    self.num_classes = base.conditional_classes(m, info)
    self.label_dropout = float(m.label_dropout)
    height, width = parse_resolution(config.resolution)
    self.image_shape = (height, width, int(config.channels))
    self.clip_denoised = bool(m.get("clip_denoised", False))
    network_args = dict(
        resolution=(height, width), image_channels=int(config.channels), channels=int(m.channels),
        channel_mults=parse_ints(m.channel_mults, "channel_mults"), num_blocks=int(m.num_blocks),
        attention_resolutions=parse_ints(m.attention_resolutions, "attention_resolutions"),
        dropout_rate=float(m.dropout), num_classes=self.num_classes, noise_embedding=m.noise_embedding,
        fourier_scale=float(m.fourier_scale), num_heads=int(m.num_heads), scale_shift=bool(m.scale_shift),
        skip_scale=float(m.skip_scale), patch_size=int(m.patch_size), dtype=hardware.compute_dtype)
    self.network = unet.UNet(keys=layers.Keys(config.seed), **network_args)
    self.network_ema, self.ema_pairs = base.ema_copy(lambda k: unet.UNet(keys=k, **network_args), self.network,
                                                     config.seed)
    warmup_steps = float(m.lr_warmup_kimg) * 1000.0 / int(config.batch_size)
    self.optimizers = {"net": keras.optimizers.Adam(
        learning_rate=WarmupLearningRate(float(m.lr), warmup_steps), beta_1=float(m.beta1), beta_2=float(m.beta2),
        epsilon=float(m.epsilon))}

  # ---- training (runs per replica)

  def loss(self, batch, rng):
    """The formulation's per-example loss, with labels dropped to the null class at rate ``label_dropout``."""
    x0 = tf.cast(batch["image"], tf.float32)
    labels = None
    if self.num_classes:
      labels = tf.cast(batch["label"], tf.int32)
      if self.label_dropout > 0:
        dropped = rng.uniform([], "label_dropout") < self.label_dropout
        labels = tf.where(dropped, tf.constant(self.num_classes, tf.int32), labels)
    per_example, sigma = self.formulation.loss(self.network, x0, labels, rng)
    return per_example, formulations.bucket_metrics(per_example, sigma)

  def phases(self, stage):
    del stage  # one stage
    return [base.Phase("diffusion", "net", self.network.trainable_variables, self.loss)]

  # ---- sampling (runs per replica)

  def sampling_options(self, **options):
    """The sampling settings: config defaults overridden by ``options``. Raises UserError for bad options."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
      raise UserError(f"diffusion sampling takes {', '.join('--' + o for o in _OPTIONS)}; "
                      f"got --{', --'.join(unknown)}")
    m = self.config
    settings = dict(sampler=m.sampler, steps=int(m.sample_steps), guidance=float(m.guidance), eta=float(m.eta),
                    churn=float(m.churn))
    settings.update({k: v for k, v in options.items() if v is not None})
    sampler = settings["sampler"]
    check_sampling(sampler, settings["steps"], settings["guidance"], settings["eta"], settings["churn"],
                   bool(self.num_classes), "--")
    require("eta" not in options or sampler == "ddim" or float(options["eta"]) == 0,
            f"--eta applies to the ddim sampler only, not --sampler={sampler}")
    require("churn" not in options or sampler in ("euler", "heun") or float(options["churn"]) == 0,
            f"--churn applies to the euler and heun samplers only, not --sampler={sampler}")
    if sampler != "ddim":
      settings["eta"] = 0.0
    if sampler not in ("euler", "heun"):
      settings["churn"] = 0.0
    settings["steps"] = int(settings["steps"])
    settings["guidance"] = float(settings["guidance"])
    return settings

  def check_sampling_options(self, **options):
    self.sampling_options(**options)

  def denoiser(self, network, labels=None, guidance=1.0):
    """D(x, σ) for a sampler: the formulation around ``network``, with classifier-free guidance.

    For a conditional model, ``labels`` [b] are the classes (None: the null class, i.e. unconditional samples).
    With guidance w != 1 the conditional and null-class predictions come from one network call on a doubled
    batch, combined as D_u + w (D_c - D_u).
    """
    formulation, num_classes = self.formulation, self.num_classes

    def call(x, sigma, classes):
      return formulation.denoise(network, x, tf.fill(tf.shape(x)[:1], tf.cast(sigma, tf.float32)), classes)

    def denoise(x, sigma):
      if not num_classes:
        out = call(x, sigma, None)
      else:
        null = tf.fill(tf.shape(x)[:1], tf.constant(num_classes, tf.int32))
        def guided():
          both = call(tf.concat([x, x], 0), sigma, tf.concat([tf.cast(labels, tf.int32), null], 0))
          conditional, unconditional = tf.split(both, 2, axis=0)
          return samplers.classifier_free_guidance(conditional, unconditional, guidance)

        if labels is None:
          out = call(x, sigma, null)
        elif isinstance(guidance, tf.Tensor):  # a graph value (an exported model's input): branch in the graph
          out = tf.cond(tf.equal(guidance, 1.0), lambda: call(x, sigma, tf.cast(labels, tf.int32)), guided)
        elif guidance == 1.0:
          out = call(x, sigma, tf.cast(labels, tf.int32))
        else:
          out = guided()
      return tf.clip_by_value(out, -1.0, 1.0) if self.clip_denoised else out

    return denoise

  def generate(self, rng, labels=None, ema=True, **options):
    """Images in [-1, 1], float32 [b, H, W, C]. Runs per replica, compiled (XLA when the runtime uses it).

    Options (all optional; defaults from config.model): sampler (ddpm|ddim|euler|heun), steps, guidance, eta (ddim),
    churn (euler, heun). Randomness: the start from stream "sample/start", step noise from "sample/noise".
    """
    settings = self.sampling_options(**options)
    return self._sample(rng, labels, ema, settings, self._sigmas(settings, settings["steps"]), settings["guidance"])

  def _sigmas(self, settings, steps):
    m = self.config
    schedule = self.formulation.sampling_sigmas_graph if isinstance(steps, tf.Tensor) else \
        self.formulation.sampling_sigmas
    return schedule(settings["sampler"], steps, float(m.sigma_min), float(m.sigma_max), float(m.rho))

  def _sample(self, rng, labels, ema, settings, sigmas, guidance):
    m = self.config
    network = self.network_ema if ema else self.network
    if isinstance(sigmas, tf.Tensor):
      std = tf.cast(self.formulation.prior_std(sigmas[0]), tf.float32)
    else:
      std = self.formulation.prior_std(float(sigmas[0]))
    x = rng.normal(self.image_shape, "sample/start") * std
    denoise = self.denoiser(network, labels if self.num_classes else None, guidance)
    noise = samplers.step_noise(rng, self.image_shape, "sample/noise")
    x = samplers.run(settings["sampler"], denoise, x, sigmas, noise, eta=settings["eta"], churn=settings["churn"],
                     s_tmin=float(m.s_tmin), s_tmax=float(m.s_tmax), s_noise=float(m.s_noise))
    return tf.clip_by_value(x, -1.0, 1.0)

  # ---- serving: the step count and the guidance are graph values; the sampler, η and churn the config's

  def max_steps(self):
    """The most sampler steps the formulation allows (DDPM/DDIM step on the T timesteps), or None."""
    if self.config.sampler in ("ddpm", "ddim"):
      return int(getattr(self.formulation, "num_timesteps", 0)) or None
    return None

  def serving_inputs(self):
    settings = self.sampling_options()
    inputs = {"steps": (tf.int32, settings["steps"])}
    if self.num_classes:
      inputs["guidance"] = (tf.float32, settings["guidance"])
    return inputs

  def serving_range(self, name):
    if name == "steps":
      return {"min": 1, **({"max": self.max_steps()} if self.max_steps() else {})}
    return {"min": 0.0} if name == "guidance" else {}

  def serve(self, rng, labels=None, ema=True, steps=None, guidance=None):
    settings = self.sampling_options()
    steps = settings["steps"] if steps is None else tf.maximum(tf.cast(steps, tf.int32), 1)
    if isinstance(steps, tf.Tensor) and self.max_steps():
      steps = tf.minimum(steps, self.max_steps())
    guidance = settings["guidance"] if guidance is None else tf.cast(guidance, tf.float32)
    return self._sample(rng, labels, ema, settings, self._sigmas(settings, steps), guidance)
