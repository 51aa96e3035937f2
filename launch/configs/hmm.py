"""A hidden Markov model over the rows of binarised digits (Rabiner 1989; models/classic/hmm.py): one hidden state
per row, Bernoulli pixels given the state, an exact log-likelihood by the forward algorithm.

Run, then score the held-out digits' exact likelihood:
  python -m launch.train --config=launch/configs/hmm.py:cpu --workdir=/tmp/hmm
  python -m launch.evaluate --workdir=/tmp/hmm --metrics=nll

Variants:
  cpu  the embedded digits, dynamically binarised, 64 states, batch 64, 8,000 steps: 117.1 nats/image on the 500
       held-out digits (exact), in 45 s of training on 2 CPU cores; its samples are rows of strokes stacked
       down the image, few of them legible digits: the chain knows its last row's state, not its place.
  gpu  the same digits and model at batch 256 for 20,000 steps, on every visible GPU.
  tpu  as gpu at batch 1024, on a TPU with bfloat16 (the likelihood stays float32) and many steps per call.

More states fit better and cost K² per row: after 4,000 steps at lr 0.03, 32 states reached 126.1 nats held out,
64 states 119.1 and 128 states 113.7 in our runs (the last at several times the time per step). Twice the steps
(16,000) gain 0.2 nats.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "hmm"
  m.states = 64  # K hidden states; the same K per-state pixel probabilities emit every row
  m.optimizer = "adam"  # adam | sgd (plain gradient descent, for tests)
  m.lr = 0.05  # learning rate
  return m


VARIANTS = {
    "cpu": {"steps": 8000, "log_every": 500, "sample_every": 2000, "checkpoint_every": 2000, **common.CPU},
    "gpu": {"batch_size": 256, "steps": 20_000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "hmm")
