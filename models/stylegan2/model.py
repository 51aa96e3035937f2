"""The StyleGAN2-ADA model family: training phases, global state and sampling.

One training step is four phases (Karras et al. 2020; lazy regularisation as in StyleGAN2 section 3.1):
  D       non-saturating logistic loss on augmented reals and augmented fakes (fakes with style mixing);
  D_reg   R1 = ||∇x D(augment(x))||² on reals, times γ/2, every ``r1_interval`` steps (loss x interval);
  G       non-saturating loss on D(augment(G(z))), with style mixing;
  G_reg   path-length penalty (||J_w^T y||₂ - a)², every ``pl_interval`` steps (loss x interval).
The Adam settings of the optimizer a lazy phase shares with its main phase are rescaled by c = k / (k + 1)
(lr x c, β x^c), as in the paper. A regulariser with interval 1 is folded into its main phase instead.

State that follows global statistics is updated by ``update_state`` between phases, from metrics already reduced
over all replicas, and is part of the checkpoint:
  augment_p  ADA's augmentation probability, moved towards r_t = E[sign(D(real))] = ada_target every
             ``ada_interval`` steps (or fixed);
  pl_mean    the running mean a of path lengths (decay ``pl_decay``);
  w_avg      the running mean of w (decay ``w_avg_beta``), the centre of the truncation trick; measured on fresh
             latents drawn from (seed, step), not on the training batch, because the loop's metrics are scalars.

Sampling (``generate``) takes ``truncation`` (ψ), ``mix_seed``/``mix_layer`` (style mixing) and ``interpolate``
(frames between consecutive seeds), which ``launch.sample`` passes from its flags.
"""

import keras
import ml_collections
import tensorflow as tf

from genscale import random as random_lib
from genscale.errors import UserError, require, require_choice
from genscale.shapes import parse_resolution
from models import base
from models import layers
from models import losses
from models.stylegan2 import augment as augment_lib
from models.stylegan2 import networks
from models.stylegan2 import ops
from models.stylegan2.draws import PhaseDraws, path_lengths, r1_penalty_and_logits

AUGMENT_MODES = ("ada", "fixed", "none")
SAMPLING_OPTIONS = ("truncation", "mix_seed", "mix_layer", "interpolate")


def resolve(config):
  """Checks the model section. Raises UserError with the setting to change."""
  m = config.model
  height, width = parse_resolution(config.resolution)
  require(height == width and height >= 8 and height & (height - 1) == 0,
          f"--config.resolution={config.resolution}: StyleGAN2 needs a square power of two of at least 8 "
          "(e.g. 32, 256 or 1024)")
  require_choice(m.style_block, tuple(networks.STYLE_BLOCKS), "--config.model.style_block")
  require_choice(m.modconv, ops.MODCONV_IMPLS, "--config.model.modconv")
  require(m.style_block == "modulated" or m.modconv == "scaled",
          f"--config.model.modconv={m.modconv} picks how modulated convolutions run, and "
          f"--config.model.style_block={m.style_block} has none: leave modconv at scaled")
  require_choice(m.filter_impl, ("auto",) + ops.FILTER_IMPLS, "--config.model.filter_impl")
  require_choice(m.synthesis_up, networks.SYNTHESIS_UP, "--config.model.synthesis_up")
  require_choice(m.output_activation, networks.OUTPUT_ACTIVATIONS, "--config.model.output_activation")
  for key in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "mbstd_group_size",
              "mbstd_channels", "r1_interval", "pl_interval", "ada_interval"):
    require(int(m[key]) >= 1, f"--config.model.{key}={m[key]} must be at least 1")
  require(int(m.reduced_precision_res) >= 0,
          f"--config.model.reduced_precision_res={m.reduced_precision_res} must be 0 or more")
  require(m.conv_clamp is None or float(m.conv_clamp) > 0,
          f"--config.model.conv_clamp={m.conv_clamp} must be positive (or None for no clamp)")
  require(0.0 <= float(m.style_mixing) <= 1.0, f"--config.model.style_mixing={m.style_mixing} must be in [0, 1]")
  require(float(m.r1_gamma) >= 0 and float(m.pl_weight) >= 0,
          "--config.model.r1_gamma and pl_weight must be non-negative")
  require(0.0 < float(m.pl_decay) <= 1.0, f"--config.model.pl_decay={m.pl_decay} must be in (0, 1]")
  require(0.0 <= float(m.w_avg_beta) < 1.0, f"--config.model.w_avg_beta={m.w_avg_beta} must be in [0, 1)")
  require_choice(m.augment, AUGMENT_MODES, "--config.model.augment")
  require(0.0 <= float(m.augment_p) <= 1.0, f"--config.model.augment_p={m.augment_p} must be in [0, 1]")
  require(0.0 <= float(m.ada_target) <= 1.0, f"--config.model.ada_target={m.ada_target} must be in [0, 1]")
  require(float(m.ada_kimg) > 0, f"--config.model.ada_kimg={m.ada_kimg} must be positive")
  augment_lib.parse_ops(m.augment_ops)
  return config


