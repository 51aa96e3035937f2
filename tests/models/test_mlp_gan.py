"""The fully connected GAN (``model.architecture=mlp`` of the DCGAN family): shapes, replayable dropout, every loss
through the loop, config checks, and a resumed run equal to an unbroken one."""

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import dcgan as dcgan_config
from models import base
from models import dcgan
from tests.conftest import build_trainer
from tests.models.test_autoencoder import resumed_and_unbroken
import pipelines

INFO = pipelines.DataInfo(spec="test", count=10, resolution=32, channels=1, num_classes=10)


def tiny(**model):
  """The cpu_mlp config at widths small enough for a step in well under a second."""
  c = dcgan_config.get_config("cpu_mlp")
  c.model.update(g_mlp_widths="16,32", d_mlp_widths="32,16", latent_dim=8, d_dropout=0.5)
  c.model.update(model)
  c.update(batch_size=8, histogram_every=0, sample_grid=16)
  c.runtime.steps_per_loop = 1
  return c


def _model(config, info=INFO, dtype=tf.float32):
  return dcgan.DCGAN(rundir.prepare_config(config), info, base.Hardware(compute_dtype=dtype))


def _rng(batch, step=0, replica=0, replicas=1):
  return base.BatchRng(tf.constant([0, step], tf.int64), replica, batch // replicas, replicas)


def _images(batch, seed=0):
  return tf.random.stateless_uniform([batch, 32, 32, 1], [seed, 1], -1.0, 1.0)


# ---- networks

@pytest.mark.parametrize("resolution,channels", [(32, 1), ("16x24", 3)])
def test_the_generator_draws_images_of_the_configured_shape_in_the_tanh_range(resolution, channels):
  config = tiny(g_mlp_widths="16,16,32")
  config.resolution, config.channels = resolution, channels
  model = _model(config)
  assert [d.w.shape[1] for d in model.generator.hidden] == [16, 16, 32]
  images = model.generate(_rng(4))
  height, width = (32, 32) if resolution == 32 else (16, 24)
  assert images.shape == (4, height, width, channels) and images.dtype == tf.float32
  assert np.abs(images.numpy()).max() <= 1.0
  assert not np.allclose(images[0].numpy(), images[1].numpy())  # each example's own latent reaches the image
  assert model.discriminator(images).shape == (4,)


def test_an_image_drawn_alone_depends_on_its_seed():
  """As ``launch.sample --seeds`` and serving draw them: a batch of one, which batch statistics would flatten."""
  model = _model(tiny(g_norm="layer"))
  one, two = (model.generate(base.BatchRng.alone(tf.constant(s, tf.int64))).numpy() for s in (1, 2))
  assert not np.allclose(one, two)


def test_bfloat16_networks_keep_float32_variables_and_outputs():
  model = _model(tiny(conditional=True, conditioning="projection"), dtype=tf.bfloat16)
  assert all(v.dtype == tf.float32 for v in model.variables)
  labels = tf.constant([1, 2])
  images = model.generate(_rng(2), labels)
  assert images.dtype == tf.float32
  assert model.discriminator(images, labels, training=True, rng=_rng(2)).dtype == tf.float32


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_conditional_networks_depend_on_the_label(conditioning):
  model = _model(tiny(conditional=True, conditioning=conditioning))
  a = model.generate(_rng(4), tf.constant([1, 1, 1, 1]), ema=False)
  b = model.generate(_rng(4), tf.constant([2, 2, 2, 2]), ema=False)
  assert not np.allclose(a.numpy(), b.numpy())
  da = model.discriminator(a, tf.constant([1, 1, 1, 1]))
  db = model.discriminator(a, tf.constant([2, 2, 2, 2]))
  assert not np.allclose(da.numpy(), db.numpy())


# ---- dropout

def test_dropout_replays_from_the_rng_and_is_off_outside_training():
  d = _model(tiny()).discriminator
  x = _images(8)
  once = d(x, training=True, rng=_rng(8), stream="s").numpy()
  np.testing.assert_array_equal(d(x, training=True, rng=_rng(8), stream="s").numpy(), once)
  assert not np.allclose(d(x, training=True, rng=_rng(8), stream="t").numpy(), once)  # another call of the step
  assert not np.allclose(d(x, training=True, rng=_rng(8, step=1), stream="s").numpy(), once)  # another step
  plain = d(x).numpy()
  np.testing.assert_array_equal(d(x).numpy(), plain)
  assert not np.allclose(plain, once)


def test_a_zero_rate_is_the_deterministic_network():
  model = _model(tiny(d_dropout=0.0))
  x = _images(8)
  np.testing.assert_array_equal(model.discriminator(x, training=True, rng=_rng(8)).numpy(),
                                model.discriminator(x).numpy())
  batch = {"image": x, "label": tf.zeros([8], tf.int32)}
  _, metrics = model.discriminator_loss(batch, _rng(8))
  np.testing.assert_array_equal(metrics["D/real"].numpy(), model.discriminator(x).numpy())


def test_the_training_losses_use_dropout_and_replay_it():
  model = _model(tiny(d_dropout=0.5))
  batch = {"image": _images(8), "label": tf.zeros([8], tf.int32)}
  loss, metrics = model.discriminator_loss(batch, _rng(8))
  again, _ = model.discriminator_loss(batch, _rng(8))
  np.testing.assert_array_equal(again.numpy(), loss.numpy())
  assert not np.allclose(metrics["D/real"].numpy(), model.discriminator(batch["image"]).numpy())
  g_loss, _ = model.generator_loss(batch, _rng(8))
  np.testing.assert_array_equal(model.generator_loss(batch, _rng(8))[0].numpy(), g_loss.numpy())


def test_dropout_zeroes_units_and_scales_the_kept_ones_by_one_over_one_minus_the_rate():
  rate = 0.3
  x = tf.reshape(tf.range(1.0, 1.0 + 64 * 256), [64, 256])
  out = dcgan.dropout(x, rate, _rng(64), "s").numpy()
  keep = _rng(64).uniform([256], "s").numpy() >= rate
  np.testing.assert_allclose(out[keep], x.numpy()[keep] / (1.0 - rate), rtol=1e-6)
  assert not out[~keep].any()
  assert abs((~keep).mean() - rate) < 0.02  # 16,384 draws: the dropped share is the rate


def test_the_discriminator_with_dropout_is_the_closed_form_thinned_network():
  rate = 0.25
  d = _model(tiny(d_mlp_widths="24", d_dropout=rate)).discriminator
  x = _images(8)
  h = tf.nn.leaky_relu(tf.reshape(x, [8, -1]) @ d.hidden[0].w + d.hidden[0].b, 0.2).numpy()
  keep = _rng(8).uniform([24], "s/0").numpy() >= rate  # layer 0's masks, under its own stream
  thinned = np.where(keep, h / (1.0 - rate), 0.0)
  expected = thinned @ d.logit.w.numpy()[:, 0] + d.logit.b.numpy()[0]
  np.testing.assert_allclose(d(x, training=True, rng=_rng(8), stream="s").numpy(), expected, rtol=1e-5, atol=1e-6)


def test_the_masks_are_the_same_under_xla():
  d = _model(tiny()).discriminator
  x = _images(8)
  compiled = tf.function(lambda images: d(images, training=True, rng=_rng(8)), jit_compile=True)
  eager = d(x, training=True, rng=_rng(8)).numpy()
  np.testing.assert_allclose(compiled(x).numpy(), eager, rtol=1e-5, atol=1e-6)
  assert not np.allclose(d(x).numpy(), eager, rtol=1e-3)  # the comparison would see other masks


def test_the_masks_do_not_depend_on_how_the_batch_is_split():
  d = _model(tiny()).discriminator
  x = _images(8)
  whole = d(x, training=True, rng=_rng(8)).numpy()
  halves = [d(x[4 * r:4 * r + 4], training=True, rng=_rng(8, replica=r, replicas=2)).numpy() for r in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), whole)


