"""Progressive GAN pieces: the growing schedule, equalized learning rate, pixel norm, minibatch stddev, shapes and
fade-in at every level of detail, the gradient penalty's scale, conditioning, and config checks."""

import math

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import pggan as pggan_config
from models import base
from models.pggan import model as pggan_model
from models.pggan import networks
from models.pggan import ops
from models.pggan import schedule
from tests.conftest import build_trainer
import pipelines

INFO = pipelines.DataInfo(spec="test", count=10, resolution=32, channels=1, num_classes=10)


def tiny_config(resolution=16):
  c = pggan_config.get_config("cpu")
  c.resolution = resolution
  c.batch_size = 8
  c.model.latent_dim = 16
  c.model.width_base = 128  # 32, 16, 8 channels at 4, 8, 16
  c.model.width_max = 32
  c.runtime.steps_per_loop = 1
  return c


def _model(config, info=INFO, dtype=tf.float32):
  return pggan_model.ProgressiveGAN(rundir.prepare_config(config), info, base.Hardware(compute_dtype=dtype))


@pytest.fixture(scope="module")
def tiny():
  return _model(tiny_config())


# ---- schedule


@pytest.mark.parametrize("kimg,lod", [
    (0.0, 3.0), (1.999, 3.0), (2.0, 3.0),  # 4x4 stable for 2 kimg
    (2.5, 2.75), (3.5, 2.25), (4.0, 2.0),  # 8x8 fades in over 2 kimg
    (6.0, 2.0), (7.0, 1.5), (8.0, 1.0),  # 8x8 stable, 16x16 fades in
    (11.0, 0.5), (12.0, 0.0), (100.0, 0.0),  # 32x32 fades in, then stays
])
def test_lod_is_the_closed_form_of_the_images_shown(kimg, lod):
  growth = schedule.Growth(32, 4, stable_kimg=2.0, fade_kimg=2.0)
  assert float(growth.lod(int(round(kimg * 1000)))) == pytest.approx(lod, abs=1e-6)


@pytest.mark.parametrize("lod,level,alpha", [(3.0, 0, 1.0), (2.75, 1, 0.25), (2.0, 1, 1.0), (1.5, 2, 0.5),
                                             (0.1, 3, 0.9), (0.0, 3, 1.0), (5.0, 0, 1.0), (-1.0, 3, 1.0)])
def test_level_and_alpha_of_a_lod(lod, level, alpha):
  got_level, got_alpha = schedule.level_and_alpha(lod, 3)
  assert int(got_level) == level
  assert float(got_alpha) == pytest.approx(alpha, abs=1e-6)


def test_phase_changes_happen_at_the_scheduled_kimg():
  growth = schedule.Growth(64, 8, stable_kimg=3.0, fade_kimg=1.0)
  assert float(growth.lod(0)) == 3.0  # starts at 8x8
  assert growth.fade_kimg_range(16) == (3.0, 4.0)
  assert growth.fade_kimg_range(64) == (11.0, 12.0)
  for resolution in (16, 32, 64):
    start, end = growth.fade_kimg_range(resolution)
    lod_before = float(growth.lod(int(start * 1000)))
    lod_just_after = float(growth.lod(int(start * 1000) + 1))
    level_before, _ = schedule.level_and_alpha(lod_before, 4)
    level_after, alpha_after = schedule.level_and_alpha(lod_just_after, 4)
    assert 4 * 2**int(level_before) == resolution // 2 and 4 * 2**int(level_after) == resolution
    assert float(alpha_after) == pytest.approx(1 / 1000, rel=1e-3)  # one image into a 1-kimg fade
    _, alpha_end = schedule.level_and_alpha(growth.lod(int(end * 1000)), 4)
    assert float(alpha_end) == 1.0


def test_no_fade_switches_at_the_phase_boundary():
  growth = schedule.Growth(16, 4, stable_kimg=1.0, fade_kimg=0.0)
  assert [float(growth.lod(n)) for n in (0, 999, 1000, 1999, 2000, 5000)] == [2.0, 2.0, 1.0, 1.0, 0.0, 0.0]


