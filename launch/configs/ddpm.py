"""DDPM (Ho et al. 2020): ε-prediction (or v), linear or cosine schedule, T = 1000; DDIM or ancestral sampling.

Run:
  python -m launch.train --config=launch/configs/ddpm.py:cpu --workdir=/tmp/ddpm
  python -m launch.sample --workdir=/tmp/ddpm --sampler=ddpm --steps=100 --num=64 --out=/tmp/ddpm/grid.png

Variants:
  cpu       the embedded digits at 32x32, 1 channel, class-conditional with 10% label dropout (so classifier-free
            guidance works: --label=3 --guidance=2 in launch.sample), a small U-Net (widths 16-32, one block per
            level, attention at 8x8), batch 32, float32, 1,800 steps: 9.6 minutes on 2 idle CPU cores. The EMA
            grids (ancestral sampling, 50 steps; one class per column) show recognisable digits at the end; DDIM
            with η = 0 gives wobblier strokes this early in training.
  cpu_uncond  as cpu, unconditional.
  gpu       CIFAR-10 (tfds:cifar10), the paper's network (128 channels, 1,2,2,2, two blocks, attention at 16x16,
            dropout 0.1), batch 128, lr 2e-4 with 5,000 warm-up steps, EMA 0.9999 per step (half-life 887 kimg),
            800k steps. The paper reports FID 3.17 with its 1000-step ancestral sampler.
  gpu64     64x64 faces from a folder prepared with pipelines.prepare (e.g. FFHQ or CelebA at 64x64), channels
            1,2,2,2 (128 base), attention at 16x16, dropout 0.1, batch 128.
  tpu       as gpu, bfloat16 with XLA, batch 512, 200k steps, 100 steps per compiled call.

Class conditioning: --config.model.conditional=true (with label_dropout for classifier-free guidance); the cosine
schedule: --config.model.schedule=cosine; v-prediction: --config.model.prediction=v. The sampler of the training
grids: --config.model.sampler=ddpm|ddim|euler|heun --config.model.sample_steps=N.
"""

import math

import ml_collections

from launch.configs import common


def network(m):
  """The U-Net keys shared by ddpm and edm (models/diffusion/unet.py)."""
  m.channels = 128  # width of the first level
  m.channel_mults = "1,2,2,2"  # width multiplier per level, comma-separated; each level halves the size
  m.num_blocks = 2  # residual blocks per encoder level (the decoder has one more)
  m.attention_resolutions = "16"  # feature-map sides with self-attention, comma-separated ("" for none)
  m.num_heads = 1
  m.dropout = 0.1
  m.noise_embedding = "positional"  # positional (sinusoidal) | fourier
  m.fourier_scale = 16.0
  m.scale_shift = False  # ADM's scale-shift GroupNorm in residual blocks
  m.skip_scale = math.sqrt(0.5)  # residual sum scaling (DDPM++)
  m.patch_size = 1  # >1: the U-Net works on p x p pixel patches (space-to-depth), at about 1/p² of the cost
  m.conditional = False  # class-conditional when the data has labels
  m.label_dropout = 0.1  # labels replaced by the null class while training (classifier-free guidance)


def optimizer(m, lr, warmup_kimg):
  m.lr = lr
  m.lr_warmup_kimg = warmup_kimg  # linear learning-rate warm-up, in thousands of images
  m.beta1 = 0.9
  m.beta2 = 0.999
  m.epsilon = 1e-8