# ---- through the loop

@pytest.mark.parametrize("change,runtime,g_updates", [
    ({"loss": "minimax", "r1_gamma": 1.0}, {}, 2),
    ({"loss": "nonsaturating", "conditional": True}, {}, 2),  # concat conditioning
    ({"loss": "lsgan", "g_norm": "layer", "d_norm": "batch"}, {}, 2),
    ({"loss": "hinge", "conditional": True, "conditioning": "projection"}, {"precision": "mixed_bfloat16"}, 2),
    ({"loss": "wgan"}, {}, 1),  # n_critic 5
    ({"loss": "wgan-gp", "d_norm": "layer"}, {}, 1),  # double backprop through the masks
], ids=["minimax-r1", "nonsaturating-concat", "lsgan-norms", "hinge-projection-bf16", "wgan", "wgan-gp"])
def test_every_loss_trains_the_mlp_through_the_loop(change, runtime, g_updates):
  """Two steps in one compiled call: finite losses, the loss's own terms logged, the critic updated every step and
  the generator every n_critic steps, WGAN's critic weights clipped."""
  trainer = build_trainer(tiny(**change), steps_per_loop=2, **runtime)
  d_vars = trainer.model.discriminator.trainable_variables
  before = [v.numpy() for v in d_vars]
  result = trainer.run(2)
  values = result.values()
  assert result.finite and all(np.isfinite(v) for v in values.values()), values
  optimizers = trainer.model.optimizers
  assert (int(optimizers["d"].iterations.numpy()), int(optimizers["g"].iterations.numpy())) == (2, g_updates)
  # Every weight moved; not the logit's bias, whose gradient the Wasserstein and hinge losses cancel at the start.
  assert all(not np.array_equal(v.numpy(), b) for v, b in zip(d_vars, before) if b.size > 1)
  if change.get("loss") == "wgan":
    assert max(float(tf.reduce_max(tf.abs(v))) for v in d_vars) <= 0.01 + 1e-7
  expected_terms = {"wgan-gp": "D/gradient_penalty", "minimax": "D/r1"}
  assert expected_terms.get(change["loss"], "D/loss") in values


