"""CycleGAN (Zhu et al. 2017): unpaired translation between two image domains.

See ``model`` for the training step and losses, ``networks`` for the ResNet generator and the PatchGAN
discriminator, and ``pool`` for the discriminators' image pools.
"""

from models.cyclegan.model import CycleGAN, resolve

__all__ = ["CycleGAN", "resolve"]