def sampling(m, sampler, steps):
  """Defaults of model.generate (training grids and launch.sample); launch.sample's flags override them."""
  m.sampler = sampler  # ddpm | ddim | euler | heun
  m.sample_steps = steps
  m.guidance = 1.0  # classifier-free guidance w: 1 conditional, 0 unconditional, >1 stronger
  m.eta = 0.0  # DDIM stochasticity (0: deterministic, 1: ancestral)
  m.churn = 0.0  # EDM S_churn (euler, heun): noise added back per step, 0 for the deterministic ODE
  m.s_tmin = 0.0  # churn only where s_tmin <= σ <= s_tmax
  m.s_tmax = float("inf")
  m.s_noise = 1.0  # scale of the added noise
  m.sigma_min = 0.002  # EDM time-step schedule (euler, heun; clamped to a DDPM table's range)
  m.sigma_max = 80.0
  m.rho = 7.0
  m.clip_denoised = False  # clip every denoised estimate to [-1, 1] while sampling


def model():
  m = ml_collections.ConfigDict()
  m.name = "ddpm"
  m.schedule = "linear"  # linear | cosine
  m.prediction = "eps"  # eps | v
  m.num_timesteps = 1000
  m.beta_start = 1e-4  # linear schedule
  m.beta_end = 0.02
  network(m)
  optimizer(m, lr=2e-4, warmup_kimg=640.0)  # 5,000 steps of 128
  sampling(m, "ddim", 50)
  m.clip_denoised = True  # as the paper's sampler does
  return m


def cpu_settings(c):
  """The small CPU setting shared by the ddpm and edm cpu variants.

  Where the time goes on a CPU: the 32x32 level. Its convolutions have few channels, so the element-wise passes
  (GroupNorm, SiLU and their gradients) cost as much as the convolutions; channel multipliers 1,1,2 keep the
  up-sampling block into 32x32 at 16 channels.
  """
  c.batch_size = 32
  c.steps = 1800
  c.model.channels = 16
  c.model.channel_mults = "1,1,2"
  c.model.num_blocks = 1
  c.model.attention_resolutions = "8"
  c.model.dropout = 0.0
  c.model.lr = 2e-3
  c.model.lr_warmup_kimg = 3.2  # 100 steps
  c.log_every = 100
  c.sample_every = 900
  c.sample_grid = 50  # five rows of the ten classes; each grid costs as much as ~70 training steps
  c.checkpoint_every = 900
  c.histogram_every = 900
  c.ema_halflife_kimg = 10.0
  c.ema_rampup = 0.05
  # float32: CPUs without AVX512_BF16 emulate bfloat16 convolutions about 10x slower than float32.
  c.runtime = common.runtime(strategy="cpu", precision="float32", steps_per_loop=10)


def gpu_settings(c, variant):
  if variant in ("gpu", "tpu"):
    c.data = "tfds:cifar10"
    c.resolution = 32
  else:
    c.data = "folder:/path/to/faces64"
    c.resolution = 64
  c.channels = 3
  c.flip = True
  c.log_every = 500
  c.sample_every = 10_000
  c.checkpoint_every = 10_000
  if variant == "tpu":
    c.histogram_every = 0  # histograms move every weight and gradient to the host
    c.runtime = common.runtime(strategy="tpu", precision="mixed_bfloat16", xla=True, steps_per_loop=100)
  else:
    c.runtime = common.runtime(strategy="auto", precision="mixed_float16", xla=True, steps_per_loop=50)


def get_config(variant="cpu"):
  c = common.base()
  c.model = model()
  if variant in ("cpu", "cpu_uncond"):
    cpu_settings(c)
    c.model.sampler = "ddpm"  # ancestral: its fresh noise per step hides an early model's errors better than DDIM
    c.model.sample_steps = 50
    c.model.conditional = variant == "cpu"
  elif variant in ("gpu", "gpu64", "tpu"):
    gpu_settings(c, variant)
    c.batch_size = 512 if variant == "tpu" else 128
    c.steps = 800_000 if variant != "tpu" else 200_000
    c.ema_halflife_kimg = 887.0  # the paper's 0.9999 per step at batch 128
    c.ema_rampup = None
  else:
    raise ValueError(f"unknown variant {variant!r}: use cpu, cpu_uncond, gpu, gpu64 or tpu")
  return c
