"""Generative transformers over image tokens: the autoregressive ImageGPT (Chen et al. 2020) and MaskGIT (Chang et
al. 2022). Tokens come from ``models/transformer/tokens.py`` (pixel blocks or a VQ-VAE's codes); the network is
``models/transformer/network.py``.

ImageGPT: slot 0 holds a start token (the class, when conditional), slot i > 0 token i - 1, and slot i predicts
token i, at the grid position of token i (its row and column embeddings). The loss of one example is its exact
negative log-likelihood, the sum of the N cross-entropies, in nats per image:

  -log p(x | y) = -sum_i log p(t_i | t_<i, y).

With a class-conditional model the likelihood scored by ``launch.evaluate --metrics=nll`` is of the image alone,
log p(x) = logsumexp_y [log p(x | y) + log p(y)] with p(y) uniform over the classes: exact too (one pass per
class), and comparable with the unconditional models of the likelihood table. Sampling draws token after token from
a key/value cache (``sample_tokens``): the whole generation is one ``tf.while_loop`` of N steps, with temperature,
top-k and top-p (nucleus) filtering; ``cache=False`` recomputes every slot at every step instead (the reference
the cache is tested against; N times the work).

MaskGIT: slot 0 holds the class token (or the unconditional one), slots 1..N the tokens, some replaced by a [MASK]
id; a bidirectional transformer predicts the masked ones. Training masks ceil(cos(π/2 · r) · N) tokens, r ~ U(0, 1)
per example, at positions chosen uniformly; the loss of one example is its mean cross-entropy over the masked
tokens. Decoding starts from all-[MASK] and runs T steps: each samples every masked token, keeps the most confident
ones and masks again the floor(cos(π/2 · (t+1)/T) · N) least confident (at least one, and never a token kept
before), where confidence is the sampled token's log-probability plus Gumbel noise scaled by
``choice_temperature`` · (1 - (t+1)/T) (annealed to 0). The last step keeps everything.

Randomness (dropout, binarisation, mask positions, sampling) comes from the step's ``BatchRng``, so replicas,
resumed runs and XLA draw the same numbers.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from genscale.errors import UserError, require
from genscale.shapes import parse_resolution
from models import base
from models import layers
from models.classic.common import categorical
from models.transformer import network
from models.transformer import tokens as tokens_lib


def optimizer(config):
  """AdamW (β2 0.95, decoupled weight decay) with linear warm-up to ``model.lr`` over ``model.warmup_steps`` and a
  cosine decay to 2% of it at the run's last step; or plain SGD at a constant rate (tests compare steps with it)."""
  m = config.model
  rate = float(m.lr)
  if m.optimizer == "sgd":
    return keras.optimizers.SGD(learning_rate=rate)
  warmup = int(m.warmup_steps)
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0 if warmup else rate, decay_steps=max(1, int(config.steps) - warmup), alpha=0.02,
      warmup_target=rate if warmup else None, warmup_steps=warmup)
  return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=float(m.weight_decay), beta_1=0.9,
                                beta_2=0.95)


def build_tokens(config, hardware):
  """The tokeniser of ``config.model.tokens``: pixel blocks, or the codes of the VQ-VAE whose config
  ``config.model.vq`` holds (copied from its run when the run was prepared)."""
  m = config.model
  if m.tokens == "pixels":
    return tokens_lib.PixelTokens(config.resolution, config.channels, m.levels, m.patch, m.get("binarize", "dynamic"))
  from models.autoencoder import VQVAE  # pylint: disable=g-import-not-at-top
  return tokens_lib.VQTokens(VQVAE(m.vq, None, hardware))


