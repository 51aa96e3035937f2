"""Progressive GAN (Karras et al. 2018): networks that grow from 4x4 to the target resolution while training.

See ``model`` for the training step and losses, ``networks`` for the generator and discriminator, ``schedule`` for
the growing schedule (level of detail and fade-in alpha from the images shown), and ``ops`` for pixel norm,
minibatch standard deviation and resampling.
"""

from models.pggan.model import ProgressiveGAN, resolve

__all__ = ["ProgressiveGAN", "resolve"]
