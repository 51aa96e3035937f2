"""ImageGPT (Chen et al. 2020) over binarised digits: a GPT-style transformer that predicts an image's tokens one
after another (models/transformer/), with an exact likelihood and sampling from a key/value cache.

Run, then score the held-out digits' exact likelihood and draw digits of one class:
  python -m launch.train --config=launch/configs/imagegpt.py:cpu --workdir=/tmp/imagegpt
  python -m launch.evaluate --workdir=/tmp/imagegpt --metrics=nll
  python -m launch.sample --workdir=/tmp/imagegpt --label=3 --temperature=1.0 --top_k=0 --out=threes.png

Variants:
  cpu  the embedded digits binarised afresh each batch, 2x2 pixel blocks as tokens (256 tokens of a vocabulary of
       16), 4 layers of width 128, class-conditional; docs/transformer.md has its time, likelihood and samples.
  gpu  the same tokens with a paper-like width (8 layers x 512, 8 heads) at batch 256, on every visible GPU.
  tpu  as gpu at batch 1024, on a TPU with bfloat16 (softmax and statistics stay float32).

Tokens from a trained VQ-VAE run instead of pixels (for larger or colour images):
  --config.model.tokens=vq --config.model.vq_workdir=/tmp/vqvae  (its data, resolution and channels apply).
"""

import ml_collections

from launch.configs import common


def model():
  m = ml_collections.ConfigDict()
  m.name = "imagegpt"
  m.tokens = "pixels"  # pixels (quantised pixel blocks) | vq (the codes of a trained VQ-VAE run)
  m.levels = 2  # pixels: values per pixel (2: binarised, the likelihood table's data)
  m.patch = 2  # pixels: a token is a patch x patch block (vocabulary levels^(patch² · channels))
  # pixels at 2 levels: dynamic (each batch binarised afresh, pixel on with probability its intensity; the
  # likelihood table's training data) | threshold (on where the intensity is at least 1/2: clean strokes)
  m.binarize = "dynamic"
  m.vq_workdir = ml_collections.config_dict.placeholder(str)  # vq: the VQ-VAE run whose codes are the tokens
  m.vocab_size = 0  # 0: the tokens' own; set it to have a run check the tokenizer's vocabulary
  m.context = 0  # slots of the position table and the sampling cache; 0: one image's tokens
  m.conditional = True  # a class token starts each sequence (the data's labels)
  m.width = 128
  m.depth = 4  # transformer blocks
  m.heads = 4
  m.mlp_ratio = 4
  m.dropout = 0.1  # on the embeddings and every residual branch, in training
  m.optimizer = "adamw"  # adamw | sgd (plain gradient descent at lr, for tests)
  m.lr = 1e-3  # peak learning rate, after warm-up; cosine decay to 2% of it at the last step
  m.warmup_steps = 100
  m.weight_decay = 0.01  # AdamW's decoupled weight decay
  m.temperature = 1.0  # sampling defaults (launch.sample --temperature --top_k --top_p)
  m.top_k = 0  # 0: off
  m.top_p = 1.0  # 1: off
  return m


VARIANTS = {
    # About 8 minutes on 2 cores; the held-out likelihood is printed at the end.
    "cpu": {"steps": 700, "sample_every": 350, "checkpoint_every": 350, "eval_every": 700, "eval_metrics": "nll",
            **common.CPU},
    "gpu": {"batch_size": 256, "steps": 100_000, "model.width": 512, "model.depth": 8, "model.heads": 8,
            "model.lr": 3e-4, "model.warmup_steps": 2000, **common.LARGE_RUN, **common.GPU},
}
VARIANTS["tpu"] = {**VARIANTS["gpu"], "batch_size": 1024, **common.TPU}


def get_config(variant="cpu"):
  return common.make(model(), VARIANTS, variant, "imagegpt")
