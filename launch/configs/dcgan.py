"""DCGAN, and the fully connected GAN it grew from, with the classic GAN losses (minimax, non-saturating, LSGAN,
WGAN, WGAN-GP, hinge) and optional cGAN.

Run:
  python -m launch.train --config=launch/configs/dcgan.py:cpu --workdir=/tmp/dcgan
  python -m launch.train --config=launch/configs/dcgan.py:cpu_mlp --workdir=/tmp/mlpgan

Variants:
  cpu      the embedded digits at 32x32, batch 64, 2,000 steps (132 s on 2 cores of an Intel Xeon with AMX).
           Expected: most digits of the final EMA grid recognisable.
  cpu_mlp  the fully connected GAN of Goodfellow et al. 2014 (model.architecture=mlp, docs/vanilla_gan.md) on the
           embedded digits at 32x32: G 256-512-1024 with layer norm, D 1024-512-256 with dropout 0.5, Adam(6e-4,
           β1=0.5), batch 64, 12,000 steps (522 s on 2 shared cores of an AMD EPYC). Expected: most digits of the
           final EMA grid recognisable, with speckled strokes; FID 7.8 with the embedded classifier (10,000
           images; the cpu DCGAN's is 15.0). It sets lr for the non-saturating loss: with another
           --config.model.loss, set --config.model.lr too.
  gpu      64x64 colour images (e.g. a folder or TFRecords prepared with pipelines.prepare), batch 128, the
           paper's widths; on every visible GPU.
  tpu      as gpu, on a TPU with bfloat16 and several steps per compiled call.

Choose the loss with --config.model.loss=wgan-gp (its optimiser settings follow the paper unless set), class
conditioning with --config.model.conditional=true, and the fully connected networks of the original GAN paper with
--config.model.architecture=mlp (widths g_mlp_widths, d_mlp_widths; dropout in D d_dropout).
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
  m.architecture = "conv"  # conv (DCGAN) | mlp (fully connected, Goodfellow et al. 2014)
  m.g_mlp_widths = "256,512,1024"  # mlp: widths of G's hidden Dense layers, from z towards the image
  m.d_mlp_widths = "1024,512,256"  # mlp: widths of D's hidden Dense layers, from the image towards the logit
  # mlp: rate of dropout on D's hidden units in the training losses; None: 0.5 for mlp (the paper's), 0 for conv.
  m.d_dropout = ml_collections.config_dict.placeholder(float)
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
    "cpu_mlp": {"steps": 12_000, "model.architecture": "mlp", "model.g_norm": "layer", "model.d_norm": "none",
                "model.lr": 6e-4, "sample_every": 1000, "checkpoint_every": 2000, **common.CPU},
    "gpu": {"data": "folder:/path/to/images", "resolution": 64, "channels": 3, "flip": True, "batch_size": 128,
            "steps": 100_000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "dcgan")
