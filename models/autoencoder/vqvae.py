"""VQ-VAE (van den Oord et al. 2017): an autoencoder whose code is a grid of codebook indices.

The encoder maps an image to a grid of vectors (8x8 of ``model.code_dim`` values at 32x32 with two stride-2
layers); each is replaced by its nearest codebook vector (models/autoencoder/quantizer.py) and the decoder
reconstructs the image from them. The loss of one example is

  reconstruction + commitment · ||z_e - sg[z_q]||²  (+ ||sg[z_e] - z_q||² when the codebook learns by gradient)

every term summed over its pixels or grid values (at the defaults the image and the code grid hold the same number
of values, 32·32·1 = 8·8·16, so the sums weigh the terms as the paper's means do). The grid of indices is the
model's tokenisation of an image: ``encode`` gives it, ``decode_tokens`` maps it back, and a generative model of
token grids (a transformer) reads them from a trained run (launch/tokenizer.py). A VQ-VAE alone has no prior to sample.
"""

import tensorflow as tf

from genscale.errors import UserError
from models import base
from models.autoencoder import model as ae_model
from models.autoencoder import networks
from models.autoencoder import quantizer


class VQVAE(base.GenerativeModel):
  """A vector-quantised autoencoder with an EMA- or gradient-trained codebook and dead-code restarts."""

  shape_keys = ("widths", "codebook_size", "code_dim", "codebook")
  samples_from_prior = False

  def __init__(self, config, info, hardware):
    super().__init__(name="vqvae")
    del info  # a VQ-VAE takes no labels
    m = config.model
    self.reconstruction = m.reconstruction
    self.commitment = float(m.commitment)
    self.num_classes = 0
    self.encoder, self.decoder = networks.build(config, hardware, int(m.code_dim), spatial=True)
    self.codebook = quantizer.Codebook(m.codebook_size, m.code_dim, config.seed, ema=m.codebook == "ema",
                                       decay=m.ema_decay, restart_below=m.restart_below)
    self.candidates = quantizer.candidates_per_example(m.codebook_size, config.batch_size)
    self.optimizers = {"vqvae": ae_model.optimizer(config)}
    self.ema_pairs = []

  @property
  def grid_shape(self):
    """(height, width) of the token grid."""
    return tuple(self.encoder.grid)

  def loss(self, batch, rng):
    images = batch["image"]
    z, _, commitment, codebook_error, statistics = self.codebook.quantize(self.encoder(images), rng, self.candidates)
    out = self.decoder(z)
    error, pixel_mse = ae_model.reconstruction_error(self.reconstruction, images, out)
    loss = error + self.commitment * commitment
    if not self.codebook.ema:
      loss += codebook_error
    metrics = {"VQ/reconstruction": error, "VQ/commitment": commitment,
               "VQ/mse_per_pixel": pixel_mse, **statistics}
    return loss, metrics

  def phases(self, stage):
    del stage
    variables = [*self.encoder.trainable_variables, *self.decoder.trainable_variables]
    if not self.codebook.ema:
      variables.append(self.codebook.vectors)
    return [base.Phase("VQ", "vqvae", variables, self.loss)]

  def update_state(self, stage, step, nimg, metrics):
    del stage, nimg
    self.codebook.update(metrics, step)

  def scalars(self):
    # In use: chosen more often than a restarted code starts with (so a code that was just restarted isn't).
    in_use = self.codebook.usage > max(self.codebook.restart_below, 1e-3)
    return {"codebook_perplexity": self.codebook.perplexity(),
            "codes_in_use": tf.reduce_sum(tf.cast(in_use, tf.float32))}

  # ---- the tokenizer

  def encode(self, images):
    """Token grids int32 [b, h, w] of images [b, H, W, C] in [-1, 1]."""
    z = self.encoder(images)
    b, h, w, dim = z.shape
    return tf.reshape(self.codebook.nearest(tf.reshape(z, [-1, dim])), [-1, h, w])

  def decode_tokens(self, tokens):
    """Images [b, H, W, C] in [-1, 1] of token grids int32 [b, h, w]."""
    return ae_model.output_image(self.reconstruction, self.decoder(self.codebook.lookup(tokens)))

  def reconstruct(self, images, labels=None):
    del labels
    return self.decode_tokens(self.encode(images))

  def preview(self, images, labels, rng):
    del rng
    return {"reconstructions": tf.concat([images, self.reconstruct(images, labels)], axis=2)}

  def generate(self, rng, labels=None, ema=True, **options):
    raise UserError("a VQ-VAE has no prior to sample from: its token grids (launch/tokenizer.py) are the input of a "
                    "generative model of tokens; TensorBoard shows its reconstructions")
