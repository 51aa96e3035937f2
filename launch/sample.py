"""Sample from a trained run: ``python -m launch.sample --workdir=W --num=64 --out=grid.png``.

Uses the newest checkpoint (or ``--checkpoint``) and the EMA weights (``--noema`` for the raw generator). The
output is a PNG grid when ``--out`` ends in ``.png``, or a NumPy ``.npz`` with ``images`` (uint8 NHWC) and, for
conditional models, ``labels``, which outside scorers can read.
"""

import os

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", None, "Run directory (local or gs://).")
flags.DEFINE_integer("num", 64, "Number of images.")
flags.DEFINE_string("out", None, "Output file: .png (grid) or .npz (raw uint8 samples).")
flags.DEFINE_string("checkpoint", None, "Checkpoint path or step number; default the newest.")
flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same images.")
flags.DEFINE_integer("label", None, "Class of every sample (conditional models); default cycles through classes.")
flags.DEFINE_bool("ema", True, "Use the EMA generator weights.")
flags.DEFINE_integer("batch_size", 64, "Images per compiled call (rounded up to a multiple of the replicas).")
flags.DEFINE_integer("columns", None, "Grid width; default square, or one class per column.")
flags.DEFINE_string("strategy", "auto", "runtime.strategy for sampling.")
flags.DEFINE_string("precision", None, "runtime.precision; default the run's.")
flags.DEFINE_bool("xla", None, "Compile sampling with XLA; default the run's setting.")
# Model-specific sampling options; each model family accepts the ones that apply to it and refuses the others.
flags.DEFINE_string("sampler", None, "Diffusion sampler: ddpm | ddim | euler | heun.")
flags.DEFINE_integer("steps", None, "Diffusion sampling steps.")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (conditional diffusion models).")
flags.DEFINE_float("eta", None, "DDIM stochasticity (0: deterministic).")
flags.DEFINE_float("churn", None, "EDM stochastic churn S_churn.")
flags.DEFINE_float("truncation", None, "Truncation psi against the average w (StyleGAN2).")
flags.DEFINE_integer("mix_seed", None, "Style mixing: take the styles from this seed after --mix_layer (StyleGAN2).")
flags.DEFINE_integer("mix_layer", None, "Style mixing: first layer that takes the styles of --mix_seed.")
flags.DEFINE_integer("interpolate", None, "Latent interpolation: frames between consecutive seeds (StyleGAN2).")
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS


_OPTION_FLAGS = ("sampler", "steps", "guidance", "eta", "churn", "truncation", "mix_seed", "mix_layer",
                 "interpolate")


def sample_options():
  """The model-specific sampling options given on the command line, by name."""
  return {name: FLAGS[name].value for name in _OPTION_FLAGS if FLAGS[name].value is not None}


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  from genscale.progress import Progress  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch.sampling import Sampler, grid_labels  # pylint: disable=g-import-not-at-top

  if not FLAGS.out.endswith((".png", ".npz")):
    raise UserError(f"--out={FLAGS.out} must end in .png (a grid) or .npz (raw samples)")
  if FLAGS.num < 1:
    raise UserError(f"--num={FLAGS.num} must be at least 1")
  run = rundir.load_run(FLAGS.workdir, FLAGS.checkpoint, strategy=FLAGS.strategy, precision=FLAGS.precision,
                        xla=FLAGS.xla)
  runtime, model, path = run.runtime, run.model, run.checkpoint

  num_classes = getattr(model, "num_classes", 0)
  if FLAGS.label is not None:
    if not num_classes:
      raise UserError("--label needs a class-conditional run; this one is unconditional")
    if not 0 <= FLAGS.label < num_classes:
      raise UserError(f"--label={FLAGS.label} is out of range: the run has {num_classes} classes")
    labels = np.full([FLAGS.num], FLAGS.label, np.int32)
  else:
    labels = grid_labels(FLAGS.num, num_classes)
  sampler = Sampler(runtime, model, min(FLAGS.batch_size, FLAGS.num), ema=FLAGS.ema, **sample_options())
  progress = Progress(FLAGS.num, "sample", unit="img")
  images = image_lib.to_uint8(sampler.generate(FLAGS.seed, FLAGS.num, labels, progress=progress))
  progress.close()

  directory = os.path.dirname(FLAGS.out)
  if directory:
    tf.io.gfile.makedirs(directory)
  if FLAGS.out.endswith(".png"):
    columns = FLAGS.columns or (num_classes if num_classes and FLAGS.label is None else None)
    image_lib.write_png(FLAGS.out, image_lib.grid(images, columns))
  else:
    arrays = {"images": images}
    if num_classes:
      arrays["labels"] = labels
    import io  # pylint: disable=g-import-not-at-top
    buffer = io.BytesIO()  # np.savez seeks; GFile (gs://) can't seek while writing
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(FLAGS.out, "wb") as f:
      f.write(buffer.getvalue())
  print(f"wrote {FLAGS.num} samples from {path} to {FLAGS.out}")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
