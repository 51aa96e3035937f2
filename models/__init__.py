"""Model families, built by name from ``config.model.name``.

Each family registers a ``resolve(config)`` that fills defaults and checks its config section (raising UserError),
and a model class (a ``models.base.GenerativeModel``) built as ``cls(config, data_info, hardware)`` after
``cls.check_hardware(config, hardware)``.
"""

from genscale.errors import UserError

_REGISTRY = {}


def register(name, resolve, cls):
  _REGISTRY[name] = (resolve, cls)


def _entry(name):
  _load_builtin()
  if name not in _REGISTRY:
    raise UserError(f"unknown --config.model.name={name!r}: choose one of {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def names():
  _load_builtin()
  return sorted(_REGISTRY)


def resolve(config):
  """Fills model defaults that depend on other settings, validates, and returns the config."""
  return _entry(config.model.name)[0](config)


def build(config, info, hardware):
  """Checks the config against ``hardware`` (a ``models.base.Hardware``) and builds the model. Call inside
  ``strategy.scope()``. Raises UserError."""
  cls = _entry(config.model.name)[1]
  two_domains = info.domain_b is not None
  if two_domains and cls.domains == 1:
    raise UserError(f"--config.data={info.spec} holds two unpaired domains, which only a translator "
                    "(--config.model.name=cyclegan) trains on; "
                    f"give {config.model.name} one source")
  cls.check_hardware(config, hardware)
  return cls(config, info, hardware)


def shape_keys(config):
  return _entry(config.model.name)[1].shape_keys


_BUILTIN_LOADED = []


def _load_builtin():
  if _BUILTIN_LOADED:
    return
  _BUILTIN_LOADED.append(True)
  from models import dcgan  # pylint: disable=g-import-not-at-top
  register("dcgan", dcgan.resolve, dcgan.DCGAN)
  from models import diffusion  # pylint: disable=g-import-not-at-top
  register("ddpm", diffusion.resolve_ddpm, diffusion.DiffusionModel)  # Ho et al. 2020 (+ DDIM sampling)
  register("edm", diffusion.resolve_edm, diffusion.DiffusionModel)  # Karras et al. 2022
  from models import pggan  # pylint: disable=g-import-not-at-top
  register("pggan", pggan.resolve, pggan.ProgressiveGAN)  # Karras et al. 2018
  from models import stylegan2  # pylint: disable=g-import-not-at-top
  register("stylegan2", stylegan2.resolve, stylegan2.StyleGAN2)  # Karras et al. 2020 (StyleGAN2 + ADA)
  from models import autoencoder  # pylint: disable=g-import-not-at-top
  register("ae", autoencoder.resolve_ae, autoencoder.Autoencoder)
  register("vae", autoencoder.resolve_vae, autoencoder.VAE)  # Kingma & Welling 2014 (+ β-VAE, conditional)
  register("vqvae", autoencoder.resolve_vqvae, autoencoder.VQVAE)  # van den Oord et al. 2017
  from models import classic  # pylint: disable=g-import-not-at-top
  register("mixture", classic.resolve_mixture, classic.BernoulliMixture)  # mixture of Bernoullis (exact NLL)
  register("fvsbn", classic.resolve_fvsbn, classic.FVSBN)  # Neal 1992, Frey 1998 (exact NLL)
  register("hmm", classic.resolve_hmm, classic.RowHMM)  # Rabiner 1989, over image rows (exact NLL)
  from models import boltzmann  # pylint: disable=g-import-not-at-top
  register("rbm", boltzmann.resolve_rbm, boltzmann.RBM)  # Hinton 2002 (CD), Tieleman 2008 (PCD)
  register("dbn", boltzmann.resolve_dbn, boltzmann.DBN)  # Hinton, Osindero & Teh 2006
  from models import cyclegan  # pylint: disable=g-import-not-at-top
  register("cyclegan", cyclegan.resolve, cyclegan.CycleGAN)  # Zhu et al. 2017
  from models import transformer  # pylint: disable=g-import-not-at-top
  register("imagegpt", transformer.resolve_imagegpt, transformer.ImageGPT)  # Chen et al. 2020
  register("maskgit", transformer.resolve_maskgit, transformer.MaskGIT)  # Chang et al. 2022
