"""Progressive GAN (Karras et al. 2018): the model, its losses, and its config checks.

One training step is one critic update and one generator update on one minibatch, both at the current level of
detail. The level of detail lives in the model (``lod``, a checkpointed variable) and follows the images shown:
after every step ``update_state`` sets it to the closed-form schedule value for the next step's image count
(``schedule.Growth``), so a run resumed mid-fade continues with exactly the same alpha.

Stages (``base.Stage``): every stable level and every fade is a stage of the training loop, keyed (level,
fading). The loop feeds real images at the stage's resolution with the stage's batch (``batch_by_resolution``)
and traces the step once per stage from ``phases(stage)``, whose losses are bound to the stage's level, a Python
int: the graph holds only that level's layers, and the loop differentiates the losses directly. During a fade, alpha comes from the ``lod``
variable (not from the trace), and the reals are cross-faded with their 2x average-pooled and upsampled version.
Gradient penalties are measured with respect to the target-resolution image, as in the reference implementation
(where the networks' inputs and outputs are always at the target size): this level's norm / 2^(levels - level).

Losses (``model.loss``):
  wgan-gp        the paper's: WGAN-GP (λ = 10, target norm 1) with the drift term ε_drift · D(x)² (ε = 0.001).
  nonsaturating  the non-saturating logistic game, with an optional R1 penalty (``r1_gamma``).
Optimiser: Adam(lr 0.001, β1 = 0, β2 = 0.99, ε = 1e-8) for both networks, with an optional learning rate per
resolution (``lr_by_resolution``, the resolution the networks run at), restarted when a fade starts and ends as
in the reference code (``reset_adam``). The generator EMA is the loop's (``ema_halflife_kimg``); the config files
set the half-life that gives the paper's β = 0.999 per step at their batch size.
Class conditioning (``conditional``): the label is appended to z as a one-hot vector, and the discriminator either
has an auxiliary classifier output (``acgan``, as in the paper's CIFAR-10 runs; cross-entropy on real and fake
labels, weight ``acgan_weight``) or a projection term (``projection``).
"""

import functools

import keras
import tensorflow as tf

from genscale.errors import UserError, require
from genscale.shapes import parse_resolution
from models import base
from models import layers
from models import losses
from models.pggan import networks
from models.pggan import schedule

LOSSES = ("wgan-gp", "nonsaturating")
CONDITIONING = ("acgan", "projection")
GP_RESOLUTIONS = ("target", "level")


def _power_of_two(value):
  return value >= 1 and value & (value - 1) == 0


def parse_lr_by_resolution(text, target):
  """"128:0.0015,256:0.002" -> {128: 0.0015, 256: 0.002}. Raises UserError."""
  table = {}
  for item in str(text or "").replace(" ", "").split(","):
    if not item:
      continue
    try:
      res, lr = item.split(":")
      res, lr = int(res), float(lr)
    except ValueError as e:
      raise UserError(f"--config.model.lr_by_resolution={text!r}: write RES:LR pairs, e.g. 128:0.0015,256:0.002") \
          from e
    require(_power_of_two(res) and 4 <= res <= target and lr > 0,
            f"--config.model.lr_by_resolution={text!r}: {res} must be a power of two from 4 to {target} and the "
            "rate positive")
    table[res] = lr
  return table


def parse_batch_by_resolution(text, target, group):
  """"4:64,8:32" -> {4: 64, 8: 32}. Raises UserError."""
  table = {}
  for item in str(text or "").replace(" ", "").split(","):
    if not item:
      continue
    try:
      res, batch = (int(part) for part in item.split(":"))
    except ValueError as e:
      raise UserError(f"--config.model.batch_by_resolution={text!r}: write RES:BATCH pairs, e.g. 4:64,8:32,16:16") \
          from e
    require(_power_of_two(res) and 4 <= res <= target,
            f"--config.model.batch_by_resolution={text!r}: {res} must be a power of two from 4 to {target}")
    require(batch >= 1 and batch % group == 0,
            f"--config.model.batch_by_resolution={text!r}: the batch {batch} at {res}x{res} must be a positive "
            f"multiple of --config.model.mbstd_group={group}")
    table[res] = batch
  return table


