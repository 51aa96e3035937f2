"""StyleGAN2 with adaptive discriminator augmentation (Karras et al. 2020a, 2020b), in plain TensorFlow ops; with
``model.style_block=adain``, StyleGAN's (Karras et al. 2018) AdaIN generator in the same family.

  draws.py     one random draw per phase; R1 and path-length gradients
  ops.py       low-pass up/down-sampling, bias + activation + clamp, modulated convolution (scaled or grouped),
               minibatch standard deviation, AdaIN
  networks.py  mapping network, skip generator (or StyleGAN's AdaIN one), residual discriminator
  augment.py   the ADA pipeline and its p update
  model.py     the model family the training loop builds: ``model.name`` "stylegan2"
"""

from models.stylegan2.model import StyleGAN2, resolve

__all__ = ["StyleGAN2", "resolve"]
