"""VQ-VAE (van den Oord et al. 2017): images to grids of codebook indices and back.

Run:
  python -m launch.train --config=launch/configs/vqvae.py:cpu --workdir=/tmp/vqvae

Variants:
  cpu  the embedded digits to 8x8 grids of 128 codes (16 values each), batch 64; TensorBoard shows input |
       reconstruction pairs, the codebook's perplexity and the codes in use (docs/autoencoders.md has the figures).
  gpu  64x64 colour images to 16x16 grids of 512 codes, on every visible GPU.
  tpu  as gpu, on a TPU with bfloat16 and several steps per compiled call.

The codebook learns by EMA of the encoder outputs assigned to each code (--config.model.codebook=ema, the paper's
appendix) or by gradient (loss); codes used less than --config.model.restart_below times per step move onto encoder
outputs of the current batch. The trained run is a tokenizer: launch/tokenizer.py reads its token grids.
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "vqvae"
  m.widths = "32,64"  # channels of the stride-2 convolutions: 32x32 -> 16x16 -> 8x8 grid, mirrored in the decoder
  m.codebook_size = 128  # K codes
  m.code_dim = 16  # values per code (and per grid place of the encoder's output)
  m.commitment = 0.25  # β of the commitment term
  m.codebook = "ema"  # ema (running means of the assigned encoder outputs) | loss (codebook trained by gradient)
  m.ema_decay = 0.99  # of the codebook's running counts and sums, and of the usage counts in either mode
  m.restart_below = 1.0  # a code chosen fewer times per step (running mean) restarts on an encoder output; 0: never
  m.reconstruction = "mse"  # mse (squared error of intensities in [0, 1]) | bce (cross-entropy of intensities)
  m.lr = 1e-3  # Adam
  m.lr_decay = "none"  # none | cosine (to 5% of lr at the last step)
  return m


VARIANTS = {
    "cpu": {"steps": 4000, "log_every": 200, "sample_every": 1000, "checkpoint_every": 1000, **common.CPU},
    # 64x64 with widths 64,128: a 16x16 grid.
    "gpu": {"data": "folder:/path/to/images", "resolution": 64, "channels": 3, "flip": True, "batch_size": 128,
            "steps": 100_000, "model.widths": "64,128", "model.codebook_size": 512, "model.code_dim": 64,
            **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "vqvae")
