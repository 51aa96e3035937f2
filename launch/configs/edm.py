"""EDM (Karras et al. 2022): preconditioned denoiser, log-normal σ training, Heun sampling (ρ = 7 schedule).

Run:
  python -m launch.train --config=launch/configs/edm.py:cpu --workdir=/tmp/edm
  python -m launch.sample --workdir=/tmp/edm --sampler=heun --steps=18 --num=64 --out=/tmp/edm/grid.png

Variants:
  cpu       the embedded digits at 32x32, 1 channel, class-conditional with 10% label dropout (so classifier-free
            guidance works), a small U-Net (widths 16-32, one block per level, attention at 8x8), batch 32,
            float32, 1,800 steps: 9.5 minutes on 2 idle CPU cores. The EMA grids (Heun, 18 steps with stochastic
            churn; one class per column) show recognisable digits at the end. The cpu variants sample with churn
            40 by default (the paper's ImageNet setting): the noise it adds back each step corrects an early
            model's errors, where the deterministic sampler (--churn=0) still draws wobbly strokes. Threes:
              python -m launch.sample --workdir=/tmp/edm --label=3 --guidance=2 --num=64 --out=threes.png
  cpu_uncond  as cpu, unconditional.
  gpu       CIFAR-10 (tfds:cifar10) with the paper's DDPM++ network (128 channels, 2,2,2, four blocks, attention at
            16x16, dropout 0.13), batch 512, lr 1e-3 with a 10 Mimg warm-up, EMA half-life 500 kimg with ramp-up
            0.05, 200 Mimg. The paper reports FID 1.79 (conditional) / 1.97 (unconditional) with Heun-18, using
            a non-leaking augmentation genscale doesn't have.
  gpu64     64x64 faces from a folder (e.g. FFHQ prepared with pipelines.prepare), the paper's FFHQ-64 network
            (channels 1,2,2,2, dropout 0.05), batch 256, lr 2e-4.
  tpu       as gpu, bfloat16 with XLA, 100 steps per compiled call.

Class conditioning: --config.model.conditional=true. Sampler of the training grids: --config.model.sampler=heun|
euler|ddim|ddpm with --config.model.sample_steps=N; stochastic churn: --config.model.churn=40 (with s_tmin,
s_tmax, s_noise).
"""

import ml_collections

from launch.configs import common
from launch.configs import shared_diffusion


def model():
  m = ml_collections.ConfigDict()
  m.name = "edm"
  m.sigma_data = 0.5  # σ_d: standard deviation of the data in [-1, 1]
  m.p_mean = -1.2  # training ln σ ~ N(p_mean, p_std²)
  m.p_std = 1.2
  shared_diffusion.network(m)
  m.channel_mults = "2,2,2"
  m.num_blocks = 4
  m.dropout = 0.13
  shared_diffusion.optimizer(m, lr=1e-3, warmup_kimg=10_000.0)
  shared_diffusion.sampling(m, "heun", 18)
  return m


_CPU = {**shared_diffusion.CPU,
        "model.churn": 40.0,  # Karras et al. 2022, Table 5 (ImageNet-64): S_churn 40, S_tmin 0.05, S_tmax 50
        "model.s_tmin": 0.05, "model.s_tmax": 50.0, "model.s_noise": 1.003}
VARIANTS = {
    "cpu": {**_CPU, "model.conditional": True},
    "cpu_uncond": _CPU,
    "gpu": {**shared_diffusion.accelerator("gpu"), "batch_size": 512, "steps": 390_625,  # 200 Mimg
            "ema_halflife_kimg": 500.0},
}
VARIANTS["gpu64"] = {**VARIANTS["gpu"], **shared_diffusion.accelerator("gpu64"), "batch_size": 256,
                     "steps": 781_250,  # 200 Mimg
                     "model.channel_mults": "1,2,2,2", "model.dropout": 0.05, "model.lr": 2e-4}
VARIANTS["tpu"] = {**VARIANTS["gpu"], **shared_diffusion.accelerator("tpu")}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "edm")
