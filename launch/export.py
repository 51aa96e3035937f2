"""Export a trained run for serving: ``python -m launch.export --workdir=W --out=DIR``.

Writes a TensorFlow SavedModel to ``DIR/<version>/`` (TF Serving's layout; the version is the checkpoint's training
step unless ``--version`` says otherwise) with the EMA weights (``--weights=raw`` for the trained ones). Serve it
with ``python -m launch.serve --model_dir=DIR``, TF Serving or Vertex AI; load it in any TensorFlow program with
``tf.saved_model.load`` (no genscale needed). ``--format=tflite`` also writes the generator as a TFLite model
(z in, images out) to ``assets.extra/generator.tflite`` inside it: DCGAN, Progressive GAN and the VAE decoder
convert; docs/deployment.md says why the others don't. What the signatures take and return:
``launch/serving.py``.
"""

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", None, "Run directory (local or gs://).")
flags.DEFINE_string("out", None, "Model directory (local or gs://); the SavedModel goes to OUT/<version>/.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path or step number; default the newest.")
flags.DEFINE_enum("weights", "ema", ["ema", "raw"], "The EMA generator weights, or the raw trained ones.")
flags.DEFINE_integer("version", None, "Version directory; default the checkpoint's training step.")
flags.DEFINE_string("precision", None, "runtime.precision of the exported graph; default the run's.")
flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite"],
                  "tflite: also write the generator (z in, images out) to assets.extra/generator.tflite.")
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch import serving  # pylint: disable=g-import-not-at-top

  run = rundir.load_run(FLAGS.workdir, FLAGS.checkpoint, strategy="cpu", precision=FLAGS.precision, xla=False)
  tflite = FLAGS.format == "tflite"
  path = serving.export(run, FLAGS.out, version=FLAGS.version, ema=FLAGS.weights == "ema", tflite=tflite)
  weights = FLAGS.weights if run.model.ema_pairs else "raw (the model keeps no EMA copy)"
  print(f"exported {run.config.model.name} from {run.checkpoint} ({weights} weights) to {path}")
  if tflite:
    print(f"TFLite generator (z in, images out): {path}/{serving.TFLITE}")
  print(f"serve it: python -m launch.serve --model_dir={FLAGS.out}")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