def filter_logits(logits, temperature, top_k, top_p):
  """Logits float32 [b, V] scaled by 1/temperature, with the tokens outside the top ``top_k`` (0: all) and outside
  the smallest set whose probability reaches ``top_p`` (1: all) set to -inf. The settings may be tensors."""
  logits = logits / tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
  vocab = int(logits.shape[-1])
  ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
  k = tf.cast(top_k, tf.int32)
  kth = tf.gather(ranked, tf.clip_by_value(k - 1, 0, vocab - 1), axis=-1)[..., None]
  logits = tf.where((k > 0) & (logits < kth), -np.inf, logits)
  probs = tf.nn.softmax(logits, axis=-1)
  ranked_probs = tf.sort(probs, axis=-1, direction="DESCENDING")
  before = tf.cumsum(ranked_probs, axis=-1, exclusive=True)  # probability of the better tokens
  kept = tf.reduce_sum(tf.cast(before < tf.cast(top_p, tf.float32), tf.int32), axis=-1)  # at least 1
  threshold = tf.gather(ranked_probs, tf.maximum(kept, 1) - 1, axis=-1, batch_dims=1)[:, None]
  return tf.where(probs < threshold, -np.inf, logits)


def pick(logits, uniforms, temperature=1.0, top_k=0, top_p=1.0):
  """int32 [b] tokens drawn from ``logits`` [b, V] by inverse CDF of ``uniforms`` [b] after ``filter_logits``;
  temperature 0 picks the most likely token (greedy)."""
  probs = tf.nn.softmax(filter_logits(logits, temperature, top_k, top_p), axis=-1)
  drawn = categorical(probs, uniforms)
  return tf.where(tf.cast(temperature, tf.float32) > 0, drawn, tf.argmax(logits, axis=-1, output_type=tf.int32))