# ---- layers


def test_equalized_learning_rate_scales_by_the_he_constant(tiny):
  g, d = tiny.generator, tiny.discriminator
  conv = g.base_conv  # 3x3 on 32 channels
  assert conv.runtime_scale == pytest.approx(math.sqrt(2.0 / (9 * 32)))
  assert g.to_rgb[2].runtime_scale == pytest.approx(1.0 / math.sqrt(8))  # toRGB: 1x1, gain 1, 8 channels
  assert g.dense.runtime_scale == pytest.approx(math.sqrt(2.0) / 4.0 / math.sqrt(16))
  assert d.final_conv.runtime_scale == pytest.approx(math.sqrt(2.0 / (9 * 33)))  # +1 minibatch-stddev map
  assert d.out.runtime_scale == pytest.approx(1.0 / math.sqrt(32))
  # Stored weights are N(0, 1); the layer's output is the convolution with the scaled weights.
  every = [layer for layer in g.submodules + d.submodules if hasattr(layer, "runtime_scale")]
  assert all(layer.equalized for layer in every)
  stored = np.concatenate([layer.w.numpy().ravel() for layer in every])
  assert abs(stored.std() - 1.0) < 0.02 and abs(stored.mean()) < 0.02
  x = tf.random.stateless_normal([2, 4, 4, 32], seed=[1, 2])
  expected = tf.nn.conv2d(x, conv.w * math.sqrt(2.0 / (9 * 32)), 1, "SAME") + conv.b
  np.testing.assert_allclose(conv(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_pixel_norm_gives_unit_mean_square_per_pixel(dtype):
  x = tf.random.stateless_normal([3, 5, 5, 16], seed=[3, 4]) * tf.constant([0.01, 1.0, 50.0])[:, None, None, None]
  y = ops.pixel_norm(tf.cast(x, dtype))
  assert y.dtype == dtype
  mean_square = tf.reduce_mean(tf.square(tf.cast(y, tf.float32)), axis=-1).numpy()
  x_mean_square = tf.reduce_mean(tf.square(tf.cast(tf.cast(x, dtype), tf.float32)), axis=-1).numpy()
  expected = x_mean_square / (x_mean_square + 1e-8)  # 1 up to ε: 0.9999 for the 0.01-scaled example
  np.testing.assert_allclose(mean_square, expected, rtol=2e-2 if dtype == tf.bfloat16 else 1e-5)
  assert abs(mean_square[1:].mean() - 1.0) < (1e-2 if dtype == tf.bfloat16 else 1e-6)
  direction = tf.cast(y, tf.float32) / tf.norm(tf.cast(y, tf.float32), axis=-1, keepdims=True)
  np.testing.assert_allclose(direction.numpy(), (x / tf.norm(x, axis=-1, keepdims=True)).numpy(), atol=1e-2)


def test_minibatch_stddev_matches_a_hand_computed_value():
  x = np.zeros([8, 2, 2, 2], np.float32)
  x[:4, :, :, 0] = np.array([0.0, 2.0, 0.0, 2.0])[:, None, None]  # group 1: stddev 1 in channel 0, 3 in channel 1
  x[:4, :, :, 1] = np.array([3.0, -3.0, 3.0, -3.0])[:, None, None]
  x[4:, :, :, 0] = np.array([1.0, 1.0, 5.0, 5.0])[:, None, None]  # group 2: stddev 2 in channel 0, 0 in channel 1
  x[4:, :, :, 1] = 7.0
  y = ops.minibatch_stddev(tf.constant(x), group_size=4).numpy()
  assert y.shape == (8, 2, 2, 3)
  np.testing.assert_array_equal(y[..., :2], x)
  eps = ops.MBSTD_EPSILON
  group1 = (math.sqrt(1.0 + eps) + math.sqrt(9.0 + eps)) / 2
  group2 = (math.sqrt(4.0 + eps) + math.sqrt(eps)) / 2
  np.testing.assert_allclose(y[:4, ..., 2], group1, rtol=1e-6)
  np.testing.assert_allclose(y[4:, ..., 2], group2, rtol=1e-6)
  with pytest.raises(UserError, match="mbstd_group=4"):
    ops.minibatch_stddev(tf.zeros([6, 2, 2, 1]), 4)


def test_resampling_is_nearest_up_and_box_filter_down():
  x = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
  up = ops.upsample(x, 2).numpy()[0, ..., 0]
  np.testing.assert_array_equal(up[::2, ::2], x.numpy()[0, ..., 0])
  np.testing.assert_array_equal(up[1::2, 1::2], x.numpy()[0, ..., 0])
  down = ops.downsample(x, 2).numpy()[0, ..., 0]
  np.testing.assert_array_equal(down, [[2.5, 4.5], [10.5, 12.5]])
  np.testing.assert_allclose(ops.downsample(ops.upsample(x, 4), 4).numpy(), x.numpy(), rtol=1e-6)


# ---- networks at every level of detail


@pytest.mark.parametrize("lod", [2.0, 1.5, 1.0, 0.25, 0.0])
def test_output_shapes_at_every_level_of_detail(tiny, lod):
  z = tf.random.stateless_normal([4, 16], seed=[5, 6])
  images = tiny.generator(z, None, lod)
  assert images.shape == (4, 16, 16, 1) and images.dtype == tf.float32
  assert tiny.discriminator(images, None, lod).shape == (4,)
  level, _ = schedule.level_and_alpha(lod, 2)
  size = 4 * 2**int(level)
  latent = tiny.generator.latent(z)
  assert tiny.generator.image_at(latent, int(level), 1.0).shape == (4, size, size, 1)
  # At a lower resolution the image is nearest-neighbour upsampled: constant over each block.
  block = 16 // size
  np.testing.assert_allclose(images.numpy(), ops.upsample(ops.downsample(images, block), block).numpy(), atol=1e-6)


def test_fade_in_goes_from_the_upsampled_previous_level_to_the_new_block(tiny):
  g, d = tiny.generator, tiny.discriminator
  latent = g.latent(tf.random.stateless_normal([4, 16], seed=[7, 8]))
  for level in (1, 2):
    previous = g.image_at(latent, level - 1, 1.0)
    at_start = g.image_at(latent, level, 0.0)
    np.testing.assert_allclose(at_start.numpy(), ops.upsample(previous, 2).numpy(), atol=1e-6)
    new_block = g.to_rgb[level](g._features(latent, level))  # pylint: disable=protected-access
    np.testing.assert_allclose(g.image_at(latent, level, 1.0).numpy(), new_block.numpy(), atol=1e-6)
    half = g.image_at(latent, level, 0.5).numpy()
    np.testing.assert_allclose(half, 0.5 * (at_start.numpy() + new_block.numpy()), atol=1e-5)
    # The discriminator at alpha 0 sees only the 2x-downsampled image through the previous level's layers.
    images = tf.random.stateless_normal([4, 4 * 2**level, 4 * 2**level, 1], seed=[9, level])
    np.testing.assert_allclose(d.scores_at(images, None, level, 0.0).numpy(),
                               d.scores_at(ops.downsample(images, 2), None, level - 1, 1.0).numpy(), atol=1e-5)
    # Reals (delivered at the new level's resolution) fade the same way, from their 2x box-filtered version.
    reals = tf.random.stateless_normal([4, 4 * 2**level, 4 * 2**level, 1], seed=[10, level])
    coarser = ops.upsample(ops.downsample(reals, 2), 2)
    np.testing.assert_allclose(networks.fade_reals(reals, tf.constant(0.0)).numpy(), coarser.numpy(), atol=1e-6)
    np.testing.assert_allclose(networks.fade_reals(reals, tf.constant(1.0)).numpy(), reals.numpy(), atol=1e-6)
    np.testing.assert_allclose(networks.fade_reals(reals, tf.constant(0.25)).numpy(),
                               (0.75 * coarser + 0.25 * reals).numpy(), atol=1e-6)
  # Through the lod input: 16x16 a quarter faded in is the same blend of the two levels, upsampled to 16x16.
  z = tf.random.stateless_normal([4, 16], seed=[7, 8])
  blend = 0.25 * g.image_at(latent, 2, 1.0) + 0.75 * ops.upsample(g.image_at(latent, 1, 1.0), 2)
  np.testing.assert_allclose(g(z, None, 0.75).numpy(), blend.numpy(), atol=1e-5)


@pytest.mark.parametrize("convention", ["target", "level"])
def test_gradient_penalty_is_measured_at_the_configured_resolution(convention):
  """"target": the level-resolution gradient norm / f equals the norm taken through the target-size image (the
  reference code); "level": the norm with respect to the image at the level's resolution."""
  config = tiny_config()
  config.model.gp_resolution = convention
  model = _model(config)
  level, levels = 1, 2
  images = tf.random.stateless_normal([4, 8, 8, 1], seed=[11, 12])
  critic = lambda x: model.discriminator.scores_at(x, None, level, 0.6)
  got = model._input_gradient_norm(critic, images, level)  # pylint: disable=protected-access
  seen = ops.upsample(images, 2**(levels - level)) if convention == "target" else images
  with tf.GradientTape() as tape:
    tape.watch(seen)
    if convention == "target":
      total = tf.reduce_sum(model.discriminator(seen, None, 1.4))  # lod 1.4: level 1, alpha 0.6
    else:
      total = tf.reduce_sum(critic(seen))
  reference = tf.norm(tf.reshape(tape.gradient(total, seen), [4, -1]), axis=-1)
  np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-4)


def test_a_fade_stage_runs_the_level_with_alpha_from_lod_and_trains_only_its_layers():
  """In the 8x8 fade stage the G loss is the direct computation at level 1 with alpha from lod, and each phase
  lists exactly the variables its loss reaches (the loop takes gradients for those only)."""
  model = _model(tiny_config(16))
  stage = model.stage(int(1000 * (model.growth.stable_kimg + 0.5 * model.growth.fade_kimg)))
  assert stage.key == (1, True) and stage.resolution == 8 and stage.name == "8x8 fade-in"
  model.lod.assign(1.25)  # level 1 of 2 levels, alpha 0.75
  batch = {"image": tf.random.stateless_uniform([8, 8, 8, 1], seed=[1, 1], minval=-1, maxval=1),
           "label": tf.zeros([8], tf.int32)}
  rng = base.BatchRng(tf.constant([0, 3], tf.int64), 0, 8, 1)
  d_phase, g_phase = model.phases(stage)
  with tf.GradientTape() as tape:
    loss, _ = g_phase.loss(batch, rng)
  got = tape.gradient(loss, g_phase.variables)
  latent = model.generator.latent(rng.normal([16], "g/z"))
  with tf.GradientTape() as tape:
    direct = -model.discriminator.scores_at(model.generator.image_at(latent, 1, 0.75), None, 1, 0.75)
  expected = tape.gradient(direct, g_phase.variables)
  np.testing.assert_allclose(loss.numpy(), direct.numpy(), rtol=1e-6)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
  for phase, network in [(d_phase, model.discriminator), (g_phase, model.generator)]:
    with tf.GradientTape() as tape:
      loss, _ = phase.loss(batch, rng)
    grads = tape.gradient(loss, network.trainable_variables)
    reached = {id(v) for v, g in zip(network.trainable_variables, grads) if g is not None}
    assert reached == {id(v) for v in phase.variables}, phase.name
    assert len(phase.variables) < len(network.trainable_variables)  # the 16x16 layers are not in it
  with pytest.raises(ValueError, match="8x8 stage got 16x16"):
    d_phase.loss({"image": tf.zeros([8, 16, 16, 1])}, rng)


@pytest.mark.parametrize("conditioning", ["acgan", "projection"])
def test_conditional_models_use_the_label(conditioning):
  config = tiny_config(8)
  config.model.conditional = True
  config.model.conditioning = conditioning
  model = _model(config)
  z = tf.random.stateless_normal([4, 16], seed=[1, 2])
  a = model.generator(z, tf.constant([1, 1, 1, 1]), 0.0)
  b = model.generator(z, tf.constant([2, 2, 2, 2]), 0.0)
  assert not np.allclose(a.numpy(), b.numpy())
  out = model.discriminator(a, tf.constant([1, 1, 1, 1]), 0.0)
  if conditioning == "acgan":
    scores, logits = out
    assert scores.shape == (4,) and logits.shape == (4, 10)
    batch = {"image": a, "label": tf.constant([1, 2, 3, 4])}
    d_phase = model.phases(model.stage(10**9))[0]  # the 8x8 stage, long after the growth
    _, metrics = d_phase.loss(batch, base.BatchRng(tf.constant([0, 0], tf.int64), 0, 4, 1))
    assert {"D/ac_real", "D/ac_fake"} <= set(metrics)
  else:
    other = model.discriminator(a, tf.constant([2, 2, 2, 2]), 0.0)
    assert not np.allclose(out.numpy(), other.numpy())


def test_learning_rate_follows_the_resolution_trained():
  config = tiny_config(16)
  config.model.lr_by_resolution = "8:0.002,16:0.003"
  model = _model(config)
  rates = {}
  for lod in (2.0, 1.5, 1.0, 0.5, 0.0):
    model.lod.assign(lod)
    rates[lod] = float(model.optimizers["d"].learning_rate)
  assert rates == {2.0: pytest.approx(0.001), 1.5: pytest.approx(0.002), 1.0: pytest.approx(0.002),
                   0.5: pytest.approx(0.003), 0.0: pytest.approx(0.003)}


def test_the_cpu_variant_s_ema_decays_by_its_beta_per_step_and_keeps_its_halflife_across_batches():
  """The cpu variant's half-life gives β = 0.99 per step at its batch, 16; a stage with batch 8 (the 8x8 stage
  here) keeps the half-life in images, so β per step is 0.99^(8/16) there. Asked of the loop's Trainer."""
  config = tiny_config(8)
  config.batch_size = 16
  config.model.batch_by_resolution = "8:8"
  config.model.stable_kimg, config.model.fade_kimg = 0.016, 0.0  # 4x4 for one step, then 8x8
  assert config.ema_rampup is None
  trainer = build_trainer(config)
  trainer.run(1)
  assert trainer.global_batch == 16 and float(trainer.ema_beta().numpy()) == pytest.approx(0.99, rel=1e-6)
  trainer.run(1)
  assert trainer.global_batch == 8 and float(trainer.ema_beta().numpy()) == pytest.approx(0.99**0.5, rel=1e-6)


@pytest.mark.parametrize("change,message", [
    ({"resolution": 24}, "power of two"),
    ({"resolution": "16x32"}, "square"),
    ({"model.loss": "hinge"}, "unknown --config.model.loss"),
    ({"model.conditioning": "concat"}, "conditioning"),
    ({"model.gp_resolution": "source"}, "gp_resolution"),
    ({"model.start_resolution": 32}, "start_resolution"),
    ({"batch_size": 6}, "mbstd_group"),
    ({"model.stable_kimg": 0.0, "model.fade_kimg": 0.0}, "not both 0"),
    ({"model.lr_by_resolution": "64:0.1"}, "lr_by_resolution"),
    ({"model.lr_by_resolution": "8=0.1"}, "RES:LR"),
    ({"ema_halflife_kimg": 0.0}, "ema_halflife_kimg"),
    ({"model.batch_by_resolution": "4:64,8=32"}, "RES:BATCH"),
    ({"model.batch_by_resolution": "32:16"}, "power of two from 4 to 16"),
    ({"model.batch_by_resolution": "8:6"}, "batch 6 at 8x8 must be a positive multiple of"),
])
def test_bad_settings_are_refused_with_one_line(change, message):
  config = tiny_config()
  for key, value in change.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  with pytest.raises(UserError, match=message) as error:
    rundir.prepare_config(config)
  assert "\n" not in str(error.value)


