"""Restricted Boltzmann machine (Smolensky 1986; Hinton 2002) on binarised digits, trained by contrastive
divergence (CD-k) or persistent CD (Tieleman 2008), its likelihood estimated by AIS (Salakhutdinov & Murray 2008).

Run, then estimate the held-out log-likelihood (AIS, 100 runs of 14,500 distributions):
  python -m launch.train --config=launch/configs/rbm.py:cpu --workdir=/tmp/rbm
  python -m launch.evaluate --workdir=/tmp/rbm --metrics=nll

Variants:
  cpu   the embedded digits (32x32, dynamically binarised), 500 hidden units, PCD-1, batch 64 (docs/likelihood.md
        has the time and the held-out figure it reaches).
  gpu   MNIST from TFDS at 28x28, on every visible GPU.
  tpu   as gpu, on a TPU with bfloat16 matrix products and several steps per compiled call.

CD-k instead of PCD: --config.model.training=cd --config.model.gibbs_steps=10.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "rbm"
  m.hidden = 500  # hidden units (the visible units are the pixels)
  m.training = "pcd"  # cd (chains start at the data) | pcd (persistent chains, one per example of the batch)
  m.gibbs_steps = 1  # k: Gibbs sweeps per step (CD-k, PCD-k)
  m.lr = 0.01  # SGD on the mean gradient per example (0.05 gave a rougher model whose AIS estimate did not settle)
  m.lr_decay = "linear"  # none | linear (to 0 at the last step)
  m.momentum = 0.9  # after momentum_steps
  m.initial_momentum = 0.5  # for the first momentum_steps steps (Hinton's guide)
  m.momentum_steps = 500
  m.weight_cost = 2e-4  # L2 cost on the weights (not the biases)
  m.init_std = 0.01  # weights start from N(0, init_std²)
  m.sample_steps = 1000  # Gibbs sweeps per sample, from the base-rate model
  m.strip_every = 50  # sweeps between frames of the Gibbs-chain strip in TensorBoard
  return m


VARIANTS = {
    "cpu": {"steps": 20_000, "log_every": 500, "sample_every": 5000, "checkpoint_every": 5000, **common.CPU},
    "gpu": {"data": "tfds:mnist", "resolution": 28, "batch_size": 128, "steps": 100_000, **common.LARGE_RUN,
            **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "rbm")