def test_one_device_and_two_replicas_take_the_same_sgd_step_with_dropout():
  """Plain SGD (its step is proportional to the gradient, so a wrong replica sum would show) and no batch norm:
  the two runs differ only in how the batch, and so the draw of the dropout masks, is split."""
  updates = []
  for replicas in (1, 2):
    trainer = build_trainer(tiny(optimizer="sgd", lr=0.05), cpu_replicas=replicas)
    variables = trainer.model.discriminator.trainable_variables + trainer.model.generator.trainable_variables
    before = [v.numpy() for v in variables]
    trainer.run(1)
    updates.append([v.numpy() - b for v, b in zip(variables, before)])
  moved = [np.abs(u).max() for u in updates[0]]
  assert min(moved) > 0, moved
  for one, two, size in zip(updates[0], updates[1], moved):
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-4 * size)


def test_a_resumed_run_equals_the_unbroken_one(tmp_path):

  def config(steps):
    c = tiny(d_dropout=0.5)
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=4)
    return c

  unbroken, resumed = resumed_and_unbroken(config, tmp_path)
  assert any("discriminator" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


# ---- config

def test_dropout_defaults_to_the_papers_rate_for_mlp_and_none_for_conv():
  config = tiny()
  config.model.d_dropout = None
  assert rundir.prepare_config(config).model.d_dropout == 0.5
  conv = dcgan_config.get_config("cpu")
  assert conv.model.architecture == "conv"
  assert rundir.prepare_config(conv).model.d_dropout == 0.0


@pytest.mark.parametrize("change,key", [
    ({"architecture": "resnet"}, "--config.model.architecture"),
    ({"d_dropout": 1.0}, "--config.model.d_dropout"),
    ({"d_dropout": -0.1}, "--config.model.d_dropout"),
    ({"architecture": "conv", "d_dropout": 0.3}, "--config.model.d_dropout"),
    ({"g_mlp_widths": ""}, "--config.model.g_mlp_widths"),
    ({"d_mlp_widths": "64,0"}, "--config.model.d_mlp_widths"),
    ({"d_mlp_widths": "wide"}, "--config.model.d_mlp_widths"),
    ({"g_norm": "batch"}, "--config.model.g_norm"),  # one image drawn alone would not depend on its seed
])
def test_bad_mlp_settings_are_one_line_errors_naming_the_key(change, key):
  config = tiny()
  config.model.update(change)
  with pytest.raises(UserError) as error:
    rundir.prepare_config(config)
  assert key in str(error.value) and "\n" not in str(error.value)


def test_a_resume_that_changes_the_mlp_widths_is_refused(tmp_path):
  config = rundir.prepare_config(tiny())
  rundir.write_config(config, INFO, str(tmp_path))
  config.model.d_mlp_widths = "64,16"
  with pytest.raises(UserError, match="model.d_mlp_widths"):
    rundir.check_resume_compatible(config, str(tmp_path))