class TokenModel(base.GenerativeModel):
  """What ImageGPT and MaskGIT share: the tokeniser, the conditioning ids, the optimizer, sampling options."""

  shape_keys = ("tokens", "levels", "patch", "width", "depth", "heads", "mlp_ratio", "conditional")
  causal = None  # set by the subclasses
  extra_ids = 0  # special input ids after the tokens (MaskGIT's [MASK])

  def __init__(self, config, info, hardware, name):
    super().__init__(name=name)
    m = config.model
    self.num_classes = base.conditional_classes(m, info) if info is not None else 0
    self.tokens = build_tokens(config, hardware)
    self.length = self.tokens.grid[0] * self.tokens.grid[1]
    self.vocab = self.tokens.vocab_size
    # Input ids: tokens [0, V), special ids, then one per class and one unconditional start.
    self.class_base = self.vocab + self.extra_ids
    self.optimizers = {"transformer": optimizer(config)}
    self.ema_pairs = []
    self.image_shape = (*parse_resolution(config.resolution), int(config.channels))
    self.vq_workdir = m.get("vq_workdir")
    self._defaults = {"temperature": float(m.temperature)}  # sampling options and their config defaults

  def _network(self, config, hardware, rows, cols):
    m = config.model
    return network.Transformer(
        self.class_base + self.num_classes + 1, self.vocab, rows, cols, self.tokens.grid, int(m.width),
        int(m.depth), int(m.heads), int(m.mlp_ratio), float(m.dropout), self.causal, layers.Keys(config.seed),
        hardware.compute_dtype)

  def start_ids(self, labels, batch):
    """int32 [b]: the class token of each label, or the unconditional token."""
    if self.num_classes and labels is not None:
      return self.class_base + tf.cast(labels, tf.int32)
    return tf.fill([batch], self.class_base + self.num_classes)

  def phases(self, stage):
    del stage
    return [base.Phase(self.phase_name, "transformer", list(self.net.trainable_variables), self.loss)]

  def pretrained(self):
    """The VQ-VAE of VQ tokens, from its run."""
    if isinstance(self.tokens, tokens_lib.VQTokens):
      return {self.tokens.codec: self.vq_workdir}
    return {}

  def _options(self, options, names):
    unknown = sorted(set(options) - set(names))
    if unknown:
      raise UserError(f"{type(self).__name__} sampling takes --{', --'.join(names)}; got --{', --'.join(unknown)}")
    return {**{k: self._defaults[k] for k in names}, **{k: v for k, v in options.items() if v is not None}}

  def serving_inputs(self):
    return {name: (tf.int32 if isinstance(value, int) and not isinstance(value, bool) else tf.float32, value)
            for name, value in self._defaults.items() if name != "steps"}

  def serving_range(self, name):
    return {"temperature": {"min": 0.0}, "top_k": {"min": 0, "max": self.vocab},
            "top_p": {"min": 0.0, "max": 1.0}}.get(name, {})

  def generate(self, rng, labels=None, ema=True, **options):
    del ema  # no EMA copy: the trained weights are the model
    self.check_sampling_options(**options)
    return self.draw(rng, labels, **self._options(options, self.option_names))

  def serve(self, rng, labels=None, ema=True, **inputs):
    """``draw`` with the sampling defaults changed by ``inputs``: tensors when serving (checked by the server
    against ``serving_range``), or Python values."""
    del ema
    return self.draw(rng, labels, **{**self._defaults, **inputs})

  def preview(self, images, labels, rng):
    """Each image beside the attention of the slot at the grid's centre in the first and the last layer (heads
    averaged; brighter: more attention), drawn on the token grid at the image's size."""
    del rng
    tokens = self.tokens.encode(images)
    _, maps = self.net(self.inputs(tokens, labels), with_attention=True)
    h, w = self.tokens.grid
    query = self.query_slot(h // 2 * w + w // 2)
    panels = [tf.cast(images, tf.float32)]
    for probs in (maps[0], maps[-1]):
      row = tf.reduce_mean(probs[:, :, query, :], axis=1)  # [b, slots]
      grid = tf.reshape(self.token_attention(row), [-1, h, w, 1])
      grid = grid / (tf.reduce_max(grid, axis=[1, 2, 3], keepdims=True) + 1e-12)
      grid = tf.image.resize(grid, self.image_shape[:2], method="nearest") * 2.0 - 1.0
      panels.append(tf.tile(grid, [1, 1, 1, self.image_shape[2]]))
    return {"attention_first_last_layer": tf.concat(panels, axis=2)}


class ImageGPT(TokenModel):
  """The autoregressive transformer (see module docstring)."""

  causal = True
  phase_name = "GPT"
  likelihood_method = "exact"

  def __init__(self, config, info, hardware):
    super().__init__(config, info, hardware, name="imagegpt")
    m = config.model
    if not isinstance(self.tokens, tokens_lib.PixelTokens):
      self.likelihood_method = None  # a likelihood of codes, not of images
    self.context = int(m.context) or self.length
    require(self.length <= self.context, f"an image is {self.length} tokens, longer than the {self.context} slots "
            f"of --config.model.context (the position table and the sampling cache); set it to 0 or "
            f"{self.length} or more")
    rows = np.arange(self.context) // self.tokens.grid[1]
    cols = np.arange(self.context) % self.tokens.grid[1]
    self.net = self._network(config, hardware, np.minimum(rows, self.tokens.grid[0]), cols)
    self._defaults.update(top_k=int(m.top_k), top_p=float(m.top_p))
    self.dims = int(np.prod(self.image_shape))

  def inputs(self, tokens, labels):
    """Input ids [b, N]: the start token, then every token but the last."""
    return self._shifted(self.start_ids(labels, tf.shape(tokens)[0]), tokens)

  @staticmethod
  def _shifted(start, tokens):
    return tf.concat([start[:, None], tokens[:, :-1]], axis=1)

  def query_slot(self, token):
    return token

  def token_attention(self, row):
    """Attention on each token's grid place: slot j + 1 holds token j (the start token's share is left out)."""
    return tf.concat([row[:, 1:self.length], tf.zeros_like(row[:, :1])], axis=1)

  def token_log_probs(self, tokens, labels, rng=None):
    """log p(t_i | t_<i, y) float32 [b, N] of tokens int32 [b, N]."""
    logits = self.net(self.inputs(tokens, labels), rng=rng, stream="gpt")
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=logits)

  def loss(self, batch, rng):
    tokens = self.tokens.encode_batch(batch["image"], rng, "gpt/binarize")
    nll = -tf.reduce_sum(self.token_log_probs(tokens, batch.get("label"), rng), axis=1)
    return nll, {"GPT/nll_nats": nll, "GPT/bits_per_dim": nll / (self.dims * math.log(2.0))}

  # ---- likelihood (launch.evaluate --metrics=nll)

  def likelihood_data(self):
    return "binary" if self.tokens.binary else "8bit"

  def log_likelihood(self, x, labels=None):
    """Exact log p(x) in nats [b] of images x (in {-1, 1} for binary pixels, else quantised to the levels); a
    class-conditional model's is summed over the classes with a uniform prior (module docstring)."""
    del labels
    tokens = self.tokens.encode(x)
    if not self.num_classes:
      return tf.reduce_sum(self.token_log_probs(tokens, None), axis=1)
    b = tf.shape(tokens)[0]
    classes = tf.repeat(tf.range(self.num_classes), b)  # class-major: row c*b + i
    conditional = tf.reduce_sum(self.token_log_probs(tf.tile(tokens, [self.num_classes, 1]), classes), axis=1)
    conditional = tf.reshape(conditional, [self.num_classes, b])
    return tf.reduce_logsumexp(conditional, axis=0) - math.log(self.num_classes)

  # ---- sampling

  option_names = ("temperature", "top_k", "top_p")

  def check_sampling_options(self, **options):
    values = self._options(options, self.option_names)
    require(values["temperature"] >= 0, f"--temperature={values['temperature']} must be at least 0 (0: greedy)")
    require(0 <= values["top_k"] <= self.vocab, f"--top_k={values['top_k']} must be in [0, {self.vocab}] (0: off)")
    require(0 < values["top_p"] <= 1, f"--top_p={values['top_p']} must be in (0, 1] (1: off)")

  def sample_tokens(self, start, uniforms, temperature=1.0, top_k=0, top_p=1.0, cache=True):
    """Tokens int32 [b, N] drawn one at a time after the start ids [b]; ``uniforms(t)`` gives step t's [b] values.

    One ``tf.while_loop`` over the N slots. With ``cache`` each step runs one slot through the network, reading
    the keys and values of the earlier slots from the cache; without it each step runs the whole sequence drawn so
    far (the later slots hold zeros, which the causal mask hides) and reads the logits at slot t."""
    batch, length = tf.shape(start)[0], self.length
    drawn = tf.zeros([batch, length], tf.int32)

    def write(drawn, t, token):
      return drawn + token[:, None] * tf.one_hot(t, length, dtype=tf.int32)[None]

    if cache:
      def body(t, ids, drawn, state):
        logits, state = self.net.step(ids, t, state)
        token = pick(logits, uniforms(t), temperature, top_k, top_p)
        return t + 1, token, write(drawn, t, token), state

      state = self.net.init_cache(batch)
      loop_vars = (tf.constant(0), start, drawn, state)
    else:
      def body(t, ids, drawn, state):
        logits = tf.gather(self.net(ids), t, axis=1)
        token = pick(logits, uniforms(t), temperature, top_k, top_p)
        drawn = write(drawn, t, token)
        return t + 1, self._shifted(start, drawn), drawn, state

      loop_vars = (tf.constant(0), self._shifted(start, drawn), drawn, tf.constant(0))
    _, _, drawn, _ = tf.while_loop(lambda t, *_: t < length, body, loop_vars, maximum_iterations=length)
    return drawn

  def draw(self, rng, labels, temperature, top_k, top_p, cache=True):
    start = self.start_ids(labels, rng.per_replica_batch)
    uniforms = rng.per_step([], "gpt/sample", kind="uniform")
    return self.tokens.decode(self.sample_tokens(start, uniforms, temperature, top_k, top_p, cache=cache))


