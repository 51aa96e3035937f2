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

import ml_collections

from launch.configs import common
from launch.configs import shared_diffusion


def model():
  m = ml_collections.ConfigDict()
  m.name = "ddpm"
  m.schedule = "linear"  # linear | cosine
  m.prediction = "eps"  # eps | v
  m.num_timesteps = 1000
  m.beta_start = 1e-4  # linear schedule
  m.beta_end = 0.02
  shared_diffusion.network(m)
  shared_diffusion.optimizer(m, lr=2e-4, warmup_kimg=640.0)  # 5,000 steps of 128
  shared_diffusion.sampling(m, "ddim", 50)
  m.clip_denoised = True  # as the paper's sampler does
  return m


# Ancestral sampling on CPUs: its fresh noise per step hides an early model's errors better than DDIM.
_CPU = {**shared_diffusion.CPU, "model.sampler": "ddpm"}
VARIANTS = {
    "cpu": {**_CPU, "model.conditional": True},
    "cpu_uncond": _CPU,
    "gpu": {**shared_diffusion.accelerator("gpu"), "batch_size": 128, "steps": 800_000,
            "ema_halflife_kimg": 887.0, "ema_rampup": None},  # the paper's 0.9999 per step at batch 128
}
VARIANTS["gpu64"] = {**VARIANTS["gpu"], **shared_diffusion.accelerator("gpu64")}
VARIANTS["tpu"] = {**VARIANTS["gpu"], **shared_diffusion.accelerator("tpu"), "batch_size": 512, "steps": 200_000}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "ddpm")
