"""DCGAN networks: shapes, conditioning, deterministic initialisation, config checks."""

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import dcgan as dcgan_config
from models import base
from models import dcgan
import pipelines

INFO = pipelines.DataInfo(spec="test", count=10, resolution=32, channels=1, num_classes=10)


def _model(config, info=INFO, dtype=tf.float32):
  return dcgan.DCGAN(rundir.prepare_config(config), info, base.Hardware(compute_dtype=dtype))


# Widths other than 8 matter: with d_width 8 the last discriminator width equals the image side at every square
# resolution, which once hid a flatten that used the width in place of the image side.
@pytest.mark.parametrize("resolution,channels,width", [(16, 1, 8), (32, 3, 8), (64, 3, 8), (32, 1, 16),
                                                        ("32x64", 3, 12)])
def test_output_shapes(tiny_dcgan, resolution, channels, width):
  tiny_dcgan.resolution, tiny_dcgan.channels = resolution, channels
  tiny_dcgan.model.g_width = tiny_dcgan.model.d_width = width
  model = _model(tiny_dcgan)
  rng = base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1)
  images = model.generate(rng)
  height, side = (32, 64) if resolution == "32x64" else (resolution, resolution)
  assert images.shape == (4, height, side, channels)
  assert images.dtype == tf.float32
  assert not np.allclose(images[0].numpy(), images[1].numpy())  # each example's own latent reaches the image
  logits = model.discriminator(images)
  assert logits.shape == (4,)


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_conditional_models_depend_on_the_label(tiny_dcgan, conditioning):
  tiny_dcgan.model.conditional = True
  tiny_dcgan.model.conditioning = conditioning
  model = _model(tiny_dcgan)
  rng = base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1)
  a = model.generate(rng, tf.constant([1, 1, 1, 1]), ema=False)
  b = model.generate(rng, tf.constant([2, 2, 2, 2]), ema=False)
  assert not np.allclose(a.numpy(), b.numpy())
  da = model.discriminator(a, tf.constant([1, 1, 1, 1]))
  db = model.discriminator(a, tf.constant([2, 2, 2, 2]))
  assert not np.allclose(da.numpy(), db.numpy())


def test_initialisation_is_deterministic_and_seeded(tiny_dcgan):
  first = [v.numpy() for v in _model(tiny_dcgan).generator.variables]
  again = [v.numpy() for v in _model(tiny_dcgan).generator.variables]
  tiny_dcgan.seed = 1
  other = [v.numpy() for v in _model(tiny_dcgan).generator.variables]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first, other) if a.size > 1)


def test_bfloat16_networks_keep_float32_variables_and_outputs(tiny_dcgan):
  model = _model(tiny_dcgan, dtype=tf.bfloat16)
  assert all(v.dtype == tf.float32 for v in model.variables)
  images = model.generate(base.BatchRng(tf.constant([0, 0], tf.int64), 0, 2, 1))
  assert images.dtype == tf.float32
  assert model.discriminator(images).dtype == tf.float32


def test_loss_presets_fill_unset_values_only(tiny_dcgan):
  tiny_dcgan.model.loss = "wgan-gp"
  tiny_dcgan.model.d_norm = "layer"
  tiny_dcgan.model.lr = 3e-4
  m = rundir.prepare_config(tiny_dcgan).model
  assert (m.optimizer, m.lr, m.beta1, m.beta2, m.n_critic) == ("adam", 3e-4, 0.0, 0.9, 5)


def test_wgan_clips_discriminator_weights_after_each_update(tiny_dcgan):
  tiny_dcgan.model.loss = "wgan"
  model = _model(tiny_dcgan)
  opt = model.optimizers["d"]
  opt.build(model.discriminator.trainable_variables)
  grads = [tf.fill(v.shape, -100.0) for v in model.discriminator.trainable_variables]
  opt.apply_gradients(zip(grads, model.discriminator.trainable_variables))
  biggest = max(float(tf.reduce_max(tf.abs(v))) for v in model.discriminator.trainable_variables)
  assert biggest == pytest.approx(0.01)
  assert all(v.constraint is None for v in model.generator.trainable_variables)


@pytest.mark.parametrize("change,message", [
    ({"loss": "wasserstein"}, "unknown --config.model.loss"),
    ({"loss": "wgan-gp"}, "d_norm=layer or none"),
    ({"conditioning": "film"}, "conditioning"),
])
def test_bad_model_settings_are_refused(tiny_dcgan, change, message):
  tiny_dcgan.model.update(change)
  with pytest.raises(UserError, match=message):
    rundir.prepare_config(tiny_dcgan)


def test_conditional_without_labels_is_refused(tiny_dcgan):
  tiny_dcgan.model.conditional = True
  unlabelled = pipelines.DataInfo(spec="folder:x", count=10, resolution=32, channels=1, num_classes=0)
  with pytest.raises(UserError, match="has no labels"):
    _model(tiny_dcgan, unlabelled)




@pytest.mark.parametrize("change,expect", [
    ({"loss": "wgan-gp", "d_norm": "layer"}, {"metric": "D/gradient_penalty", "g_updates": 1}),  # n_critic 5
    ({"r1_gamma": 1.0, "d_norm": "none"}, {"metric": "D/r1", "g_updates": 3}),
    ({"loss": "hinge"}, {"g_updates": 3}),
    ({"loss": "lsgan"}, {"g_updates": 3}),
    ({"loss": "minimax"}, {"g_updates": 3}),
    ({"loss": "wgan"}, {"clip": 0.01, "g_updates": 1}),
    ({"conditional": True, "conditioning": "projection"}, {"g_updates": 3}),
])
def test_every_loss_trains_through_the_loop(tiny_dcgan, change, expect):
  """Three steps in one compiled call: finite losses, the loss's own terms logged, the critic updated every step
  and the generator every n_critic steps, WGAN's critic weights clipped."""
  from tests.conftest import build_trainer  # pylint: disable=g-import-not-at-top
  tiny_dcgan.model.update(change)
  trainer = build_trainer(tiny_dcgan, steps_per_loop=3)
  result = trainer.run(3)
  values = result.values()
  assert result.finite and all(np.isfinite(v) for v in values.values()), values
  assert "D/loss" in values and (expect.get("metric") is None or expect["metric"] in values)
  optimizers = trainer.model.optimizers
  assert int(optimizers["d"].iterations.numpy()) == 3
  assert int(optimizers["g"].iterations.numpy()) == expect["g_updates"]
  if "clip" in expect:
    biggest = max(float(tf.reduce_max(tf.abs(v))) for v in trainer.model.discriminator.trainable_variables)
    assert biggest <= expect["clip"] + 1e-7