def resolve(config):
  """Checks the model section. Raises UserError."""
  m = config.model
  require(m.loss in LOSSES, f"unknown --config.model.loss={m.loss!r}: choose one of {', '.join(LOSSES)}")
  require(m.get("gp_resolution", "target") in GP_RESOLUTIONS,
          f"unknown --config.model.gp_resolution={m.get('gp_resolution')!r}: choose one of {', '.join(GP_RESOLUTIONS)}")
  require(m.conditioning in CONDITIONING,
          f"unknown --config.model.conditioning={m.conditioning!r}: choose one of {', '.join(CONDITIONING)}")
  height, width = parse_resolution(config.resolution)
  require(height == width and _power_of_two(height) and height >= 8,
          f"--config.resolution={config.resolution}: the progressive GAN grows square images from 4x4; use a power "
          "of two from 8 up, e.g. 32, 256 or 1024")
  start = int(m.start_resolution)
  require(_power_of_two(start) and 4 <= start <= height,
          f"--config.model.start_resolution={start} must be a power of two from 4 to the resolution {height}")
  schedule.Growth(height, start, m.stable_kimg, m.fade_kimg)  # checks the kimg values
  require(int(m.width_base) >= 1 and int(m.width_max) >= 1,
          f"--config.model.width_base={m.width_base} and width_max={m.width_max} must be positive")
  require(int(m.latent_dim) >= 1, f"--config.model.latent_dim={m.latent_dim} must be positive")
  group = int(m.mbstd_group)
  require(group >= 1 and int(config.batch_size) % group == 0,
          f"--config.batch_size={config.batch_size} must be a multiple of --config.model.mbstd_group={group}")
  require(int(m.n_critic) >= 1, f"--config.model.n_critic={m.n_critic} must be at least 1")
  require(float(m.lr) > 0, f"--config.model.lr={m.lr} must be positive")
  parse_lr_by_resolution(m.lr_by_resolution, height)
  parse_batch_by_resolution(m.get("batch_by_resolution"), height, group)
  return config


class LevelLearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """The learning rate of the resolution the networks currently run at (read from the model's lod variable)."""

  def __init__(self, lod, rates):
    self.lod = lod
    self.rates = tuple(float(r) for r in rates)  # by level: 4x4, 8x8, ...

  def __call__(self, step):
    del step
    level, _ = schedule.level_and_alpha(self.lod, len(self.rates) - 1)
    return tf.gather(tf.constant(self.rates, tf.float32), level)

  def get_config(self):
    return {"rates": self.rates}


# The model's Python control flow is all static (levels are Python ints); tracing it without AutoGraph's
# source conversion makes the first step trace several times faster.
_plain_python = tf.autograph.experimental.do_not_convert


class RestartableAdam(keras.optimizers.Adam):
  """Adam whose moments and bias correction can restart, as the reference code restarts them for new layers.

  The reference implementation resets its Adam state whenever the level of detail crosses an integer (when a
  fade starts and when it ends). Without that, the layers of a new resolution, whose second-moment estimates are
  still zero (they were in no stage's phases until now), would start with steps of up to lr / sqrt(1 - β2) (10 lr for
  β2 = 0.99) because the bias correction has long decayed. ``restart()`` zeroes the moments and makes the next
  update count as Adam's first; the restart point is a checkpointed variable (``restarted_at``).

  Args:
    restarted_at: an int64 variable (created by the model, under the strategy's scope) holding the number of
      updates done when Adam last restarted.
  """

  def __init__(self, restarted_at, **kwargs):
    super().__init__(**kwargs)
    self._restarted_at = lambda: restarted_at  # a callable, so Keras does not track the model's variable

  def restart(self):
    """Zeroes the moments; the next update is Adam's first. Cross-replica context."""
    for slot in self._momentums + self._velocities:
      slot.assign(tf.zeros_like(slot))
    self._restarted_at().assign(tf.cast(self.iterations, tf.int64))

  def update_step(self, gradient, variable, learning_rate):
    dtype = variable.dtype
    gradient = tf.cast(gradient, dtype)
    steps = tf.cast(tf.cast(self.iterations, tf.int64) + 1 - self._restarted_at(), dtype)  # 1 after a restart
    index = self._get_variable_index(variable)
    m, v = self._momentums[index], self._velocities[index]
    self.assign_add(m, (gradient - m) * (1.0 - self.beta_1))
    self.assign_add(v, (tf.square(gradient) - v) * (1.0 - self.beta_2))
    step_size = (tf.cast(learning_rate, dtype) * tf.sqrt(1.0 - tf.pow(tf.cast(self.beta_2, dtype), steps))
                 / (1.0 - tf.pow(tf.cast(self.beta_1, dtype), steps)))
    self.assign_sub(variable, m * step_size / (tf.sqrt(v) + self.epsilon))


