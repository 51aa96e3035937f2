"""MaskGIT (Chang et al. 2022): a bidirectional transformer trained to fill in masked tokens (cosine mask
schedule), sampling by parallel decoding in a few steps (models/transformer/).

Run on the codes of a VQ-VAE, as the paper does (the VQ-VAE first: under a minute on 2 cores), score the samples,
and draw digits of one class in 8 decoding steps:
  python -m launch.train --config=launch/configs/vqvae.py:cpu --workdir=/tmp/vqvae
  python -m launch.train --config=launch/configs/maskgit.py:cpu --workdir=/tmp/maskgit \
      --config.model.vq_workdir=/tmp/vqvae
  python -m launch.evaluate --workdir=/tmp/maskgit --metrics=fid,kid,pr --num=5000
  python -m launch.sample --workdir=/tmp/maskgit --label=7 --steps=8 --out=sevens.png

Variants:
  cpu         the embedded digits as 8x8 grids of the VQ-VAE's 128 codes (--config.model.vq_workdir), 4 layers of
              width 128, class-conditional, 2,000 steps, 10 decoding steps; docs/transformer.md has its time, FID
              and class agreement.
  cpu_pixels  one command, no VQ-VAE: 2x2 blocks of pixels binarised at half intensity (256 tokens of a
              vocabulary of 16), 700 steps. Parallel decoding of pixels draws speckled, broken digits at this
              budget (docs/transformer.md).
  gpu         pixel tokens with a paper-like width (8 layers x 512) at batch 256, on every visible GPU; add
              --config.model.tokens=vq --config.model.vq_workdir=DIR for codes.
  tpu         as gpu at batch 1024, on a TPU with bfloat16.
"""

from launch.configs import common
from launch.configs import imagegpt


def model():
  m = imagegpt.model()
  m.name = "maskgit"
  for key in ("context", "top_k", "top_p"):  # autoregressive sampling only
    del m[key]
  # Pixels on where the intensity is at least 1/2: parallel decoding draws many tokens at once, independently,
  # and on digits binarised afresh each batch the stroke edges are coin flips that come out as speckle.
  m.binarize = "threshold"
  m.decode_steps = 10  # parallel decoding steps T (launch.sample --steps)
  m.choice_temperature = 4.5  # scale of the Gumbel noise on the confidences, annealed to 0 over the steps
  return m


_PIXELS_CPU = {key: value for key, value in imagegpt.VARIANTS["cpu"].items() if not key.startswith("eval_")}
VARIANTS = {
    # 64 tokens instead of 256: a step costs a fifth, and 2,000 of them take about 5 minutes.
    "cpu": {**_PIXELS_CPU, "steps": 2000, "sample_every": 1000, "checkpoint_every": 1000, "model.tokens": "vq"},
    "cpu_pixels": _PIXELS_CPU,
    "gpu": imagegpt.VARIANTS["gpu"],
    "tpu": imagegpt.VARIANTS["tpu"],
}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "maskgit")
