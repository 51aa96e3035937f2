"""A trained VQ-VAE run as a tokenizer: images to grids of codebook indices and back (``Tokenizer.load(W)``).

``launch.tokens`` is its command: the token grids of a whole data source in an ``.npz``.
"""

import numpy as np
import tensorflow as tf

from genscale.errors import require
from genscale.progress import Progress
from launch import rundir
import pipelines

_BATCH = 256  # images per compiled encoding call


class Tokenizer:
  """The encoder, codebook and decoder of a trained VQ-VAE run (``Tokenizer.load(workdir)``)."""

  def __init__(self, run):
    require(hasattr(run.model, "encode") and hasattr(run.model, "decode_tokens"),
            f"{run.workdir} holds a {run.config.model.name} run; a tokenizer is a trained VQ-VAE "
            "(launch/configs/vqvae.py)")
    self.run = run
    self.model = run.model
    self.codebook_size = int(run.config.model.codebook_size)
    self.resolution = pipelines.parse_resolution(run.config.resolution)
    self.channels = int(run.config.channels)
    self._encode = tf.function(self.model.encode)
    self._decode = tf.function(self.model.decode_tokens)

  @classmethod
  def load(cls, workdir, checkpoint=None):
    """The tokenizer of the VQ-VAE run in ``workdir`` (its newest checkpoint, or ``checkpoint``)."""
    return cls(rundir.load_run(workdir, checkpoint, strategy="cpu"))

  @property
  def grid(self):
    """(h, w) of a token grid."""
    return self.model.grid_shape

  def encode(self, images):
    """int32 [b, h, w] token grids of images [b, H, W, C] in [-1, 1] at the run's resolution and channels."""
    images = tf.convert_to_tensor(images, tf.float32)
    require(tuple(images.shape[1:]) == (*self.resolution, self.channels),
            f"the tokenizer takes {self.resolution[0]}x{self.resolution[1]}x{self.channels} images, got "
            f"{'x'.join(map(str, images.shape[1:]))}")
    return self._encode(images).numpy()

  def decode(self, tokens):
    """Images [b, H, W, C] in [-1, 1] of int32 token grids [b, h, w]."""
    tokens = np.asarray(tokens)
    require(tokens.min() >= 0 and tokens.max() < self.codebook_size,
            f"tokens must lie in [0, {self.codebook_size}), got [{tokens.min()}, {tokens.max()}]")
    return self._decode(tf.constant(tokens, tf.int32)).numpy()

  def encode_source(self, spec=None, show_progress=False):
    """(tokens [N, h, w], labels [N]) of every image of the data ``spec`` (default: the run's training data)."""
    spec = spec or self.run.config.data
    images, labels = pipelines.open_source(spec, self.run.config.input).arrays(self.resolution, self.channels)
    out = []
    progress = Progress(len(images), "tokenising", unit="img") if show_progress else None
    for start in range(0, len(images), _BATCH):
      out.append(self.encode(images[start:start + _BATCH].astype(np.float32) / 127.5 - 1.0))
      if progress:
        progress.update(start + len(out[-1]))
    return np.concatenate(out), labels
