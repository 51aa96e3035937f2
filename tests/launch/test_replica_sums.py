"""Every family, trained with plain SGD, takes the same step on 1 device and on 2 logical CPUs.

Adam divides by a running RMS of the gradient, so it is blind to a constant factor: a reduction that summed the
replicas' gradients where their mean belongs would pass an Adam comparison. SGD's step is proportional to the
gradient, so these comparisons fail for it (a doubled gradient doubles every update).
"""

import keras
import numpy as np
import pytest

from tests.conftest import build_trainer
import models

LR = 0.05


@pytest.fixture(autouse=True)
def _plain_sgd(monkeypatch):
  """Every model the Trainer builds gets plain SGD in place of its optimizers."""
  original = models.build

  def build(config, info, hardware):
    model = original(config, info, hardware)
    model.optimizers = {name: keras.optimizers.SGD(LR) for name in model.optimizers}
    return model

  monkeypatch.setattr(models, "build", build)


def _dcgan():
  from launch.configs import dcgan  # pylint: disable=g-import-not-at-top
  c = dcgan.get_config("cpu")
  c.model.update(g_width=8, d_width=8, latent_dim=16, g_norm="layer", d_norm="layer")  # per-example norms
  return c


def _pggan():
  from tests.models.test_pggan_training import _config  # pylint: disable=g-import-not-at-top
  c = _config()  # 4x4 for two steps, then the 8x8 fade
  c.model.reset_adam = False  # SGD has no moments to restart
  return c


def _stylegan2():
  from tests.models.test_stylegan2 import train_config  # pylint: disable=g-import-not-at-top
  return train_config(augment="none")  # all four phases and every state update at step 0


def _diffusion(name):
  from tests.models.test_diffusion_model import tiny  # pylint: disable=g-import-not-at-top
  return tiny(name, conditional=True, dropout=0.0)


def _vae():
  from tests.models.test_autoencoder import tiny_vae  # pylint: disable=g-import-not-at-top
  return tiny_vae(conditional=True)  # the AE shares its networks and its one-phase step


def _dbn():
  from tests.models.test_boltzmann import tiny_dbn  # pylint: disable=g-import-not-at-top
  return tiny_dbn()  # two RBMs of 2 PCD steps each, then 2 steps of the classifier: every phase of the family


def _cyclegan():
  from tests.models.test_cyclegan import tiny  # pylint: disable=g-import-not-at-top
  # One step (the pools fill; their split-invariance when swapping is tests/models/test_cyclegan.py's). After
  # one SGD step at this rate the tanh outputs are exactly -1 on most of the background, where the targets are
  # too, so the L1 terms' gradient there (the sign of a difference of 0 or one ulp) would depend on rounding.
  return tiny(pool_size=4)


# The diffusion family's two formulations share the network, the phase and the reductions: EDM stands for both.
# The DBN's RBM phases stand for the RBM's.
FAMILIES = {"dcgan": (_dcgan, 1), "pggan": (_pggan, 3), "stylegan2": (_stylegan2, 1),
            "diffusion": (lambda: _diffusion("edm"), 1), "vae": (_vae, 1), "dbn": (_dbn, 6),
            "cyclegan": (_cyclegan, 1)}


def _updates(make_config, steps, replicas):
  config = make_config()
  config.batch_size = 8
  trainer = build_trainer(config, cpu_replicas=replicas, steps_per_loop=steps)
  variables = trainer.model.trainable_variables
  before = [v.numpy() for v in variables]
  while int(trainer.step.numpy()) < steps:  # calls end at stage ends
    assert trainer.run(steps - int(trainer.step.numpy())).finite
  assert all(isinstance(o, keras.optimizers.SGD) for o in trainer.model.optimizers.values())
  return [v.numpy() - b for v, b in zip(variables, before)], [v.name for v in variables]


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.xdist_group(f"sgd-{f}")) for f in FAMILIES])
def test_one_device_and_two_replicas_take_the_same_sgd_step(family):
  make_config, steps = FAMILIES[family]
  one, names = _updates(make_config, steps, 1)
  two, _ = _updates(make_config, steps, 2)
  moved = [np.abs(u).max() for u in one]
  assert max(moved) > 1e-4, "the step moved nothing: the comparison could not fail"
  for name, a, b, size in zip(names, one, two, moved):
    np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-3 * size + 1e-9, err_msg=name)
