"""Deep belief network (Hinton, Osindero & Teh 2006) on binarised digits: three RBMs trained greedily by persistent
CD, one stage each, then the unrolled network fine-tuned as a classifier on 1,000 labelled digits.

Run, then score the fine-tuned classifier on the held-out digits:
  python -m launch.train --config=launch/configs/dbn.py:cpu --workdir=/tmp/dbn
  python -m launch.evaluate --workdir=/tmp/dbn --metrics=error

The same network from random weights, fine-tuned on the same 1,000 labels for the same number of steps:
  python -m launch.train --config=launch/configs/dbn.py:cpu --workdir=/tmp/dbn_random \
      --config.model.pretrain=false --config.steps=5000

Variants:
  cpu   the embedded digits (32x32, dynamically binarised for the RBMs), layers 500-500-1000, 5,000 PCD-1 steps per
        layer, then 5,000 fine-tuning steps on 1,000 of the training digits' labels, 100 per class: about 2
        minutes on 2 cores, 8.8% held-out error against 13.6% for the same network from random weights
        (docs/boltzmann.md).
  gpu   MNIST from TFDS at 28x28 with the paper's 500-500-2000 and every label, on every visible GPU.
  tpu   as gpu, on a TPU with bfloat16 matrix products and several steps per compiled call.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "dbn"
  m.layers = "500,500,1000"  # hidden units of each RBM, bottom first (Hinton et al. 2006: 500,500,2000)
  m.layer_steps = 5000  # CD steps of each RBM; the run's remaining steps fine-tune
  m.pretrain = True  # false: no RBM training, the classifier starts from random weights (the baseline)
  m.training = "pcd"  # each RBM: cd (chains start at its data) | pcd (persistent chains, one per example)
  m.gibbs_steps = 1  # k of CD-k / PCD-k
  m.lr = 0.01  # SGD of the RBMs, on the mean gradient per example
  m.lr_decay = "linear"  # none | linear (to 0 at each layer's last step)
  m.momentum = 0.9  # after momentum_steps of each layer
  m.initial_momentum = 0.5
  m.momentum_steps = 500
  m.weight_cost = 2e-4  # L2 cost on the RBMs' weights
  m.init_std = 0.01  # RBM weights start from N(0, init_std²)
  m.finetune_lr = 1e-3  # Adam, fine-tuning the classifier
  m.sample_steps = 1000  # Gibbs sweeps in the top RBM per sample
  return m


VARIANTS = {
    "cpu": {"steps": 20_000, "input.labelled": 1000, "log_every": 500, "sample_every": 5000,
            "checkpoint_every": 5000, **common.CPU},
    "gpu": {"data": "tfds:mnist", "resolution": 28, "batch_size": 128, "steps": 100_000, "model.layers": "500,500,2000",
            "model.layer_steps": 25_000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "dbn")
