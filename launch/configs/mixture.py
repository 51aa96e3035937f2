"""A mixture of K products of Bernoullis over binarised digits (models/classic/mixture.py): the simplest latent-
variable model, with an exact log-likelihood.

Run, then score the held-out digits' exact likelihood:
  python -m launch.train --config=launch/configs/mixture.py:cpu --workdir=/tmp/mixture
  python -m launch.evaluate --workdir=/tmp/mixture --metrics=nll

Variants:
  cpu  the embedded digits, dynamically binarised, 64 components, batch 64, 4,000 steps: 149.8 nats/image on the
       500 held-out digits (exact), in 15 s on 2 CPU cores; its samples are the components' mean images, clean
       but blurred prototypes of the digits.
  gpu  the same digits and model at batch 256 for 20,000 steps, on every visible GPU.
  tpu  as gpu at batch 1024, on a TPU with bfloat16 (the likelihood stays float32) and many steps per call.

Trained by gradient on the exact likelihood, some components lose all their images and stop learning (14 of 64 in
the run above); more components (--config.model.components=256) fit the 4,500 training digits better, but the
held-out likelihood gains about 1 nat.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "mixture"
  m.components = 64  # K mixture components, each a product of Bernoullis over the pixels
  m.optimizer = "adam"  # adam | sgd (plain gradient descent, for tests)
  m.lr = 0.1  # learning rate
  return m


VARIANTS = {
    "cpu": {"steps": 4000, "log_every": 500, "sample_every": 1000, "checkpoint_every": 1000, **common.CPU},
    "gpu": {"batch_size": 256, "steps": 20_000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "mixture")