def mask_counts(length, steps):
  """Tokens left masked after each of ``steps`` decoding steps from all ``length`` masked: floor(cos(π/2 · (t+1)/T)
  · N), at least one fewer than before and at least 1, and 0 after the last step (Chang et al. 2022)."""
  counts, masked = [], length
  for t in range(steps):
    if t == steps - 1:
      masked = 0
    else:
      masked = max(1, min(masked - 1, math.floor(length * math.cos(math.pi / 2 * (t + 1) / steps))))
    counts.append(masked)
  return counts


class MaskGIT(TokenModel):
  """Masked-token modelling and parallel decoding (see module docstring)."""

  causal = False
  phase_name = "MaskGIT"
  extra_ids = 1  # [MASK]

  def __init__(self, config, info, hardware):
    super().__init__(config, info, hardware, name="maskgit")
    m = config.model
    self.mask_id = self.vocab
    h, w = self.tokens.grid
    rows = np.concatenate([[h], np.arange(self.length) // w])  # slot 0: the class token, no position
    cols = np.concatenate([[w], np.arange(self.length) % w])
    self.net = self._network(config, hardware, rows, cols)
    self._defaults.update(steps=int(m.decode_steps), choice_temperature=float(m.choice_temperature))

  def inputs(self, tokens, labels):
    """Input ids [b, 1 + N]: the class token, then the tokens (some of them [MASK])."""
    return self._with_start(self.start_ids(labels, tf.shape(tokens)[0]), tokens)

  @staticmethod
  def _with_start(start, tokens):
    return tf.concat([start[:, None], tokens], axis=1)

  def query_slot(self, token):
    return token + 1

  def token_attention(self, row):
    return row[:, 1:]

  def loss(self, batch, rng):
    tokens = self.tokens.encode_batch(batch["image"], rng, "maskgit/binarize")
    n = self.length
    ratio = rng.uniform([], "maskgit/ratio")
    count = tf.clip_by_value(tf.math.ceil(tf.cos(math.pi / 2 * ratio) * n), 1.0, float(n))  # [b]
    scores = rng.uniform([n], "maskgit/positions")
    kth = tf.gather(tf.sort(scores, axis=-1), tf.cast(count, tf.int32) - 1, axis=-1, batch_dims=1)
    masked = scores <= kth[:, None]  # the `count` lowest scores
    ids = tf.where(masked, self.mask_id, tokens)
    logits = self.net(self.inputs(ids, batch.get("label")), rng=rng, stream="maskgit")[:, 1:]
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=logits)
    weight = tf.cast(masked, tf.float32)
    loss = tf.reduce_sum(ce * weight, axis=1) / tf.reduce_sum(weight, axis=1)
    return loss, {"MaskGIT/masked_ce_nats": loss, "MaskGIT/masked_fraction": count / n}

  option_names = ("steps", "temperature", "choice_temperature")

  def check_sampling_options(self, **options):
    values = self._options(options, self.option_names)
    require(int(values["steps"]) >= 1, f"--steps={values['steps']} must be at least 1")
    require(values["temperature"] > 0, f"--temperature={values['temperature']} must be positive")
    require(values["choice_temperature"] >= 0, f"--choice_temperature={values['choice_temperature']} must be at "
            "least 0")

  def decode(self, start, rng, steps, temperature=1.0, choice_temperature=4.5, trace=False):
    """Tokens int32 [b, N] by ``steps`` parallel decoding steps after the start ids [b] (module docstring); with
    ``trace``, also the number of masked tokens per example after each step (a list of int32 [b])."""
    n = self.length
    ids = tf.fill([tf.shape(start)[0], n], self.mask_id)
    uniforms = rng.per_step([n], "maskgit/sample", kind="uniform")
    noise = rng.per_step([n], "maskgit/choice", kind="uniform")
    history = []
    for t, count in enumerate(mask_counts(n, steps)):
      unknown = tf.equal(ids, self.mask_id)
      logits = self.net(self._with_start(start, ids))[:, 1:]
      logits = logits / tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
      log_probs = tf.nn.log_softmax(logits, axis=-1)
      sampled = categorical(tf.exp(log_probs), uniforms(t))
      sampled = tf.where(unknown, sampled, ids)
      if count == 0:
        ids = sampled
      else:
        chosen = tf.gather(log_probs, sampled, axis=-1, batch_dims=2)
        gumbel = -tf.math.log(-tf.math.log(tf.clip_by_value(noise(t), 1e-20, 1.0 - 1e-7)))
        anneal = tf.cast(choice_temperature, tf.float32) * (1.0 - (t + 1) / steps)
        confidence = tf.where(unknown, chosen + anneal * gumbel, np.inf)
        cutoff = tf.sort(confidence, axis=-1)[:, count - 1:count]  # the count-th lowest confidence
        ids = tf.where(confidence <= cutoff, self.mask_id, sampled)
      if trace:
        history.append(tf.reduce_sum(tf.cast(tf.equal(ids, self.mask_id), tf.int32), axis=1))
    return (ids, history) if trace else ids

  def draw(self, rng, labels, steps, temperature, choice_temperature):
    start = self.start_ids(labels, rng.per_replica_batch)
    return self.tokens.decode(self.decode(start, rng, int(steps), temperature, choice_temperature))
