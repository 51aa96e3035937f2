"""CycleGAN: unpaired image-to-image translation (Zhu et al. 2017).

Run:
  python -m launch.train --config=launch/configs/cyclegan.py:cpu --workdir=/tmp/cyclegan
  python -m launch.evaluate --workdir=/tmp/cyclegan --metrics=translation
  python -m launch.translate --workdir=/tmp/cyclegan --input=embedded:mnist:test --out=/tmp/translated.png

Variants:
  cpu  the embedded translation task: digits (embedded:mnist-a) to the other half of the digits with thickened
       strokes (embedded:mnist-b), 32x32, batch 16, a narrow generator; docs/cyclegan.md has its time and figures.
  gpu  the paper's setting: 256x256 colour images, 9 residual blocks, a 70x70 PatchGAN, e.g. horse2zebra from
       TFDS; batch 8 (the paper trains with 1; instance normalisation makes the batch size matter little).
  tpu  as gpu, on a TPU with bfloat16 and several steps per compiled call.

Data: --config.data=unpaired:SPEC_A|SPEC_B, any two sources (pipelines/sources.py), e.g. two image folders.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "cyclegan"
  m.g_width = 64  # channels of the generator's first convolution; doubled at each downsampling
  m.d_width = 64  # channels of the discriminator's first convolution
  m.downsamplings = 2  # stride-2 convolutions before the residual blocks (and transposed ones after)
  m.residual_blocks = ml_collections.config_dict.placeholder(int)  # None: 9 at 256x256 and above, else 6
  m.d_layers = ml_collections.config_dict.placeholder(int)  # None: 3 (70x70 patches) at 64x64 and above, else 2
  m.cycle_weight = 10.0  # λ of the cycle-consistency L1 terms
  m.identity_weight = 0.5  # identity L1 terms, as a fraction of λ (0: off)
  m.pool_size = 50  # generated images each discriminator's pool keeps (0: off)
  m.lr = 2e-4
  m.beta1 = 0.5
  m.beta2 = 0.999
  m.decay_start = 0.5  # fraction of the run at constant learning rate; then linearly down to 0
  return m


VARIANTS = {
    # No identity terms: they ask G(b) = b, but this task's G thickens, b as well; with them G's strokes come out
    # thinner than the truth (docs/cyclegan.md).
    "cpu": {"data": "unpaired:embedded:mnist-a|embedded:mnist-b", "batch_size": 16, "steps": 1500,
            "model.g_width": 16, "model.d_width": 32, "model.identity_weight": 0.0, "log_every": 50,
            "sample_every": 250, "histogram_every": 0, **common.CPU},
    "gpu": {"data": "unpaired:tfds:cycle_gan/horse2zebra:trainA|tfds:cycle_gan/horse2zebra:trainB",
            "resolution": 256, "channels": 3, "flip": True, "batch_size": 8, "steps": 30_000,
            **common.large_run(2500), **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 128, "steps": 2000, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "cyclegan")
