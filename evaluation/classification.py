"""Held-out classification error of a model that classifies (a DBN fine-tuned as a classifier): ``--metrics=error``.

The model provides ``correct(x, labels)``: 1.0 where its prediction for the image x (in [-1, 1]) is the label, else
0.0. Scored on the same held-out split as the likelihoods (``embedded:mnist:test`` for the digits, or
``--nll_data``), every image once, compiled and split over the replicas like them.
"""

import math

from evaluation import likelihood
from genscale.errors import require
from pipelines import transforms
import pipelines


def check_model(model):
  require(hasattr(model, "correct"), f"--metrics=error needs a model that classifies (dbn); {type(model).__name__} "
          "has no classifier")


def evaluate(runtime, model, spec, resolution, channels, num=None, batch_size=64, input_options=None,
             show_progress=True):
  """({"error": fraction misclassified, "error_std": its standard error}, the record's extra fields)."""
  check_model(model)
  source = pipelines.open_source(spec, input_options)
  require(source.info.num_classes, f"{spec} has no labels to score a classifier on: pass --nll_data with labels")
  images, labels = source.arrays(pipelines.parse_resolution(resolution), int(channels))
  keep = likelihood.spread(len(images), num)
  images, labels = images[keep], labels[keep]
  runner = likelihood.LikelihoodRunner(runtime, model, batch_size)
  correct = runner.per_example("correct", transforms.to_model_range(images).numpy(), labels, show_progress,
                               with_labels=True)
  n = len(correct)
  error = float(1.0 - correct.mean())
  return ({"error": error, "error_std": math.sqrt(error * (1.0 - error) / n) if n > 1 else 0.0},
          {"error_data": str(spec), "error_count": int(n)})