def _adam(m, interval, lazy):
  """Adam with the lazy-regularisation rescaling c = k / (k + 1) when a phase every k steps shares it."""
  c = interval / (interval + 1.0) if lazy else 1.0
  return keras.optimizers.Adam(learning_rate=float(m.lr) * c, beta_1=float(m.beta1)**c, beta_2=float(m.beta2)**c,
                               epsilon=float(m.epsilon))


def truncate(ws, w_avg, psi):
  """The truncation trick: w_avg + ψ (w - w_avg)."""
  return w_avg + psi * (ws - w_avg)


class StyleGAN2(base.GenerativeModel):
  """StyleGAN2 with ADA; ``config.model`` must have been through ``resolve``."""

  shape_keys = ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "conditional", "style_block")

  @classmethod
  def check_hardware(cls, config, hardware):
    m = config.model
    require(not (m.modconv == "grouped" and hardware.device == "cpu" and not hardware.xla),
            "--config.model.modconv=grouped trains on a CPU only with XLA on (runtime.xla=true: TensorFlow has no "
            "CPU gradient for grouped convolutions without it); or use --config.model.modconv=scaled")
    per_replica = int(config.batch_size) // hardware.replicas
    group = min(int(m.mbstd_group_size), max(per_replica, 1))
    require(per_replica % group == 0,
            f"--config.batch_size={config.batch_size} gives {per_replica} examples per replica on "
            f"{hardware.replicas} replicas, not a multiple of --config.model.mbstd_group_size={m.mbstd_group_size}")

  def __init__(self, config, info, hardware):
    super().__init__(name="stylegan2")
    m = ml_collections.ConfigDict(config.model.to_dict())  # a private copy: "auto" settings resolved below
    if "style_block" not in m:  # a run written before the setting existed
      m.style_block = "modulated"
    if m.filter_impl == "auto":
      m.filter_impl = ops.filter_impl_for(hardware.xla or hardware.device == "tpu")
    compute_dtype = hardware.compute_dtype
    self.config = m
    self.seed = int(config.seed)
    self.global_batch = int(config.batch_size)
    self.resolution = parse_resolution(config.resolution)[0]
    self.channels = int(config.channels)
    self.num_classes = base.conditional_classes(m, info)
    self.z_dim, self.w_dim = int(m.z_dim), int(m.w_dim)
    self.style_mixing = float(m.style_mixing)
    self.r1_gamma, self.r1_interval = float(m.r1_gamma), int(m.r1_interval)
    self.pl_weight, self.pl_interval, self.pl_decay = float(m.pl_weight), int(m.pl_interval), float(m.pl_decay)
    self.augment_mode = m.augment
    self.augment_ops = augment_lib.parse_ops(m.augment_ops)
    self.ada_target, self.ada_interval, self.ada_kimg = float(m.ada_target), int(m.ada_interval), float(m.ada_kimg)
    self.w_avg_beta, self.w_avg_samples = float(m.w_avg_beta), int(m.w_avg_samples)
    self.mbstd_group_size = int(m.mbstd_group_size)
    self.xla = bool(hardware.xla)

    args = (m, self.resolution, self.channels, self.num_classes)
    keys = layers.Keys(self.seed)
    self.generator = networks.Generator(*args, keys, compute_dtype)
    self.discriminator = networks.Discriminator(*args, keys, compute_dtype)
    self.generator_ema, self.ema_pairs = base.ema_copy(lambda k: networks.Generator(*args, k, compute_dtype),
                                                       self.generator, self.seed)
    self.num_ws = self.generator.num_ws
    self.lazy_r1 = self.r1_gamma > 0 and self.r1_interval > 1
    self.lazy_pl = self.pl_weight > 0 and self.pl_interval > 1
    self.optimizers = {"g": _adam(m, self.pl_interval, self.lazy_pl), "d": _adam(m, self.r1_interval, self.lazy_r1)}

    # State set by update_state (cross-replica context) and read by the phases: checkpointed with the model.
    self.augment_p = base.state_variable(float(m.augment_p), "augment_p")
    self.ada_sign_sum = base.state_variable(0.0, "ada_sign_sum")
    self.ada_steps = base.state_variable(0, "ada_steps", tf.int64)
    self.ada_r_t = base.state_variable(0.0, "ada_r_t")
    self.pl_mean = base.state_variable(0.0, "pl_mean")
    self.w_avg = base.state_variable(tf.zeros([self.w_dim]), "w_avg")

  # ---- pieces shared by the phases (run per replica)

  def _draws(self, rng, stream, fakes=True, augment_copies=0, projection=False):
    """The phase's random values from one draw: fake labels, latents (pairs with style mixing), noise images, the
    augmentation's values (per batch D sees) and the path-length projection."""
    uniform, normal = {}, {}
    if fakes:
      if self.num_classes:
        uniform["label"] = []
      normal["z"] = [2, self.z_dim] if self.style_mixing > 0 else [1, self.z_dim]
      if self.style_mixing > 0:
        uniform["mix"] = [2]
      normal["noise"] = [sum(h * w for h, w, _ in self.generator.synthesis.noise_shapes())]
    if augment_copies and self.augment_mode != "none":
      uniform["augment"] = [augment_copies, augment_lib.WIDTH]
    if projection:
      normal["projection"] = [self.resolution, self.resolution, self.channels]
    return PhaseDraws(rng, stream, uniform, normal)

  def _broadcast(self, w):
    return tf.tile(w[:, None, :], [1, self.num_ws, 1])

  def _labels(self, draws):
    if not self.num_classes:
      return None
    return tf.minimum(tf.cast(draws["label"] * self.num_classes, tf.int32), self.num_classes - 1)

  def mapped_ws(self, net, draws, labels):
    """ws [b, num_ws, w_dim] from the phase's latents; with style mixing, an example switches (with probability
    ``style_mixing``) to the w of its second latent from a random layer on."""
    z = draws["z"]
    if self.style_mixing <= 0:
      return self._broadcast(net.mapping(z[:, 0], labels))
    both = net.mapping(tf.concat([z[:, 0], z[:, 1]], 0), None if labels is None else tf.concat([labels, labels], 0))
    w, w_other = tf.split(both, 2)
    u = draws["mix"]
    cutoff = 1 + tf.minimum(tf.cast(u[:, 1] * (self.num_ws - 1), tf.int32), self.num_ws - 2)  # in [1, num_ws)
    cutoff = tf.where(u[:, 0] < self.style_mixing, cutoff, self.num_ws)
    first = tf.range(self.num_ws)[None, :] < cutoff[:, None]
    return tf.where(first[:, :, None], w[:, None], w_other[:, None])

  def split_noise(self, net, flat):
    """Per-pixel noise images [b, H, W, 1] for every synthesis convolution, from one [b, total] block."""
    shapes = net.synthesis.noise_shapes()
    sizes = [h * w for h, w, _ in shapes]
    return [tf.reshape(part, [-1, *shape]) for part, shape in zip(tf.split(flat, sizes, axis=1), shapes)]

  def discriminate(self, images, labels, draws, copies=1):
    """D(augment(images)): every image D sees goes through the augmentation pipeline (runs per replica).

    ``copies`` = k: ``images`` are k batches of this replica's examples one after the other (reals and fakes in
    one call); minibatch-stddev groups stay within each batch.
    """
    if self.augment_mode != "none":
      images = augment_lib.augment(images, self.augment_p, draws["augment"], self.augment_ops,
                                   branch_free=self.xla)
    batch = draws.batch
    group = min(self.mbstd_group_size, batch)
    if batch % group:
      raise UserError(f"the per-replica batch {batch} is not a multiple of --config.model.mbstd_group_size="
                      f"{self.mbstd_group_size}; change the batch size or the group size")
    return self.discriminator(images, labels, mbstd_group=group)

  def _fake(self, draws, labels):
    g = self.generator
    return g.synthesis(self.mapped_ws(g, draws, labels), self.split_noise(g, draws["noise"]))

  def _r1(self, real, labels, draws):
    return r1_penalty_and_logits(lambda x: self.discriminate(x, labels, draws), tf.cast(real, tf.float32))

  # ---- phases (per replica; per-example losses)

  def discriminator_loss(self, batch, rng):
    labels = batch.get("label") if self.num_classes else None
    draws = self._draws(rng, "d", augment_copies=2)
    fake_labels = self._labels(draws)
    fake = self._fake(draws, fake_labels)
    metrics = {}
    if self.r1_gamma > 0 and not self.lazy_r1:
      r1, real_logits = self._r1(batch["image"], labels, draws.first_copy("augment"))
      fake_logits = self.discriminate(fake, fake_labels, draws.second_copy("augment"))
      metrics["D/r1"] = r1
    else:
      # Reals and fakes through D in one call: one graph to trace and larger batches per op.
      real = tf.cast(batch["image"], tf.float32)
      both_labels = tf.concat([labels, fake_labels], 0) if self.num_classes else None
      logits = self.discriminate(tf.concat([real, fake], 0), both_labels, draws, copies=2)
      real_logits, fake_logits = tf.split(logits, 2)
    loss = losses.discriminator_loss("nonsaturating", real_logits, fake_logits)
    if "D/r1" in metrics:
      loss += 0.5 * self.r1_gamma * metrics["D/r1"]
    metrics.update({"D/real": real_logits, "D/fake": fake_logits, "D/real_sign": tf.sign(real_logits)})
    return loss, metrics

  def discriminator_regularizer(self, batch, rng):
    labels = batch.get("label") if self.num_classes else None
    r1, logits = self._r1(batch["image"], labels, self._draws(rng, "d_reg", fakes=False, augment_copies=1))
    # 0 * logits: every D variable gets a (zero) gradient, also those R1 doesn't depend on (the output bias).
    loss = 0.5 * self.r1_gamma * self.r1_interval * r1 + 0.0 * logits
    return loss, {"D_reg/r1": r1}

  def generator_loss(self, batch, rng):
    del batch
    draws = self._draws(rng, "g", augment_copies=1)
    fake_labels = self._labels(draws)
    logits = self.discriminate(self._fake(draws, fake_labels), fake_labels, draws)
    return losses.generator_loss("nonsaturating", logits), {}

  def generator_regularizer(self, batch, rng):
    del batch
    g = self.generator
    draws = self._draws(rng, "g_reg", projection=True)
    ws = self.mapped_ws(g, draws, self._labels(draws))
    noises = self.split_noise(g, draws["noise"])
    projection = draws["projection"] / float(self.resolution)  # N(0, 1) / sqrt(H W)
    lengths, images = path_lengths(lambda w: g.synthesis(w, noises), ws, projection)
    penalty = tf.square(lengths - self.pl_mean)
    interval = self.pl_interval if self.lazy_pl else 1
    # 0 * pixel: every G variable gets a (zero) gradient, also those the Jacobian doesn't depend on.
    loss = penalty * (self.pl_weight * interval) + 0.0 * images[:, 0, 0, 0]
    return loss, {"G_reg/path_length": lengths, "G_reg/penalty": penalty}

  def phases(self, stage):
    del stage  # one stage
    d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
    phases = [base.Phase("D", "d", d_vars, self.discriminator_loss)]
    if self.lazy_r1:
      phases.append(base.Phase("D_reg", "d", d_vars, self.discriminator_regularizer, interval=self.r1_interval))
    phases.append(base.Phase("G", "g", g_vars, self.generator_loss))
    if self.pl_weight > 0:
      phases.append(base.Phase("G_reg", "g", g_vars, self.generator_regularizer,
                               interval=self.pl_interval if self.lazy_pl else 1))
    return phases

  # ---- global state (cross-replica context, between phases)

  def update_state(self, stage, step, nimg, metrics):
    del stage, nimg
    if "D/real_sign" in metrics and self.augment_mode == "ada":
      total = self.ada_sign_sum + metrics["D/real_sign"]
      count = self.ada_steps + 1
      due = count >= self.ada_interval
      r_t = total / tf.cast(count, tf.float32)
      moved = augment_lib.adjust_p(self.augment_p, r_t, self.ada_target, self.global_batch * self.ada_interval,
                                   self.ada_kimg)
      self.augment_p.assign(tf.where(due, moved, self.augment_p))
      self.ada_r_t.assign(tf.where(due, r_t, self.ada_r_t))
      self.ada_sign_sum.assign(tf.where(due, 0.0, total))
      self.ada_steps.assign(tf.where(due, tf.constant(0, tf.int64), count))
    if "G_reg/path_length" in metrics:
      self.pl_mean.assign(self.pl_mean + self.pl_decay * (metrics["G_reg/path_length"] - self.pl_mean))
    if "G/loss" in metrics and self.w_avg_samples > 0:
      key = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
      counters = tf.reshape(tf.range(self.w_avg_samples * self.z_dim, dtype=tf.int64),
                            [self.w_avg_samples, self.z_dim])
      labels = None
      if self.num_classes:
        u = random_lib.uniform_values(key, "w_avg/label", tf.range(self.w_avg_samples, dtype=tf.int64))
        labels = tf.minimum(tf.cast(u * self.num_classes, tf.int32), self.num_classes - 1)
      w = self.generator.mapping(random_lib.normal_values(key, "w_avg/z", counters), labels)
      mean = tf.reduce_mean(w, axis=0)
      self.w_avg.assign(mean + (self.w_avg - mean) * self.w_avg_beta)

  def scalars(self):
    return {"augment_p": tf.convert_to_tensor(self.augment_p), "ada_r_t": tf.convert_to_tensor(self.ada_r_t),
            "pl_mean": tf.convert_to_tensor(self.pl_mean)}

  # ---- sampling (per replica)

  def check_sampling_options(self, **options):
    self.sampling_options(**options)

  def sampling_options(self, **options):
    """Checked sampling options with defaults. Raises UserError."""
    unknown = sorted(set(options) - set(SAMPLING_OPTIONS))
    if unknown:
      raise UserError(f"StyleGAN2 sampling takes {', '.join('--' + o for o in SAMPLING_OPTIONS)}; "
                      f"got --{', --'.join(unknown)}")
    out = dict(truncation=1.0, mix_seed=None, mix_layer=None, interpolate=None)
    out.update({k: v for k, v in options.items() if v is not None})
    out["truncation"] = float(out["truncation"])
    if out["mix_layer"] is not None:
      require(out["mix_seed"] is not None, "--mix_layer needs --mix_seed (the seed whose styles are mixed in)")
    if out["mix_seed"] is not None:
      if out["mix_layer"] is None:
        out["mix_layer"] = self.num_ws // 2
      require(0 <= int(out["mix_layer"]) < self.num_ws,
              f"--mix_layer={out['mix_layer']} is out of range: this generator has layers 0..{self.num_ws - 1}")
      require(out["interpolate"] is None, "choose either --interpolate or --mix_seed, not both")
    if out["interpolate"] is not None:
      require(int(out["interpolate"]) >= 1, f"--interpolate={out['interpolate']} must be at least 1")
    return out

  def interpolation_ws(self, net, rng, labels, frames):
    """ws for latent interpolation: image g of the output (over all calls and replicas) is frame g % F of segment
    g // F, at w = lerp(w_k, w_k+1, (g % F) / F) with k = g // F; w_k is the w of the first image of seed + k
    (a key of (seed + k, 0), as ``launch.sample --seed`` would draw it)."""
    b = rng.per_replica_batch
    start = tf.cast(rng.key[1], tf.int64) * rng.global_batch + tf.cast(rng.replica_id, tf.int64) * b
    index = start + tf.range(b, dtype=tf.int64)
    segment, frame = index // frames, index % frames
    first = start // frames
    count = (b - 1) // frames + 2  # anchors this replica's images can touch
    counters = tf.range(self.z_dim, dtype=tf.int64)
    anchors = tf.stack([
        random_lib.normal_values(tf.stack([rng.key[0] + first + j, tf.constant(0, tf.int64)]), "sample/z", counters)
        for j in range(count)])
    local = segment - first
    w0 = net.mapping(tf.gather(anchors, local), labels)
    w1 = net.mapping(tf.gather(anchors, local + 1), labels)
    t = tf.cast(frame, tf.float32)[:, None] / float(frames)
    return self._broadcast(w0 + (w1 - w0) * t)

  def sample_noises(self, net, rng):
    """Noise images for sampling, from the sampler's randomness (stream "sample/noise")."""
    return self.split_noise(net, rng.normal([sum(h * w for h, w, _ in net.synthesis.noise_shapes())],
                                             "sample/noise"))

  def generate(self, rng, labels=None, ema=True, **options):
    """Images in [-1, 1], float32 [b, R, R, C]. Runs per replica.

    Options: truncation ψ (1: none); mix_seed and mix_layer (layers from mix_layer on take the styles of the
    same image drawn with seed mix_seed); interpolate F (frames per pair of consecutive seeds, with one noise
    image shared by all frames so that only the latent moves).
    """
    settings = self.sampling_options(**options)
    net = self.generator_ema if ema else self.generator
    labels = labels if self.num_classes else None
    if settings["interpolate"] is not None:
      ws = self.interpolation_ws(net, rng, labels, int(settings["interpolate"]))
      fixed = base.BatchRng(tf.stack([rng.key[0], tf.constant(0, tf.int64)]), rng.replica_id, rng.per_replica_batch,
                            rng.num_replicas)
      noises = [tf.broadcast_to(fixed.shared_normal(shape, f"sample/noise{i}")[None], [rng.per_replica_batch, *shape])
                for i, shape in enumerate(net.synthesis.noise_shapes())]  # the same for every frame
    else:
      ws = self._broadcast(net.mapping(self.sample_latent(rng), labels))
      if settings["mix_seed"] is not None:
        other = base.BatchRng(tf.stack([tf.constant(int(settings["mix_seed"]), tf.int64), rng.key[1]]),
                              rng.replica_id, rng.per_replica_batch, rng.num_replicas)
        ws_other = self._broadcast(net.mapping(self.sample_latent(other), labels))
        layer = int(settings["mix_layer"])
        ws = tf.concat([ws[:, :layer], ws_other[:, layer:]], axis=1)
      noises = self.sample_noises(net, rng)
    if settings["truncation"] != 1.0:
      ws = truncate(ws, self.w_avg, settings["truncation"])
    return tf.clip_by_value(net.synthesis(ws, noises), -1.0, 1.0)

  # ---- serving: z in (drawn from the seed, or given), the noise images from the seed, ψ a graph value

  @property
  def latent_shape(self):
    return (self.z_dim,)

  latent_needs_seed = True

  def serving_inputs(self):
    return {"truncation": (tf.float32, 1.0)}

  def serving_range(self, name):
    return {"min": 0.0, "max": 2.0} if name == "truncation" else {}

  def serve(self, rng, labels=None, ema=True, truncation=1.0):
    return self.from_latent(self.sample_latent(rng), rng, labels, ema=ema, truncation=truncation)

  def from_latent(self, z, rng=None, labels=None, ema=True, truncation=1.0):
    net = self.generator_ema if ema else self.generator
    ws = self._broadcast(net.mapping(z, labels if self.num_classes else None))
    ws = tf.where(tf.equal(truncation, 1.0), ws, truncate(ws, self.w_avg, truncation))  # ψ = 1 untouched, as above
    return tf.clip_by_value(net.synthesis(ws, self.sample_noises(net, rng)), -1.0, 1.0)

