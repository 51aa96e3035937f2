"""A trained VQ-VAE run as a tokenizer: images to grids of codebook indices and back.

  python -m launch.tokens --workdir=W --out=tokens.npz [--data=SPEC] [--checkpoint=N]

writes the token grids of every image of SPEC (default: the data the VQ-VAE trained on), in the source's fixed
order, with their labels and the tokenizer's settings: ``tokens`` int32 [N, h, w], ``labels`` int32 [N],
``codebook_size``, ``workdir`` and ``step``. In Python, ``launch.tokenizer.Tokenizer.load(W)`` gives ``encode``
and ``decode`` for a generative model of tokens (a transformer over 8x8 grids instead of 32x32 pixels).
"""

import io
import os

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from genscale.errors import require  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained VQ-VAE run (local or gs://).")
flags.DEFINE_string("out", None, "Where to write the .npz of token grids.")
flags.DEFINE_string("data", None, "Images to tokenise (a data spec); default the run's training data.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path or step number; default the newest.")


def main(argv):
  del argv
  require(FLAGS.workdir and FLAGS.out, "give --workdir=<a trained VQ-VAE run> and --out=<tokens.npz>")
  tokenizer = Tokenizer.load(FLAGS.workdir, FLAGS.checkpoint)
  tokens, labels = tokenizer.encode_source(FLAGS.data, show_progress=True)
  folder = os.path.dirname(FLAGS.out)
  if folder:
    tf.io.gfile.makedirs(folder)
  buffer = io.BytesIO()  # np.savez seeks; GFile (gs://) can't seek while writing
  np.savez(buffer, tokens=tokens, labels=labels, codebook_size=tokenizer.codebook_size, workdir=FLAGS.workdir,
           step=tokenizer.run.step)
  with tf.io.gfile.GFile(FLAGS.out, "wb") as f:
    f.write(buffer.getvalue())
  used = len(np.unique(tokens))
  print(f"{len(tokens)} images -> {tokens.shape[1]}x{tokens.shape[2]} token grids of {tokenizer.codebook_size} "
        f"codes ({used} used) in {FLAGS.out}")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
