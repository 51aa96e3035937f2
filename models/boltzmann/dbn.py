"""Deep belief network (Hinton, Osindero & Teh 2006): RBMs stacked and trained greedily, then fine-tuned as a
classifier.

One run trains the whole stack, each layer a stage of its own (so a resume continues in the middle of any layer):
  RBM l = 1..L   ``model.layer_steps`` steps of CD-k on RBM l alone. Its data are the hidden probabilities of
                 the layer below for the (binarised) image, passed up through the frozen layers below.
  fine-tune      the remaining steps: the unrolled up pass, h_l = σ(c_l + h_{l-1} W_l) through every layer, then a
                 softmax layer, trained as a classifier (Adam, cross-entropy) on the examples that have a label
                 (with ``--config.input.labelled=N``, the first N examples; the others count zero). Its weights
                 are copies of the stack's, made at the end of pretraining, so the generative stack stays as
                 pretrained.
With ``model.pretrain=false`` no RBM is trained and every step fine-tunes a classifier started from random
weights (Glorot's normal initialisation): the baseline that shows what pretraining buys.

Samples (Hinton et al. 2006, section 4): ``model.sample_steps`` Gibbs sweeps in the top RBM from its base-rate
model, then a down pass through the lower RBMs, binary states drawn from p(h_{l-1} | h_l) = σ(b_l + W_l h_l) down
to the image, which shows the visible probabilities. ``classify(x)`` gives the fine-tuned classifier's logits
(``launch.evaluate --metrics=error``). The DBN's likelihood is intractable and is not estimated here.
"""

import keras
import tensorflow as tf

from genscale.errors import UserError
from models import base
from models import binary
from models.boltzmann import energy
from models.boltzmann import rbm


def parse_layers(text):
  """"500,500,2000" -> (500, 500, 2000)."""
  return tuple(int(part) for part in str(text).split(",") if part.strip())