def _cross_entropy(logits, labels):
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))


class ProgressiveGAN(base.GenerativeModel):
  """Progressive GAN family model; ``config`` must have been through ``resolve``.

  Attributes:
    generator, discriminator, generator_ema: the networks (all resolutions).
    lod: float32 variable, the level of detail of the next step (0 = target resolution).
    growth: the schedule.
  """

  shape_keys = ("latent_dim", "width_base", "width_max", "conditional", "conditioning")

  def __init__(self, config, info, hardware):
    super().__init__(name="pggan")
    m = config.model
    compute_dtype = hardware.compute_dtype
    self.loss_kind = m.loss
    self.latent_dim = int(m.latent_dim)
    self.num_classes = base.conditional_classes(m, info)
    self.conditioning = m.conditioning if self.num_classes else None
    resolution = parse_resolution(config.resolution)[0]
    self.resolution = resolution
    self.growth = schedule.Growth(resolution, int(m.start_resolution), m.stable_kimg, m.fade_kimg)
    self.levels = self.growth.levels
    batches = parse_batch_by_resolution(m.get("batch_by_resolution"), resolution, int(m.mbstd_group))
    self.batch_by_level = [batches.get(4 * 2**level, int(config.batch_size)) for level in range(self.levels + 1)]
    self.gp_weight = float(m.gp_weight)
    self.gp_resolution = m.get("gp_resolution", "target")
    self.drift = float(m.drift)
    self.r1_gamma = float(m.r1_gamma)
    self.acgan_weight = float(m.acgan_weight)
    self.n_critic = int(m.n_critic)

    keys = layers.Keys(config.seed)
    g_args = (m, resolution, int(config.channels), self.num_classes)
    self.generator = networks.Generator(*g_args, keys, compute_dtype)
    self.discriminator = networks.Discriminator(m, resolution, int(config.channels), self.num_classes,
                                                self.conditioning, keys, compute_dtype)
    self.generator_ema, self.ema_pairs = base.ema_copy(lambda k: networks.Generator(*g_args, k, compute_dtype),
                                                       self.generator, config.seed)

    self.lod = base.state_variable(self.growth.lod(0), "lod")
    self.reset_adam = bool(m.reset_adam)
    self.adam_restarted_at = {name: base.state_variable(0, f"adam_restarted_at_{name}", tf.int64)
                              for name in ("g", "d")}
    table = parse_lr_by_resolution(m.lr_by_resolution, resolution)
    rates = [table.get(4 * 2**level, float(m.lr)) for level in range(self.levels + 1)]
    self.optimizers = {
        name: RestartableAdam(restarted_at, learning_rate=LevelLearningRate(self.lod, rates),
                              beta_1=float(m.beta1), beta_2=float(m.beta2), epsilon=float(m.adam_epsilon))
        for name, restarted_at in self.adam_restarted_at.items()}

  # ---- stages (host) and the state that follows the images shown

  def stage(self, nimg):
    """Each stable level and each fade is a stage: (level, fading), at the level's resolution and batch."""
    level, fading = self.growth.level_and_fading(nimg)
    resolution = 4 * 2**level
    return base.Stage(key=(level, fading), name=f"{resolution}x{resolution}" + (" fade-in" if fading else ""),
                      resolution=resolution, global_batch=self.batch_by_level[level],
                      end_nimg=self.growth.stage_end(nimg))

  def _alpha(self, level, fading):
    """The fade weight of the stage's new block: from ``lod`` during a fade (so a resume continues it), the
    constant 1.0 at a stable level (the networks then skip the old path)."""
    if not fading:
      return 1.0
    return tf.clip_by_value(float(self.levels - level + 1) - tf.convert_to_tensor(self.lod), 0.0, 1.0)

  @_plain_python
  def update_state(self, stage, step, nimg, metrics):
    """Sets lod for the next step: the schedule at the images seen once this step's batch is counted.

    When lod crosses an integer (a fade starts or ends) and ``reset_adam`` is on, both optimizers restart.
    """
    del step, metrics
    level, _ = stage.key
    old = tf.convert_to_tensor(self.lod)
    new = self.growth.lod(tf.convert_to_tensor(nimg) + self.batch_by_level[level])
    self.lod.assign(new)
    if not self.reset_adam:
      return
    crossed = tf.logical_or(tf.not_equal(tf.floor(old), tf.floor(new)), tf.not_equal(tf.math.ceil(old),
                                                                                      tf.math.ceil(new)))

    def restart():
      for optimizer in self.optimizers.values():
        optimizer.restart()
      return tf.constant(True)

    tf.cond(crossed, restart, lambda: tf.constant(False))

  def scalars(self):
    level, alpha = schedule.level_and_alpha(self.lod, self.levels)
    return {"lod": tf.identity(self.lod), "alpha": alpha,
            "resolution": 4.0 * tf.pow(2.0, tf.cast(level, tf.float32))}

  # ---- losses (run per replica)

  def _fake_labels(self, rng, stream):
    return rng.integers([], stream, self.num_classes) if self.num_classes else None

  def _critic_at(self, images, labels, level, alpha):
    """(score [b], class logits [b, n] or None) for images at the level's resolution."""
    out = self.discriminator.scores_at(images, labels, level, alpha)
    return out if self.conditioning == "acgan" else (out, None)

  def _input_gradient_norm(self, critic, images, level):
    """||∇ critic|| per example for the gradient penalties, measured as ``gp_resolution`` says.

    "target" (the reference code): with respect to the target-resolution image. The networks there see the
    target-size image average-pooled by f = 2^(levels - level), and real, fake and mixed images are all
    nearest-neighbour upsampled from this level, so the gradient at the target size is the gradient at this
    level spread over f x f pixels and divided by f²: its norm is this level's norm / f. A penalty towards 1 then
    asks for a critic f times steeper at this level (8 at 4x4 for a 32x32 target).
    "level": with respect to the image at this level's resolution, as the critic sees it (norm towards 1 at every
    level).
    """
    with tf.GradientTape() as tape:
      tape.watch(images)
      total = tf.reduce_sum(tf.cast(critic(images), tf.float32))
    grads = tf.cast(tape.gradient(total, images), tf.float32)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return norm / float(2**(self.levels - level)) if self.gp_resolution == "target" else norm

  def _reals(self, batch, level, fading):
    """The batch's real images (at the stage's resolution), cross-faded during a fade."""
    images = tf.cast(batch["image"], tf.float32)
    size = 4 * 2**level
    if tuple(images.shape[1:3]) != (size, size):
      raise ValueError(f"the {size}x{size} stage got {images.shape[1]}x{images.shape[2]} images: the input must "
                       "be built for the stage being trained")
    return networks.fade_reals(images, self._alpha(level, fading)) if fading else images

  @_plain_python
  def discriminator_loss(self, batch, rng, level, fading):
    """The critic's per-example loss at ``level`` (a fade when ``fading``)."""
    alpha = self._alpha(level, fading)
    labels = batch.get("label") if self.num_classes else None
    fake_labels = self._fake_labels(rng, "d/label")
    latent = self.generator.latent(rng.normal([self.latent_dim], "d/z"), fake_labels)
    mix = tf.reshape(rng.uniform([], "d/gp_eps"), [-1, 1, 1, 1])
    real = self._reals(batch, level, fading)
    fake = self.generator.image_at(latent, level, alpha)
    real_score, real_logits = self._critic_at(real, labels, level, alpha)
    fake_score, fake_logits = self._critic_at(fake, fake_labels, level, alpha)
    kind = "wgan-gp" if self.loss_kind == "wgan-gp" else "nonsaturating"
    loss = losses.discriminator_loss(kind, real_score, fake_score)
    metrics = {"D/loss_game": loss, "D/real": real_score, "D/fake": fake_score}
    score_only = lambda x: self._critic_at(x, labels, level, alpha)[0]
    if self.loss_kind == "wgan-gp":
      mixed = mix * real + (1.0 - mix) * fake
      penalty = tf.square(self._input_gradient_norm(score_only, mixed, level) - 1.0)
      drift = tf.square(real_score)
      metrics.update({"D/gradient_penalty": penalty, "D/drift": drift})
      loss += self.gp_weight * penalty + self.drift * drift
    if self.r1_gamma > 0:
      r1 = tf.square(self._input_gradient_norm(score_only, real, level))
      metrics["D/r1"] = r1
      loss += 0.5 * self.r1_gamma * r1
    if self.conditioning == "acgan":
      ac_real, ac_fake = _cross_entropy(real_logits, labels), _cross_entropy(fake_logits, fake_labels)
      metrics.update({"D/ac_real": ac_real, "D/ac_fake": ac_fake})
      loss += self.acgan_weight * (ac_real + ac_fake)
    return loss, metrics

  @_plain_python
  def generator_loss(self, batch, rng, level, fading):
    """The generator's per-example loss at ``level`` (a fade when ``fading``)."""
    del batch
    alpha = self._alpha(level, fading)
    fake_labels = self._fake_labels(rng, "g/label")
    latent = self.generator.latent(rng.normal([self.latent_dim], "g/z"), fake_labels)
    fake = self.generator.image_at(latent, level, alpha)
    score, logits = self._critic_at(fake, fake_labels, level, alpha)
    loss = losses.generator_loss("wgan-gp" if self.loss_kind == "wgan-gp" else "nonsaturating", score)
    metrics = {}
    if self.conditioning == "acgan":
      ac = _cross_entropy(logits, fake_labels)
      metrics["G/ac_fake"] = ac
      loss += self.acgan_weight * ac
    return loss, metrics

  def phases(self, stage):
    """The stage's phases: each updates only the layers its level (and fade) uses."""
    level, fading = stage.key
    at_stage = dict(level=level, fading=fading)
    return [
        base.Phase("D", "d", self.discriminator.variables_at(level, fading),
                   functools.partial(self.discriminator_loss, **at_stage)),
        base.Phase("G", "g", self.generator.variables_at(level, fading),
                   functools.partial(self.generator_loss, **at_stage), interval=self.n_critic),
    ]

  # ---- sampling

  @_plain_python
  def generate(self, rng, labels=None, ema=True, **options):
    """Images at the current level of detail, upsampled to the target resolution and clipped to [-1, 1]."""
    if options:
      raise UserError(f"Progressive GAN sampling takes no options, got {', '.join(options)}")
    return self.from_latent(self.sample_latent(rng), labels=labels, ema=ema)

  @property
  def latent_shape(self):
    return (self.latent_dim,)

  @_plain_python
  def from_latent(self, z, rng=None, labels=None, ema=True, **inputs):
    del rng, inputs
    net = self.generator_ema if ema else self.generator
    images = net(z, labels if self.num_classes else None, tf.convert_to_tensor(self.lod))
    return tf.clip_by_value(images, -1.0, 1.0)
