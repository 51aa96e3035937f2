"""Diffusion models: DDPM/DDIM (Ho et al. 2020; Song et al. 2021) and EDM (Karras et al. 2022), with classifier-free
guidance (Ho & Salimans 2022).

  unet.py          the denoiser network (DDPM++ / ADM-style U-Net)
  formulations.py  DDPM and EDM: noising, training losses, preconditioning, σ schedules
  samplers.py      ddpm (ancestral), ddim, euler, heun (with churn) against any denoiser D(x, σ)
  model.py         the model family the training loop builds: ``model.name`` "ddpm" or "edm"
"""

from models.diffusion.model import DiffusionModel, resolve_ddpm, resolve_edm

__all__ = ["DiffusionModel", "resolve_ddpm", "resolve_edm"]
