"""Sample from a trained run: ``python -m launch.sample --workdir=W --num=64 --out=grid.png``.

Uses the newest checkpoint (or ``--checkpoint``) and the EMA weights (``--noema`` for the raw generator). The
output is a PNG grid when ``--out`` ends in ``.png``, or a NumPy ``.npz`` with ``images`` (uint8 NHWC) and, for
conditional models, ``labels``, also stored as ``arr_0`` and ``arr_1`` (the names outside scorers such as the
ADM evaluator read).

``--walk=0-4 --frames=16 --out=walk.gif`` (or ``.mp4``, ``.png``, ``.npz``) walks through the latent space from
each seed's z to the next one's (latent-variable models), ``--fps`` frames a second.

``--num=N --seed=S`` draws N images in batches from S. ``--seeds=0-63`` draws each seed's image alone: seed s
gives the same image whatever the batch size and the other seeds (the image of ``--seed=s --num=1``, and of an
exported model's seed s). ``--outdir=DIR --seeds=...`` writes one PNG per seed, ``DIR/seed0005.png``.
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
flags.DEFINE_string("seeds", None, "One image per seed, e.g. 0-63 or 1,5,9: each the image of --seed=s --num=1.")
flags.DEFINE_string("walk", None, "A latent walk through these seeds' z, e.g. 0-4; --out .gif/.mp4 animates it.")
flags.DEFINE_integer("frames", 16, "--walk: frames from each seed to the next; --sweep: frames in all.")
flags.DEFINE_string("sweep", None, "A sweep of one setting for --seed, e.g. truncation=0:1 (StyleGAN2) or "
                    "guidance=0:4 (diffusion), in --frames steps; --out .gif/.mp4 animates it.")
flags.DEFINE_integer("fps", 24, "--walk into a .gif or .mp4: frames a second.")
flags.DEFINE_string("outdir", None, "With --seeds: write one PNG per seed here (seed0005.png), instead of --out.")
flags.DEFINE_integer("label", None, "Class of every sample (conditional models); default cycles through classes.")
flags.DEFINE_bool("ema", True, "Use the EMA generator weights.")
flags.DEFINE_integer("batch_size", 64, "Images per compiled call (rounded up to a multiple of the replicas).")
flags.DEFINE_integer("columns", None, "Grid width; default square, or one class per column.")
flags.DEFINE_string("strategy", "auto", "runtime.strategy for sampling.")
flags.DEFINE_string("precision", None, "runtime.precision; default the run's.")
flags.DEFINE_bool("xla", None, "Compile sampling with XLA; default the run's setting.")
# Model-specific sampling options; each model family accepts the ones that apply to it and refuses the others.
flags.DEFINE_string("sampler", None, "Diffusion sampler: ddpm | ddim | euler | heun.")
flags.DEFINE_integer("steps", None, "Diffusion sampling steps; MaskGIT decoding steps.")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (conditional diffusion models).")
flags.DEFINE_float("eta", None, "DDIM stochasticity (0: deterministic).")
flags.DEFINE_float("churn", None, "EDM stochastic churn S_churn.")
flags.DEFINE_float("truncation", None, "Truncation psi against the average w (StyleGAN2).")
flags.DEFINE_integer("mix_seed", None, "Style mixing: take the styles from this seed after --mix_layer (StyleGAN2).")
flags.DEFINE_integer("mix_layer", None, "Style mixing: first layer that takes the styles of --mix_seed.")
flags.DEFINE_float("temperature", None, "Token sampling temperature (transformers; 0: greedy, ImageGPT only).")
flags.DEFINE_integer("top_k", None, "ImageGPT: draw from the k most likely tokens only (0: all).")
flags.DEFINE_float("top_p", None, "ImageGPT: draw from the smallest set of tokens whose probability reaches p (1: all).")
flags.DEFINE_float("choice_temperature", None, "MaskGIT: scale of the noise on the confidences that choose the "
                   "tokens to keep.")
flags.DEFINE_integer("interpolate", None, "Latent interpolation: frames between consecutive seeds (StyleGAN2).")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


_OPTION_FLAGS = ("sampler", "steps", "guidance", "eta", "churn", "truncation", "mix_seed", "mix_layer",
                 "interpolate", "temperature", "top_k", "top_p", "choice_temperature")


def sample_options():
  """The model-specific sampling options given on the command line, by name."""
  return {name: FLAGS[name].value for name in _OPTION_FLAGS if FLAGS[name].value is not None}


def _check_outputs(seeds):
  """The output flags, checked before anything is loaded. Raises UserError."""
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if (FLAGS.out is None) == (FLAGS.outdir is None):
    raise UserError("give --out=FILE (.png grid or .npz) or, with --seeds, --outdir=DIR (one PNG per seed)")
  if FLAGS.outdir is not None and seeds is None:
    raise UserError("--outdir writes one PNG per seed: give the seeds too, e.g. --seeds=0-63")
  animated = (".gif", ".mp4") if FLAGS.walk or FLAGS.sweep else ()
  if FLAGS.out is not None and not FLAGS.out.endswith((".png", ".npz", *animated)):
    raise UserError(f"--out={FLAGS.out} must end in .png (a grid) or .npz (raw samples)" +
                    (", or .gif/.mp4 (an animation)" if animated else "; .gif/.mp4 take --walk or --sweep"))
  if FLAGS.walk and FLAGS.sweep:
    raise UserError("choose --walk or --sweep, not both")
  if FLAGS.sweep:
    for name in ("seeds", "num", "interpolate", "outdir", "mix_seed", *_OPTION_FLAGS):
      if FLAGS[name].present:
        raise UserError(f"--sweep draws one seed's image at each value; drop --{name}")
  if FLAGS.walk:
    for name in ("seeds", "num", "seed", "interpolate", "outdir", "mix_seed"):
      if FLAGS[name].present:
        raise UserError(f"--walk draws its own frames from its seeds; drop --{name}")
  if seeds is not None:
    for name in ("num", "seed", "interpolate"):
      if FLAGS[name].present:
        raise UserError(f"--seeds draws each seed's image alone; drop --{name} (it belongs to batch sampling)")
  if FLAGS.num < 1:
    raise UserError(f"--num={FLAGS.num} must be at least 1")


def _labels(count, num_classes):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  from launch.sampling import grid_labels  # pylint: disable=g-import-not-at-top
  if FLAGS.label is None:
    return grid_labels(count, num_classes)
  if not num_classes:
    raise UserError("--label needs a class-conditional run; this one is unconditional")
  if not 0 <= FLAGS.label < num_classes:
    raise UserError(f"--label={FLAGS.label} is out of range: the run has {num_classes} classes")
  return np.full([count], FLAGS.label, np.int32)


def _write(images, labels, num_classes):
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  directory = os.path.dirname(FLAGS.out)
  if directory:
    tf.io.gfile.makedirs(directory)
  if FLAGS.out.endswith(".png"):
    columns = FLAGS.columns or (num_classes if num_classes and FLAGS.label is None else None)
    image_lib.write_png(FLAGS.out, image_lib.grid(images, columns))
    return
  arrays = {"images": images, "arr_0": images}
  if num_classes:
    arrays.update(labels=labels, arr_1=labels)
  buffer = io.BytesIO()  # np.savez seeks; GFile (gs://) can't seek while writing
  np.savez(buffer, **arrays)
  with tf.io.gfile.GFile(FLAGS.out, "wb") as f:
    f.write(buffer.getvalue())


def _sweep_values():
  """(setting, values) of --sweep=name=low:high in --frames evenly spaced steps. Raises UserError."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  name, _, span = FLAGS.sweep.partition("=")
  low, colon, high = span.partition(":")
  try:
    low, high = float(low), float(high)
  except ValueError:
    raise UserError(f"--sweep={FLAGS.sweep}: give name=low:high, e.g. truncation=0:1") from None
  if not colon or FLAGS.frames < 2:
    raise UserError(f"--sweep={FLAGS.sweep}: give name=low:high and --frames of 2 or more")
  return name, list(np.linspace(low, high, FLAGS.frames))


