"""DCGAN with the classic GAN losses (minimax, non-saturating, LSGAN, WGAN, WGAN-GP, hinge) and optional cGAN.

Run:
  python -m launch.train --config=launch/configs/dcgan.py:cpu --workdir=/tmp/dcgan

Variants:
  cpu  the embedded digits at 32x32, batch 64, 2,000 steps; about 4 minutes on 2 CPU cores. Digits become
       recognisable in the EMA sample grid from about step 1,500; most are by step 2,000.
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
  m.optimizer = ml_collections.config_dict.placeholder(str)
  m.lr = ml_collections.config_dict.placeholder(float)
  m.beta1 = ml_collections.config_dict.placeholder(float)
  m.beta2 = ml_collections.config_dict.placeholder(float)
  m.n_critic = ml_collections.config_dict.placeholder(int)
  m.clip = 0.01  # WGAN weight clipping
  m.gp_weight = 10.0  # WGAN-GP penalty weight λ
  m.r1_gamma = 0.0  # optional R1 penalty on reals
  return m


def get_config(variant="cpu"):
  c = common.base()
  c.model = model()
  if variant == "cpu":
    c.steps = 2000
    c.model.g_width = 32
    c.model.d_width = 32
    c.log_every = 100
    c.sample_every = 250
    c.checkpoint_every = 500
    # float32: CPUs without AVX512_BF16 emulate bfloat16 convolutions about 8x slower than float32.
    c.runtime = common.runtime(strategy="cpu", precision="float32", steps_per_loop=10)
  elif variant in ("gpu", "tpu"):
    c.data = "folder:/path/to/images"
    c.resolution = 64
    c.channels = 3
    c.flip = True
    c.batch_size = 128
    c.steps = 100_000
    c.log_every = 500
    c.sample_every = 5000
    c.checkpoint_every = 5000
    if variant == "gpu":
      c.runtime = common.runtime(strategy="auto", precision="mixed_float16", xla=True, steps_per_loop=50)
    else:
      c.batch_size = 1024
      c.histogram_every = 0  # histograms move every weight and gradient to the host
      c.runtime = common.runtime(strategy="tpu", precision="mixed_bfloat16", xla=True, steps_per_loop=100)
  else:
    raise ValueError(f"unknown variant {variant!r}: use cpu, gpu or tpu")
  return c
