"""Translate images with a trained translator (CycleGAN):
``python -m launch.translate --workdir=W --input=SPEC_OR_DIR --direction=AtoB --out=grid.png``.

``--input`` is a data spec (``embedded:mnist:test``, ``tfds:cycle_gan/horse2zebra:testA``, ...) or a directory of
images (as ``folder:DIR``). Images are fitted to the run's resolution and channels as in training.

``--out`` ending in ``.png`` writes a grid: each image beside its translation (and, with ``--cycle``, the
translation taken back). Any other ``--out`` is a directory that receives one PNG per image: a directory input's
relative file names (with .png), or ``00000.png``, ``00001.png``... for a data spec.

Uses the newest checkpoint (or ``--checkpoint``). ``--num`` images of a data spec, spread evenly over it (so every
class of a class-ordered split); every file of a directory.
"""

import os

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", None, "Run directory of a translator (local or gs://).")
flags.DEFINE_string("input", None, "Images to translate: a data spec or a directory.")
flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"], "AtoB: the run's first domain to its second; BtoA back.")
flags.DEFINE_string("out", None, "A .png grid, or a directory for one PNG per image.")
flags.DEFINE_integer("num", 64, "Images of a data spec (evenly spread over it); a directory's are all translated.")
flags.DEFINE_bool("cycle", False, "Grid: also show each translation taken back to the input's domain.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path or step number; default the newest.")
flags.DEFINE_integer("batch_size", 64, "Images per compiled call (rounded up to a multiple of the replicas).")
flags.DEFINE_string("strategy", "auto", "runtime.strategy for translating.")
flags.DEFINE_string("precision", None, "runtime.precision; default the run's.")
flags.DEFINE_bool("xla", None, "Compile with XLA; default the run's setting.")
flags.mark_flags_as_required(["workdir", "input", "out"])
FLAGS = flags.FLAGS


def read_inputs(spec, resolution, channels, num):
  """(uint8 images [n, H, W, C], output names) of a data spec or directory. Raises UserError."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from evaluation import likelihood  # pylint: disable=g-import-not-at-top
  from genscale.errors import require  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  if ":" not in spec or spec.startswith("/") or tf.io.gfile.isdir(spec):
    spec = f"folder:{spec}"
  source = pipelines.open_source(spec)
  if spec.startswith("folder:"):
    root, decode = spec[len("folder:"):], source._decode(resolution, channels)  # pylint: disable=protected-access
    images, names = [], []
    for path in source.paths:
      try:
        images.append(decode(path, 0)[0].numpy())
      except tf.errors.InvalidArgumentError:
        print(f"skipped {path}: not a decodable image")
        continue
      names.append(os.path.splitext(os.path.relpath(path, root))[0] + ".png")
    require(images, f"no decodable image in {root}")
    return np.stack(images), names
  images, _ = source.arrays(resolution, channels)
  images = images[likelihood.spread(len(images), num)]
  return images, [f"{i:05d}.png" for i in range(len(images))]


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from evaluation import likelihood  # pylint: disable=g-import-not-at-top
  from evaluation import translation  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  from genscale.errors import require  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from pipelines import transforms  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  require(FLAGS.num >= 1, f"--num={FLAGS.num} must be at least 1")
  run = rundir.load_run(FLAGS.workdir, FLAGS.checkpoint, strategy=FLAGS.strategy, precision=FLAGS.precision,
                        xla=FLAGS.xla)
  translation.check_model(run.model)
  resolution = pipelines.parse_resolution(run.config.resolution)
  images, names = read_inputs(FLAGS.input, resolution, int(run.config.channels), FLAGS.num)
  runner = likelihood.LikelihoodRunner(run.runtime, translation.Directions(run.model), FLAGS.batch_size)
  forward, back = ("a_to_b", "b_to_a") if FLAGS.direction == "AtoB" else ("b_to_a", "a_to_b")
  x = transforms.to_model_range(images).numpy()
  labels = np.zeros([len(x)], np.int32)
  out = runner.per_example(forward, x, labels, show_progress=True, what="translate").astype(np.float32)
  if FLAGS.out.endswith(".png"):
    columns = [x, out]
    if FLAGS.cycle:
      columns.append(runner.per_example(back, out, labels).astype(np.float32))
    rows = image_lib.to_uint8(np.concatenate(columns, axis=2))
    image_lib.write_png(FLAGS.out, image_lib.grid(rows, columns=int(np.ceil(np.sqrt(len(rows) / len(columns))))))
    print(f"wrote {len(x)} images and their {FLAGS.direction} translations to {FLAGS.out}")
    return
  pixels = image_lib.to_uint8(out)
  for name, image in zip(names, pixels):
    path = os.path.join(FLAGS.out, name)
    tf.io.gfile.makedirs(os.path.dirname(path))
    image_lib.write_png(path, image)
  print(f"wrote {len(names)} {FLAGS.direction} translations to {FLAGS.out}")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
