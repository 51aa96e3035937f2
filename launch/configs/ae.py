"""Convolutional autoencoder, plain or denoising (Vincent et al. 2008).

Run:
  python -m launch.train --config=launch/configs/ae.py:cpu --workdir=/tmp/ae

Variants:
  cpu  the embedded digits, a 16-value code, batch 64; TensorBoard shows input | reconstruction pairs.
  gpu  64x64 colour images, on every visible GPU.
  tpu  as gpu, on a TPU with bfloat16 and several steps per compiled call.

Denoising: --config.model.denoise=gaussian (noise std --config.model.noise, in units of the [-1, 1] pixel range)
or mask (each pixel set to the background with probability --config.model.noise). An autoencoder has no prior:
it reconstructs, it does not sample (launch/configs/vae.py does).
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "ae"
  m.latent_dim = 16  # size of the dense code
  m.widths = "32,64"  # channels of the stride-2 convolutions: 32x32 -> 16x16 -> 8x8, mirrored in the decoder
  m.reconstruction = "mse"  # mse (squared error of intensities in [0, 1]) | bce (cross-entropy of intensities)
  m.denoise = "none"  # none | gaussian | mask: corrupt the encoder's input, reconstruct the clean image
  m.noise = 0.5  # gaussian: noise std; mask: probability a pixel is masked
  m.lr = 1e-3  # Adam
  m.lr_decay = "none"  # none | cosine (to 5% of lr at the last step)
  return m


VARIANTS = {
    "cpu": {"steps": 4000, "log_every": 200, "sample_every": 1000, "checkpoint_every": 1000, **common.CPU},
    "gpu": {"data": "folder:/path/to/images", "resolution": 64, "channels": 3, "flip": True, "batch_size": 128,
            "steps": 100_000, "model.widths": "64,128,256", "model.latent_dim": 128, **common.LARGE_RUN,
            **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "ae")
