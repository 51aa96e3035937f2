"""StyleGAN2 with adaptive discriminator augmentation (ADA), XLA-compiled on every strategy.

Run:
  python -m launch.train --config=launch/configs/stylegan2.py:cpu --workdir=/tmp/sg2
  python -m launch.sample --workdir=/tmp/sg2 --truncation=0.7 --num=64 --out=grid.png

Variants:
  cpu      the embedded digits at 32x32, batch 32, narrow networks (64 feature maps at most), 800 steps, about
           9 minutes on 2 CPU cores. Expected: varied, mostly recognisable digits in the final EMA grid. Its
           generator upsamples by nearest-neighbour copies and ends in tanh (docs/stylegan2.md says why).
  gpu      256x256, the paper's "paper256" settings (Karras et al. 2020, ADA, Table 3 / appendix): batch 64 over
           8 GPUs, γ = 1, lr 0.0025, 16384/512 feature maps, minibatch-stddev groups of 8, EMA half-life 20 kimg,
           ADA target 0.6, 25,000 kimg.
           float16 in the 4 highest-resolution blocks with conv outputs clamped to ±256, XLA on.
  gpu1024  1024x1024, StyleGAN2 config F: batch 32 over 8 GPUs, γ = 10, lr 0.002, 32768/512 feature maps,
           EMA half-life 10 kimg. On fewer GPUs the global batch stays the same and the per-GPU batch grows
           (it must stay a multiple of mbstd_group_size).
  tpu      as gpu, on a TPU with bfloat16 and several steps per compiled call.

ADA: --config.model.augment=ada (adaptive, default), fixed (p = augment_p throughout) or none. Truncation, style
mixing and interpolation are options of launch.sample (--truncation, --mix_seed/--mix_layer, --interpolate).
StyleGAN's (2018) AdaIN generator instead of weight demodulation: --config.model.style_block=adain (the cpu variant
reached FID 48-71 on two seeds against 41-52 with the default; docs/stylegan2.md compares the two).
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "stylegan2"
  m.z_dim = 512
  m.w_dim = 512
  m.mapping_layers = 8
  m.mapping_lr_mul = 0.01  # learning-rate multiplier of the mapping network
  m.channel_base = 32768  # feature maps at resolution r: min(channel_base / r, channel_max)
  m.channel_max = 512
  m.style_block = "modulated"  # G's synthesis layers: modulated (StyleGAN2's weight demodulation) | adain (StyleGAN)
  m.modconv = "scaled"  # modulated convolution: scaled (activations scaled around one conv) | grouped
  m.filter_impl = "auto"  # low-pass filters: depthwise convolutions | slices | auto (slices under XLA)
  m.synthesis_up = "filtered"  # G's 2x up-convolutions: filtered (transposed conv + low-pass) | nearest
  m.output_activation = "linear"  # G's output: linear (the reference's) | tanh
  m.reduced_precision_res = 4  # the top N resolutions compute in the runtime's bf16/fp16; the rest in float32
  m.conv_clamp = 256.0  # clamp conv outputs to ±conv_clamp (None: off); keeps float16 finite
  m.mbstd_group_size = 4  # minibatch standard deviation over groups of consecutive examples
  m.mbstd_channels = 1
  m.conditional = False  # class-conditional when the data has labels (G: embedding; D: projection)
  m.style_mixing = 0.9  # probability of mixing two latents in a training example
  m.r1_gamma = 10.0  # R1 weight γ
  m.r1_interval = 16  # lazy R1: every 16 steps, loss x 16 (1: every step, in the D phase)
  m.pl_weight = 2.0  # path-length regularisation weight (0: off)
  m.pl_interval = 4  # lazy path length: every 4 steps, loss x 4
  m.pl_decay = 0.01  # running-mean decay of the path length
  m.lr = 0.002
  m.beta1 = 0.0
  m.beta2 = 0.99
  m.epsilon = 1e-8
  m.augment = "ada"  # ada | fixed | none
  m.augment_p = 0.0  # initial p (ada) or the fixed p
  m.augment_ops = "bgc"  # bgc | bg | b | c | comma-separated names (see models/stylegan2/augment.py)
  m.ada_target = 0.6  # target of r_t = E[sign(D(real))]
  m.ada_interval = 4  # steps between p updates
  m.ada_kimg = 500.0  # p can move from 0 to 1 in this many thousand images
  m.w_avg_beta = 0.995  # running mean of w for truncation
  m.w_avg_samples = 64  # latents per step for that running mean
  return m


VARIANTS = {
    # Nearest-neighbour up-convolutions and tanh: with the reference's filtered ones and linear output the
    # generator collapses to a single digit at this size (docs/stylegan2.md).
    "cpu": {"batch_size": 32, "steps": 800, "model.z_dim": 128, "model.w_dim": 128,
            "model.channel_base": 1024, "model.channel_max": 64,  # 32x32: 32 maps; 16x16 and below: 64
            "model.synthesis_up": "nearest", "model.output_activation": "tanh",
            "model.r1_gamma": 0.05,  # ADA's heuristic 0.0002 * 32² / 32 ≈ 0.006, raised for the short schedule
            "model.lr": 0.0025,
            "model.ada_kimg": 100.0,  # the embedded set has 4,500 digits: let p react within a short run
            "sample_every": 200, "checkpoint_every": 400, "histogram_every": 0, **common.CPU},
    "gpu": {"data": "folder:/path/to/images", "channels": 3, "flip": True, **common.LARGE_RUN, **common.GPU,
            "resolution": 256, "steps": 25_000_000 // 64,  # at the default batch, 64
            "model.channel_base": 16384,
            "model.mbstd_group_size": 8, "model.r1_gamma": 1.0, "model.lr": 0.0025, "ema_halflife_kimg": 20.0,
            "ema_rampup": None},
}
VARIANTS["gpu1024"] = {"data": "folder:/path/to/images", "channels": 3, "flip": True, **common.LARGE_RUN,
                       **common.GPU, "resolution": 1024, "batch_size": 32, "steps": 25_000_000 // 32,
                       "ema_rampup": None}
VARIANTS["tpu"] = {**VARIANTS["gpu"], **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "stylegan2")