class DBN(base.GenerativeModel):
  """A stack of Bernoulli RBMs over binarised images, and the classifier it unrolls into."""

  shape_keys = ("layers",)

  def __init__(self, config, info, hardware):
    super().__init__(name="dbn")
    m = config.model
    height = width = int(config.resolution)
    self.image_shape = (height, width, 1)
    sizes = (height * width, *parse_layers(m.layers))
    self.pretrain_steps = len(sizes[1:]) * int(m.layer_steps) if m.pretrain else 0
    self.finetune_steps = int(config.steps) - self.pretrain_steps
    self.classes = int(info.num_classes or 0)
    if self.finetune_steps > 0 and not self.classes:
      raise UserError(f"{info.spec} has no labels to fine-tune on: set --config.steps to "
                      f"{self.pretrain_steps} (pretraining only) or train on labelled data")
    self.global_batch = int(config.batch_size)
    self.gibbs_steps, self.sample_steps = int(m.gibbs_steps), int(m.sample_steps)
    self.weight_cost = float(m.weight_cost)
    self.dtype = hardware.compute_dtype
    self.num_classes = 0  # an unconditional generator: labels feed the classifier only
    chains = self.global_batch if m.training == "pcd" else 0
    self.stack = [rbm.Layer(v, h, m.init_std, int(config.seed) + l, f"rbm{l + 1}", chains)
                  for l, (v, h) in enumerate(zip(sizes[:-1], sizes[1:]))]
    self.classifier = self._classifier(sizes, max(self.classes, 1), int(config.seed))
    self.optimizers = {f"rbm{l + 1}": rbm.optimizer(m, m.layer_steps) for l in range(len(self.stack))}
    self.optimizers["classifier"] = keras.optimizers.Adam(float(m.finetune_lr))
    self.ema_pairs = []

  @staticmethod
  def _classifier(sizes, classes, seed):
    """The unrolled network's weights and biases [(W, c)] for every layer and the softmax, Glorot-normal."""
    out = []
    for l, (fan_in, fan_out) in enumerate(zip(sizes, (*sizes[1:], classes))):
      std = (2.0 / (fan_in + fan_out)) ** 0.5
      key = tf.constant([seed, 0x3C4 + l], tf.int64)
      out.append((tf.Variable(tf.random.stateless_normal([fan_in, fan_out], key, stddev=std), name="weights"),
                  tf.Variable(tf.zeros([fan_out]), name="bias")))
    return out

  # ---- stages and phases

  def stage(self, nimg):
    """RBM 1..L for ``layer_steps`` steps each, then the fine-tuning to the end."""
    step = int(nimg) // self.global_batch
    if step < self.pretrain_steps:
      layer_steps = self.pretrain_steps // len(self.stack)
      layer = step // layer_steps
      return base.Stage(key=layer, name=f"RBM {layer + 1} of {len(self.stack)}",
                        end_nimg=(layer + 1) * layer_steps * self.global_batch)
    return base.Stage(key="fine-tune", name="fine-tune")

  def phases(self, stage):
    if stage.key == "fine-tune":
      variables = [v for pair in self.classifier for v in pair]
      return [base.Phase("classifier", "classifier", variables, self.finetune_loss)]
    layer = int(stage.key)
    return [base.Phase(f"RBM{layer + 1}", f"rbm{layer + 1}", self.stack[layer].trainables,
                       lambda batch, rng: self.layer_loss(layer, batch, rng))]

  def up(self, v, layers):
    """Hidden probabilities of the stack's first ``layers`` RBMs for visible values v [b, D]."""
    for layer in self.stack[:layers]:
      v = energy.hidden_probabilities(layer.params(self.dtype), v)
    return v

  def layer_loss(self, layer, batch, rng):
    """CD-k or PCD-k of RBM ``layer`` on the hidden probabilities of the layers below (a constant here)."""
    v = self.up(binary.to_bits(binary.dynamic_binarize(batch["image"], rng, "dbn/binarize")), layer)
    return self.stack[layer].train(v, rng, f"RBM{layer + 1}", f"dbn/{layer}", self.gibbs_steps, self.weight_cost,
                                   self.dtype)

  def classify(self, x, labels=None):
    """The classifier's logits [b, classes] for images x in [-1, 1] (their intensities as the visible values)."""
    del labels
    h = (tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1]) + 1.0) / 2.0
    for weights, bias in self.classifier[:-1]:
      h = tf.sigmoid(tf.cast(tf.matmul(tf.cast(h, self.dtype), tf.cast(weights, self.dtype)), tf.float32) + bias)
    weights, bias = self.classifier[-1]
    return tf.matmul(h, weights) + bias

  def correct(self, x, labels):
    """1.0 where the classifier's most likely class is the label, else 0.0: float32 [b]."""
    return tf.cast(tf.equal(tf.argmax(self.classify(x), axis=-1, output_type=tf.int32), labels), tf.float32)

  def finetune_loss(self, batch, rng):
    """Cross-entropy of the labelled examples (label ≥ 0); unlabelled ones count zero."""
    del rng
    labels = batch["label"]
    known = tf.cast(labels >= 0, tf.float32)
    logits = self.classify(batch["image"])
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=logits) * known
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
    return loss, {"classifier/cross_entropy": (loss, known), "classifier/accuracy": (hits, known),
                  "classifier/labelled_fraction": known}

  def update_state(self, stage, step, nimg, metrics):
    del step
    if stage.key == "fine-tune":
      return
    layer = int(stage.key)
    self.stack[layer].update(f"RBM{layer + 1}", metrics)
    if layer == len(self.stack) - 1:  # at the last pretraining step, the classifier starts from the stack
      last = tf.cast(nimg, tf.int64) + self.global_batch >= self.pretrain_steps * self.global_batch
      for source, (weights, bias) in zip(self.stack, self.classifier):
        weights.assign(tf.where(last, source.weights, weights))
        bias.assign(tf.where(last, source.hidden_bias, bias))

  # ---- samples

  def generate(self, rng, labels=None, ema=True, **options):
    """Gibbs sweeps in the top RBM from its base-rate model, then a down pass to the image's probabilities."""
    del labels, ema
    self.check_sampling_options(**options)
    top = self.stack[-1]
    params = top.params(self.dtype)
    start = binary.sample_bits(tf.sigmoid(top.base_rate_logits())[None, :],
                               rng.uniform([params.visible], "sample/start"))
    v = energy.gibbs(params, start, self.sample_steps, rng.per_step([params.hidden], "sample/h", "uniform"),
                     rng.per_step([params.visible], "sample/v", "uniform"))
    for l in range(len(self.stack) - 2, -1, -1):
      p = energy.visible_probabilities(self.stack[l].params(self.dtype), v)
      v = p if l == 0 else binary.sample_bits(p, rng.uniform([int(p.shape[-1])], f"sample/down{l}"))
    return binary.to_image(v, self.image_shape)