def _walk(seeds):
  """--walk (seeds given) or --sweep (seeds None): frames written as an animation, a grid or .npz."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  from genscale.progress import Progress  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  sweep = None if seeds is not None else _sweep_values()
  run = rundir.load_run(FLAGS.workdir, FLAGS.checkpoint, strategy=FLAGS.strategy, precision=FLAGS.precision,
                        xla=FLAGS.xla)
  num_classes = getattr(run.model, "num_classes", 0)
  label = _labels(1, num_classes)
  label = 0 if label is None else int(label[0])
  count = (len(seeds) - 1) * FLAGS.frames + 1 if sweep is None else len(sweep[1])
  sampler = Sampler(run.runtime, run.model, min(FLAGS.batch_size, count), ema=FLAGS.ema)
  progress = Progress(count, "walk" if sweep is None else "sweep", unit="frame")
  if sweep is None:
    frames = sampler.walk(seeds, FLAGS.frames, label, progress=progress)
    what = f"a walk of {count} frames through seeds {','.join(map(str, seeds))}"
  else:
    frames = sampler.sweep(FLAGS.seed, sweep[0], sweep[1], label, progress=progress)
    what = f"a sweep of {sweep[0]} over {count} frames for seed {FLAGS.seed}"
  frames = image_lib.to_uint8(frames)
  progress.close()
  if FLAGS.out.endswith((".gif", ".mp4")):
    image_lib.write_animation(FLAGS.out, frames, fps=FLAGS.fps)
  else:
    _write(frames, np.full([count], label, np.int32) if num_classes else None, num_classes)
  print(f"wrote {what} to {FLAGS.out}")


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  from genscale.progress import Progress  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch.sampling import Sampler, parse_seeds  # pylint: disable=g-import-not-at-top

  seeds = None if FLAGS.seeds is None else parse_seeds(FLAGS.seeds)
  _check_outputs(seeds)
  if FLAGS.walk or FLAGS.sweep:
    _walk(parse_seeds(FLAGS.walk) if FLAGS.walk else None)
    return
  run = rundir.load_run(FLAGS.workdir, FLAGS.checkpoint, strategy=FLAGS.strategy, precision=FLAGS.precision,
                        xla=FLAGS.xla)
  num_classes = getattr(run.model, "num_classes", 0)
  count = FLAGS.num if seeds is None else len(seeds)
  labels = _labels(count, num_classes)
  sampler = Sampler(run.runtime, run.model, min(FLAGS.batch_size, count), ema=FLAGS.ema, **sample_options())
  progress = Progress(count, "sample", unit="img")
  if seeds is None:
    images = image_lib.to_uint8(sampler.generate(FLAGS.seed, count, labels, progress=progress))
  else:
    images = image_lib.to_uint8(sampler.for_seeds(seeds, labels, progress=progress))
  progress.close()
  if FLAGS.outdir is not None:
    tf.io.gfile.makedirs(FLAGS.outdir)
    for seed, image in zip(seeds, images):
      image_lib.write_png(os.path.join(FLAGS.outdir, f"seed{seed:04d}.png"), image)
    print(f"wrote {count} images from {run.checkpoint} to {FLAGS.outdir}/seedNNNN.png")
    return
  _write(images, labels, num_classes)
  print(f"wrote {count} samples from {run.checkpoint} to {FLAGS.out}")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
