"""Score a trained run: ``python -m launch.evaluate --workdir=W --metrics=fid,kid,is,pr --num=10000``.

Uses the newest checkpoint (or ``--checkpoint``, a path or a step) and the EMA generator (``--noema`` for the raw
one). Prints the scores, writes them as TensorBoard scalars ``eval/<metric>_<extractor>`` at the checkpoint's step
under ``<workdir>/tensorboard``, and appends one JSON line per evaluation to ``<workdir>/metrics.jsonl``.

Extractors (``--extractor``):
  classifier  the embedded digit classifier (offline; for the embedded digits and digit-like data);
  inception   InceptionV3 from ``--inception_weights=PATH``: ``classify_image_graph_def.pb`` from
              inception-2015-12-05.tgz for numbers comparable with papers, or Keras' InceptionV3 .h5 weights.
              Nothing is downloaded (docs/evaluation.md).

The reference statistics of the data (``--data``, default the run's own data; every image up to
``--reference_num``) are computed once and cached under ``<workdir>/eval/`` or at ``--reference=PATH``.

Real-vs-real (the floor a perfect generator would reach with this many images), without a run:
  python -m launch.evaluate --compare_data=embedded:mnist:test --data=embedded:mnist:train --metrics=fid,kid
"""

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", None, "Run directory (local or gs://); optional with --compare_data.")
flags.DEFINE_string("metrics", "fid,kid", "Comma-separated metrics: fid, kid, is (Inception Score), pr "
                    "(precision/recall), nll (held-out likelihood in nats: exact, a bound or an AIS estimate, by model), "
                    "error (held-out error of a model that classifies: a fine-tuned DBN), translation (a "
                    "translator's held-out cycle and paired errors: CycleGAN).")
flags.DEFINE_integer("num", 10_000, "Generated images (published FIDs use 50000).")
flags.DEFINE_string("extractor", "classifier", "Feature network: classifier | inception.")
flags.DEFINE_string("inception_weights", None, "For --extractor=inception: classify_image_graph_def.pb (from "
                    "inception-2015-12-05.tgz) or a Keras InceptionV3 .h5 weights file; local or gs://.")
flags.DEFINE_string("resize", None, "Resize filter to the network's input size: bilinear | bilinear_tf1 | "
                    "pil_bicubic (clean-fid's) | pil_bilinear; default bilinear_tf1 for inception (as the reference "
                    "FID/IS code), bilinear for the classifier.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path or step number; default the newest.")
flags.DEFINE_string("reference", None, "Reference statistics .npz: read if it exists (its settings must match), "
                    "else computed and written; default <workdir>/eval/reference-<extractor>-<hash>.npz.")
flags.DEFINE_string("data", None, "Reference data spec; default the run's data.")
flags.DEFINE_integer("reference_num", 50_000, "At most this many reference images.")
flags.DEFINE_string("compare_data", None, "Score the images of this data spec instead of a model's samples "
                    "(e.g. the real-vs-real floor).")
flags.DEFINE_string("resolution", None, "Image resolution without a --workdir (default the data's stored size).")
flags.DEFINE_integer("channels", None, "Image channels without a --workdir (default the data's stored channels).")
flags.DEFINE_integer("seed", 0, "Generation seed; the same seed scores the same latents.")
flags.DEFINE_integer("batch_size", 64, "Images per compiled call (rounded up to a multiple of the replicas).")
flags.DEFINE_integer("keep", 10_000, "Features kept per set for KID and precision/recall.")
flags.DEFINE_integer("kid_subsets", 100, "KID: number of random subsets.")
flags.DEFINE_integer("kid_subset_size", 1000, "KID: features per subset (fewer if a set is smaller).")
flags.DEFINE_integer("is_splits", 10, "Inception Score: splits.")
flags.DEFINE_integer("pr_k", 3, "Precision/recall: k of the k-nearest-neighbour balls.")
flags.DEFINE_bool("ema", True, "Use the EMA generator weights.")
flags.DEFINE_integer("nll_samples", 64, "nll: importance samples k of the IWAE bound (Burda et al. use 5000).")
flags.DEFINE_string("nll_data", None, "nll, error, translation: held-out data spec; default the test split of the "
                    "run's data (of each domain, for translation).")
flags.DEFINE_integer("nll_num", None, "nll, error, translation: at most this many held-out images, evenly spread over the "
                     "split (so every class of a class-ordered split); default all.")
flags.DEFINE_integer("ais_runs", 100, "nll of an energy model (RBM): AIS runs for log Z (Salakhutdinov & "
                     "Murray 2008 use 100).")
flags.DEFINE_integer("ais_betas", 14_500, "nll of an energy model: AIS intermediate distributions (the paper's "
                     "14500).")
flags.DEFINE_string("strategy", "auto", "runtime.strategy for evaluation.")
flags.DEFINE_integer("cpu_replicas", 1, "Logical CPU devices (MirroredStrategy on a CPU when > 1).")
flags.DEFINE_string("precision", None, "runtime.precision of the generator; default the run's. Features are "
                    "always float32.")
flags.DEFINE_bool("xla", None, "Compile generation and feature extraction with XLA; default the run's setting.")
FLAGS = flags.FLAGS


def main(argv):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {' '.join(argv[1:])}")
  if not FLAGS.workdir and not FLAGS.compare_data:
    raise UserError("--workdir is required (or --compare_data to score a data source)")
  from evaluation.evaluator import EvalSettings  # pylint: disable=g-import-not-at-top
  settings = EvalSettings(
      metrics=FLAGS.metrics, num=FLAGS.num, extractor=FLAGS.extractor, inception_weights=FLAGS.inception_weights,
      resize=FLAGS.resize, data=FLAGS.data, reference=FLAGS.reference, reference_num=FLAGS.reference_num,
      batch_size=FLAGS.batch_size, seed=FLAGS.seed, keep=FLAGS.keep, kid_subsets=FLAGS.kid_subsets,
      kid_subset_size=FLAGS.kid_subset_size, is_splits=FLAGS.is_splits, pr_k=FLAGS.pr_k, ema=FLAGS.ema,
      nll_samples=FLAGS.nll_samples, nll_data=FLAGS.nll_data, nll_num=FLAGS.nll_num, ais_runs=FLAGS.ais_runs,
      ais_betas=FLAGS.ais_betas)
  settings.validate()  # before anything slow
  from launch import scoring as command  # pylint: disable=g-import-not-at-top
  runtime_options = dict(strategy=FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas, precision=FLAGS.precision,
                         xla=FLAGS.xla)
  if FLAGS.compare_data:
    command.evaluate_data(FLAGS.compare_data, settings, FLAGS.workdir, FLAGS.resolution, FLAGS.channels,
                          runtime_options)
  else:
    command.evaluate_checkpoint(FLAGS.workdir, settings, FLAGS.checkpoint, runtime_options)


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
