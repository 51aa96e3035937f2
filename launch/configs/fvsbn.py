"""The fully visible sigmoid belief network (Neal 1992; Frey 1998) over binarised digits (models/classic/fvsbn.py):
each pixel a logistic regression on the pixels before it in raster order, an exact log-likelihood, and ancestral
sampling one pixel at a time (1,024 steps in one while loop).

Run, then score the held-out digits' exact likelihood:
  python -m launch.train --config=launch/configs/fvsbn.py:cpu --workdir=/tmp/fvsbn
  python -m launch.evaluate --workdir=/tmp/fvsbn --metrics=nll

Variants:
  cpu  the embedded digits, dynamically binarised, batch 64, 10,000 steps, a weight penalty of 1e-4: 102.0
       nats/image on the 500 held-out digits (exact), in 1.5 minutes on 2 CPU cores; its samples are
       digit-like strokes, many of them legible.
  gpu  the same digits and model at batch 256 for 20,000 steps, on every visible GPU.
  tpu  as gpu at batch 1024, on a TPU with bfloat16 (the likelihood stays float32) and many steps per call.

Its 523,776 weights overfit the 4,500 training digits: without the penalty (--config.model.l2=0) the held-out NLL
was 1.4 nats worse after 12,000 steps in our runs, and at lr 1e-2 it rose again after 4,000 steps.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "fvsbn"
  m.l2 = 1e-4  # l2 * sum of squared weights added to every example's loss (a Gaussian prior; 0: none)
  m.optimizer = "adam"  # adam | sgd (plain gradient descent, for tests)
  m.lr = 3e-3  # learning rate
  return m


VARIANTS = {
    "cpu": {"steps": 10_000, "log_every": 500, "sample_every": 2500, "checkpoint_every": 2500, **common.CPU},
    "gpu": {"batch_size": 256, "steps": 20_000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "fvsbn")
