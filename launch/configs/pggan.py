"""Progressive GAN (Karras et al. 2018): grows G and D from 4x4 to the target resolution, fading each new one in.

Run:
  python -m launch.train --config=launch/configs/pggan.py:cpu --workdir=/tmp/pggan
  python -m launch.sample --workdir=/tmp/pggan --num=64 --out=/tmp/pggan/grid.png

Variants:
  cpu      the embedded digits, 4x4 -> 32x32, narrow networks (64 channels up to 16x16, 32 at 32x32), latent
           128, batch 16, float32, 2,000 steps (32 kimg), about 9 minutes on 2 CPU cores. Expected: varied digit
           shapes from the 8x8 stage on and a final 32x32 grid of digits, mostly loopy ones (docs/pggan.md).
  gpu      CelebA-HQ-style faces at 256x256 from TFRecords prepared with pipelines.prepare, the paper's networks
           (latent 512, widths 512 ... 64), WGAN-GP with drift, Adam(0.001, 0, 0.99), batch 16, mirror
           augmentation, the paper's schedule (800 kimg stable + 800 kimg fade per resolution) and G EMA 0.999
           per step; 12,000 kimg. Expected: faces like the paper's 256x256 CelebA-HQ results.
  gpu1024  as gpu at 1024x1024 (widths down to 16), 15,000 kimg; the paper's CelebA-HQ setting except the
           batch size (see docs/pggan.md). Expected: the paper's 1024x1024 CelebA-HQ faces.
  tpu      as gpu on a TPU: bfloat16, the whole step compiled, batch 64, 100 steps per compiled call.

Every variant starts at 4x4 and logs model/lod, model/alpha and model/resolution, and a line when a stage (a
stable resolution or a fade) starts. Change the schedule with --config.model.stable_kimg / fade_kimg, the loss
with --config.model.loss=nonsaturating, batch sizes per resolution with
--config.model.batch_by_resolution=4:64,8:64,16:32,32:16 (keep --config.steps in step with it: it counts steps,
whose size now varies), and learning rates per resolution with --config.model.lr_by_resolution=128:0.0015,256:0.002.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "pggan"
  m.latent_dim = 512
  m.width_base = 16384  # feature maps at resolution R: min(width_base / R, width_max)
  m.width_max = 512
  m.start_resolution = 4
  m.stable_kimg = 800.0  # images (thousands) at each resolution before the next one fades in
  m.fade_kimg = 800.0  # images (thousands) over which a new resolution fades in
  m.loss = "wgan-gp"  # wgan-gp (with drift, as in the paper) | nonsaturating
  m.gp_weight = 10.0  # WGAN-GP λ
  # Gradient penalties measured on the target-size image (the reference code: a critic 2^(levels - level) times
  # steeper at low levels) or on the current level's image.
  m.gp_resolution = "target"
  m.drift = 0.001  # ε_drift: weight of D(real)² in the critic loss
  m.r1_gamma = 0.0  # optional R1 penalty (with the nonsaturating loss)
  m.mbstd_group = 4  # examples per minibatch-stddev group
  m.lr = 0.001
  m.batch_by_resolution = ""  # e.g. "4:64,8:64,16:32": global batch while at that resolution (others: batch_size)
  m.lr_by_resolution = ""  # e.g. "128:0.0015,256:0.002": rate while the networks run at that resolution
  m.beta1 = 0.0
  m.beta2 = 0.99
  m.adam_epsilon = 1e-8
  m.reset_adam = True  # restart Adam (moments and bias correction) when a fade starts and ends, as the reference code
  m.n_critic = 1  # critic updates per generator update (with more, a step's G update sees the next step's lod)
  m.conditional = False  # class-conditional when the data has labels
  m.conditioning = "acgan"  # acgan (auxiliary classifier, as in the paper's CIFAR-10 runs) | projection
  m.acgan_weight = 1.0
  return m


VARIANTS = {
    # 5 kimg stable per resolution and 5 kimg fades (312.5 steps each at batch 16): 32x32 is faded in by step
    # 1,875, then trained 125 steps. Gradient penalties at the level's resolution: with the reference's
    # target-resolution convention this short schedule's critic falls behind and G collapses (docs/pggan.md).
    "cpu": {"batch_size": 16, "model.latent_dim": 128, "model.width_base": 1024, "model.width_max": 64,
            "model.stable_kimg": 5.0, "model.fade_kimg": 5.0, "model.gp_resolution": "level",
            # A short run: the paper's 0.999 per step would lag ~1,000 steps behind the growing networks.
            "ema_halflife_kimg": common.ema_halflife_kimg(0.99, 16), "ema_rampup": None,
            "steps": 2000, "log_every": 125, "histogram_every": 0, **common.CPU, "runtime.steps_per_loop": 25},
    "gpu": {"data": "tfrecord:/path/to/celebahq-256", "resolution": 256, "channels": 3, "flip": True,
            "batch_size": 16, "steps": 12_000_000 // 16, **common.large_run(10_000, log_every=1000),
            "histogram_every": 0, **common.GPU,
            "ema_halflife_kimg": common.ema_halflife_kimg(0.999, 16), "ema_rampup": None},  # the paper's 0.999
}
VARIANTS["gpu1024"] = {**VARIANTS["gpu"], "data": "tfrecord:/path/to/celebahq-1024", "resolution": 1024,
                       "steps": 15_000_000 // 16}
VARIANTS["tpu"] = {**{k: v for k, v in VARIANTS["gpu"].items() if k != "batch_size"},  # the default batch, 64
                   "steps": 12_000_000 // 64, **common.TPU, "ema_halflife_kimg": common.ema_halflife_kimg(0.999, 64)}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "pggan")
