"""DCGAN with the classic GAN losses (minimax, non-saturating, LSGAN, WGAN, WGAN-GP, hinge) and optional cGAN.

Run:
  python -m launch.train --config=launch/configs/dcgan.py:cpu --workdir=/tmp/dcgan

Variants:
  cpu  the embedded digits at 32x32, batch 64, 2,000 steps (132 s on 2 cores of an Intel Xeon with AMX).
       Expected: most digits of the final EMA grid recognisable.
  gpu  64x64 colour images (e.g. a folder or TFRecords prepared with pipelines.prepare), batch 128, the paper's
       widths; on every visible GPU.
  tpu  as gpu, on a TPU with bfloat16 and several steps per compiled call.

Choose the loss with --config.model.loss=wgan-gp (its optimiser settings follow the paper unless set), and class
conditioning with --config.model.conditional=true.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "dcgan"
  m.loss = "nonsaturating"  # minimax | nonsaturating | lsgan | wgan | wgan-gp | hinge
  m.latent_dim = 100
  m.g_width = 64  # channels of the last generator block; doubled towards 4x4
  m.d_width = 64  # channels of the first discriminator block; doubled towards 4x4
  m.kernel = 4  # (transposed) convolution kernel size
  m.g_norm = "batch"  # batch | layer | none
  m.d_norm = "batch"  # batch | layer | none (WGAN-GP and R1 need layer or none)
  m.conditional = False  # class-conditional (cGAN) when the data has labels
  m.conditioning = "concat"  # how D sees the label: concat (one-hot maps) | projection
  # Set from the loss's preset when None (see models/dcgan.py).
  m.optimizer = ml_collections.config_dict.placeholder(str)  # adam | rmsprop | sgd
  m.lr = ml_collections.config_dict.placeholder(float)
  m.beta1 = ml_collections.config_dict.placeholder(float)
  m.beta2 = ml_collections.config_dict.placeholder(float)
  m.n_critic = ml_collections.config_dict.placeholder(int)
  m.clip = 0.01  # WGAN weight clipping
  m.gp_weight = 10.0  # WGAN-GP penalty weight λ
  m.r1_gamma = 0.0  # optional R1 penalty on reals
  return m


VARIANTS = {
    "cpu": {"steps": 2000, "model.g_width": 32, "model.d_width": 32, "sample_every": 250, **common.CPU},
    "gpu": {"data": "folder:/path/to/images", "resolution": 64, "channels": 3, "flip": True, "batch_size": 128,
            "steps": 100_000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "dcgan")
