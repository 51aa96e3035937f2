"""Config helpers shared by the two diffusion families, ``ddpm.py`` and ``edm.py`` (not a config file itself)."""

import math

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


# The small CPU setting shared by the ddpm and edm cpu variants. Where the time goes on a CPU: the 32x32 level.
# Its convolutions have few channels, so the element-wise passes (GroupNorm, SiLU and their gradients) cost as
# much as the convolutions; channel multipliers 1,1,2 keep the up-sampling block into 32x32 at 16 channels.
CPU = {"batch_size": 32, "steps": 1800, "model.channels": 16, "model.channel_mults": "1,1,2",
       "model.num_blocks": 1, "model.attention_resolutions": "8", "model.dropout": 0.0, "model.lr": 2e-3,
       "model.lr_warmup_kimg": 3.2,  # 100 steps
       "sample_every": 900,
       "sample_grid": 50,  # five rows of the ten classes; each grid costs as much as ~70 training steps
       "checkpoint_every": 900, "histogram_every": 900, **common.CPU}


def accelerator(variant):
  """The data and runtime of the gpu, gpu64 and tpu variants."""
  if variant in ("gpu", "tpu"):
    data = {"data": "tfds:cifar10"}
  else:
    data = {"data": "folder:/path/to/faces64", "resolution": 64}
  return {**data, "channels": 3, "flip": True, **common.large_run(10_000),
          **(common.TPU if variant == "tpu" else common.GPU)}
