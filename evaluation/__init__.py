"""Evaluation of generative models: FID, KID, Inception Score and precision/recall, distributed and offline.

  python -m launch.evaluate --workdir=W --metrics=fid,kid,is,pr --num=10000 --extractor=classifier
  python -m launch.evaluate --workdir=W --extractor=inception --inception_weights=/path/classify_image_graph_def.pb
  python -m launch.train ... --config.eval_every=500       (evaluation during training)

How it fits together (each module's docstring has the details; docs/evaluation.md is the user's guide):
  extractors  images in [-1, 1] -> (features, logits), per replica: quantise to 8 bits, convert channels, resize
              with a documented filter (TF1 bilinear, TF2 bilinear, or PIL's antialiased bicubic/bilinear), run
              the network (float32 whatever the run's precision).
  classifier  the embedded digit classifier (128-d features, 10 logits), trained by ``train_classifier`` and
              stored in weights/mnist_classifier.npz: scores without any download.
  inception   InceptionV3 from a local or gs:// weights file: the 2015 frozen graph of the reference FID/IS code,
              or Keras' ImageNet weights. Never downloaded; a missing path is a one-line error naming the file.
  features    generation and extraction on every replica (strategy.run, XLA when the runtime says so); only the
              sums are reduced over replicas, and features are gathered only for the subset KID and P/R use.
  stats       streaming float64 statistics on the host (count, shifted sums and outer products, IS split sums,
              a bounded random subset of features) and their .npz files with the keys they depend on.
  metrics     FID, KID, IS and precision/recall from those statistics, in NumPy.
  evaluator   ``Evaluator(runtime, model, config, info, workdir)``: settings from the config's eval_* keys,
              reference statistics computed once and cached, ``evaluator(step) -> {"eval/fid_classifier": ...}``
              plus a line in <workdir>/metrics.jsonl.
  periodic    evaluation every ``eval_every`` steps inside the training loop, with its share of the time.
What ``launch.evaluate`` does with a run (restore a checkpoint, score it, print, write TensorBoard scalars) is in
launch/scoring.py: this package never imports ``launch``.
"""

__all__ = ["EvalSettings", "Evaluator"]


def __getattr__(name):
  # Lazy, so ``python -m evaluation.train_classifier`` can set TensorFlow's environment before TensorFlow loads.
  if name in __all__:
    from evaluation import evaluator  # pylint: disable=g-import-not-at-top
    return getattr(evaluator, name)
  raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
