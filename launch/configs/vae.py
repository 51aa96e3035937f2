"""Variational autoencoder (Kingma & Welling 2014), β-VAE (Higgins et al. 2017), capacity annealing (Burgess et
al. 2018) and the conditional VAE.

Run, then score the held-out digits' likelihood:
  python -m launch.train --config=launch/configs/vae.py:cpu --workdir=/tmp/vae
  python -m launch.evaluate --workdir=/tmp/vae --metrics=nll

Variants:
  cpu          the embedded digits, dynamically binarised, 32 latents, batch 64, 12,000 steps (docs/autoencoders.md
               has the time and the held-out negative ELBO and IWAE bound it reaches).
  cpu_latent2  as cpu with 2 latents and 6,000 steps: TensorBoard shows the posterior means as a map coloured by
               digit.
  gpu          64x64 colour images with the discretised Gaussian likelihood, on every visible GPU.
  tpu          as gpu, on a TPU with bfloat16 and several steps per compiled call.

β-VAE: --config.model.beta=4. Capacity: --config.model.capacity_nats=25 --config.model.capacity_steps=5000.
Conditional: --config.model.conditional=true (then `launch.sample --label=3`).
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "vae"
  m.latent_dim = 16
  m.widths = "32,64"  # channels of the stride-2 convolutions: 32x32 -> 16x16 -> 8x8, mirrored in the decoder
  m.likelihood = "bernoulli"  # bernoulli (binary pixels) | gaussian (discretised to 256 levels, grey or colour)
  m.binarize = "dynamic"  # bernoulli: dynamic (x ~ Bernoulli(intensity) at every batch) | none (soft targets)
  m.beta = 1.0  # weight of the KL term (β-VAE: > 1)
  m.capacity_nats = 0.0  # > 0: the capacity objective γ|KL - C| with C ramped to this many nats
  m.capacity_steps = 10_000  # steps over which C rises from 0 to capacity_nats
  m.capacity_gamma = 1000.0  # γ of the capacity objective
  m.conditional = False  # labels into encoder and decoder (data with labels)
  m.lr = 1e-3  # Adam
  m.lr_decay = "none"  # none | cosine (to 5% of lr at the last step)
  return m


VARIANTS = {
    # 32 latents and a cosine decay: held-out IWAE-64 about 3 nats better than 16 latents at a constant rate
    # (docs/autoencoders.md).
    "cpu": {"steps": 12_000, "model.latent_dim": 32, "model.lr_decay": "cosine", "log_every": 500,
            "sample_every": 2000, "checkpoint_every": 2000, **common.CPU},
    "gpu": {"data": "folder:/path/to/images", "resolution": 64, "channels": 3, "flip": True, "batch_size": 128,
            "steps": 100_000, "model.widths": "64,128,256", "model.latent_dim": 128, "model.likelihood": "gaussian",
            "model.binarize": "none", "eval_nll_samples": 5000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["cpu_latent2"] = {**VARIANTS["cpu"], "steps": 6000, "model.latent_dim": 2}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "vae")
