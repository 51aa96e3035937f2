"""StyleGAN (Karras et al. 2018) as ``model.style_block=adain`` of the StyleGAN2 family: instance normalisation and the
AdaIN layer against closed forms, the generator's wiring (every w and the noise reach the image), training and
sampling through the family's code, the config checks, and the default ``modulated`` build left as it was."""

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
import models
from models import base
from models import layers
from models.stylegan2 import StyleGAN2
from models.stylegan2 import networks
from models.stylegan2 import ops
from tests.models.test_stylegan2 import INFO
from tests.models.test_stylegan2 import _model
from tests.models.test_stylegan2 import _rng
from tests.models.test_stylegan2 import _synthesis
from tests.models.test_stylegan2 import _ws
from tests.models.test_stylegan2 import tiny
from tests.models.test_stylegan2 import train_config
from tests.models.test_stylegan2_ops import np_conv_same

SQRT2 = np.sqrt(2.0)


def _normal(shape, seed):
  return tf.random.stateless_normal(shape, [seed, 11])


def _section(**model):
  """The resolved model section of an 8x8 AdaIN generator (16-dimensional w, 16 and 8 feature maps)."""
  return _model(tiny(style_block="adain", **model)).config


def _np_instance_norm(x):
  return (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-8)


# ---- instance normalisation and the AdaIN layer


def _normalized(x):
  """AdaIN with the identity style (scale 1, bias 0): its instance normalisation alone."""
  b, c = x.shape[0], x.shape[-1]
  return ops.adain(x, tf.ones([b, c]), tf.zeros([b, c]))


def test_instance_norm_gives_each_example_and_channel_zero_mean_and_unit_variance():
  rs = np.random.RandomState(0)
  # Means and spreads that differ by example and by channel, so that statistics pooled over either would show.
  x = rs.randn(3, 5, 6, 4) * rs.uniform(0.1, 10.0, [3, 1, 1, 4]) + rs.uniform(-50.0, 50.0, [3, 1, 1, 4])
  y = _normalized(tf.constant(x, tf.float32)).numpy()
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(1, 2)), 1.0, atol=1e-4)
  np.testing.assert_allclose(y, _np_instance_norm(x), atol=1e-4)


def test_instance_norm_of_bfloat16_takes_its_moments_in_float32():
  """Values around 20 with spread 1: bfloat16 moments (8-bit mantissa) are off by about 0.05 of a unit here;
  float32 moments leave only the output's rounding (at most about 0.012)."""
  x = tf.cast(_normal([3, 8, 8, 4], 1) + 20.0, tf.bfloat16)
  y = _normalized(x)
  assert y.dtype == tf.bfloat16
  expected = _np_instance_norm(tf.cast(x, tf.float64).numpy())
  np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), expected, atol=0.02)


def _layer(up=False, synthesis_up="filtered", dtype=tf.float32):
  """An AdaIN layer 8 -> 6 feature maps with non-zero bias, per-channel noise strengths and affine bias (the styles
  then differ from their initial scale 1 and bias 0)."""
  layer = networks.AdaINLayer(_section(synthesis_up=synthesis_up), 16, 8, 6, layers.Keys(5), dtype, up=up)
  layer.bias.assign(_normal([6], 2))
  layer.noise_strength.assign(_normal([6], 3))
  layer.affine.b.assign(_normal([12], 4))
  return layer


@pytest.mark.parametrize("up,synthesis_up", [(False, "filtered"), (True, "nearest"), (True, "filtered")])
def test_each_output_channel_has_the_styles_bias_as_mean_and_its_scale_as_std(up, synthesis_up):
  layer = _layer(up, synthesis_up)
  size = 8 if up else 4
  x, w, noise = _normal([2, 4, 4, 8], 5), _normal([2, 16], 6), _normal([2, size, size, 1], 7)
  y = layer(x, w, noise).numpy()
  scale, bias = (t.numpy() for t in layer.styles(w))
  assert y.shape == (2, size, size, 6)
  assert np.abs(scale - 1.0).max() > 0.3 and np.abs(bias).max() > 0.3  # styles far from the identity
  np.testing.assert_allclose(y.mean(axis=(1, 2)), bias, atol=1e-3)
  np.testing.assert_allclose(y.std(axis=(1, 2)), np.abs(scale), atol=1e-3)


@pytest.mark.parametrize("up", [False, True])
def test_adain_layer_is_conv_noise_bias_leaky_relu_instance_norm_then_style(up):
  """The whole layer in NumPy: 'SAME' 3x3 convolution with the equalized gain (of the nearest-neighbour upsampled
  input with ``up``), noise times each channel's strength, bias, leaky ReLU, instance norm, ys * x + yb."""
  layer = _layer(up, "nearest")
  x, w = _normal([2, 4, 4, 8], 5).numpy(), _normal([2, 16], 6)
  size = 8 if up else 4
  noise = _normal([2, size, size, 1], 7).numpy()
  inputs = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2) if up else x
  h = np_conv_same(inputs, layer.weight.numpy() / np.sqrt(8 * 9)) + noise * layer.noise_strength.numpy()
  h = h + layer.bias.numpy()
  h = np.maximum(h, 0.2 * h) * SQRT2
  scale, bias = (t.numpy() for t in layer.styles(w))
  expected = _np_instance_norm(h) * scale[:, None, None, :] + bias[:, None, None, :]
  np.testing.assert_allclose(layer(x, w, noise).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_styles_start_at_scale_one_and_bias_zero():
  layer = networks.AdaINLayer(_section(), 16, 8, 6, layers.Keys(5), tf.float32)
  scale, bias = layer.styles(tf.zeros([1, 16]))
  np.testing.assert_array_equal(scale.numpy(), np.ones([1, 6]))
  np.testing.assert_array_equal(bias.numpy(), np.zeros([1, 6]))
  scale, bias = layer.styles(_normal([512, 16], 8))  # w of unit second moment, as the mapping network makes
  assert abs(float(tf.reduce_mean(scale)) - 1.0) < 0.2 and abs(float(tf.reduce_mean(bias))) < 0.2
  assert 0.5 < float(tf.math.reduce_std(scale)) < 2.0  # the style spreads as it should, not stuck at 1


def test_bfloat16_layer_keeps_the_style_statistics():
  layer = _layer(dtype=tf.bfloat16)
  x, w = tf.cast(_normal([2, 8, 8, 8], 5), tf.bfloat16), _normal([2, 16], 6)
  y = layer(x, w, _normal([2, 8, 8, 1], 7))
  assert y.dtype == tf.bfloat16 and all(v.dtype == tf.float32 for v in layer.variables)
  scale, bias = (t.numpy() for t in layer.styles(w))
  y = tf.cast(y, tf.float32).numpy()
  np.testing.assert_allclose(y.mean(axis=(1, 2)), bias, atol=0.03)
  np.testing.assert_allclose(y.std(axis=(1, 2)), np.abs(scale), atol=0.03)


# ---- the generator


def _synthesis_network(**model):
  return networks.SynthesisNetwork(_section(**model), 8, 1, layers.Keys(3), tf.float32)


def test_every_w_reaches_the_image():
  """StyleGAN's layout: at 4x4 the constant's AdaIN and a 3x3 layer, at 8x8 two, one w and noise image each: as
  many ws as StyleGAN2's generator, so mixing layers and truncation mean the same."""
  net = _synthesis_network()
  assert net.num_ws == 4 == _model(tiny()).num_ws
  assert net.noise_shapes() == [(4, 4, 1), (4, 4, 1), (8, 8, 1), (8, 8, 1)]
  ws = _normal([2, 4, 16], 9)
  image = net(ws).numpy()
  assert image.shape == (2, 8, 8, 1) and np.all(np.isfinite(image))
  assert np.abs(image[0] - image[1]).max() > 1e-2  # different w, different image
  other = _normal([2, 16], 10)
  for i in range(4):
    changed = tf.concat([ws[:, :i], other[:, None], ws[:, i + 1:]], axis=1)
    assert np.abs(net(changed).numpy() - image).max() > 1e-3, f"w {i} does not reach the image"


def test_noise_reaches_the_image_through_its_per_channel_strengths():
  net = _synthesis_network()
  ws = _normal([2, 4, 16], 9)
  noises = [_normal([2, *shape], 20 + i) for i, shape in enumerate(net.noise_shapes())]
  np.testing.assert_array_equal(net(ws, noises).numpy(), net(ws).numpy())  # strengths start at 0
  for block in net.blocks:
    for layer in block.convs:
      assert layer.noise_strength.shape == [layer.bias.shape[0]]
      layer.noise_strength.assign(tf.fill(layer.noise_strength.shape, 0.5))
  assert np.abs(net(ws, noises).numpy() - net(ws).numpy()).max() > 1e-2


def test_the_output_is_one_plain_torgb_after_the_last_block():
  net = _synthesis_network(output_activation="tanh")
  assert [b.torgb is None for b in net.blocks] == [True, False]
  assert isinstance(net.blocks[-1].torgb, networks.Conv)
  ws = _normal([2, 4, 16], 9)
  features, _ = net.blocks[0](None, None, ws[:, :2], [None, None])
  features, _ = net.blocks[1](features, None, ws[:, 2:], [None, None])  # 8 maps at 8x8
  torgb = net.blocks[1].torgb
  rgb = tf.nn.conv2d(features, torgb.weight / np.sqrt(8.0), 1, "SAME") + torgb.bias  # equalized 1x1, bias, linear
  np.testing.assert_allclose(net(ws).numpy(), np.tanh(rgb.numpy()), rtol=1e-5, atol=1e-6)


def test_xla_gives_the_eager_layer():
  layer = _layer(up=True)  # the filtered up path: transposed convolution and low-pass filter
  x, w, noise = _normal([2, 4, 4, 8], 5), _normal([2, 16], 6), _normal([2, 8, 8, 1], 7)
  compiled = tf.function(layer.__call__, jit_compile=True)(x, w, noise)
  np.testing.assert_allclose(compiled.numpy(), layer(x, w, noise).numpy(), rtol=1e-4, atol=1e-4)


# ---- training and sampling through the family's code


def _adain_variables(generator):
  return [v for m in generator.submodules if isinstance(m, networks.AdaINLayer) for v in m.trainable_variables]


def _eager_steps(model, batch, steps):
  """Training steps run eagerly as the loop runs them on one replica (no tracing: seconds instead of half a minute):
  each due phase's mean loss, its gradients, its Adam step, then ``update_state`` with the phase's mean metrics."""
  metrics = {}
  for step in range(steps):
    for phase in model.phases(base.Stage()):
      if step % phase.interval:
        continue
      with tf.GradientTape() as tape:
        loss, values = phase.loss(batch, base.BatchRng(tf.constant([0, step], tf.int64), 0, 8, 1))
        loss = tf.reduce_mean(loss)
      gradients = tape.gradient(loss, phase.variables)
      assert all(g is not None for g in gradients), phase.name
      model.optimizers[phase.optimizer].apply_gradients(zip(gradients, phase.variables))
      reduced = {name: tf.reduce_mean(value) for name, value in values.items()}
      reduced[f"{phase.name}/loss"] = loss
      model.update_state(base.Stage(), tf.constant(step, tf.int64), tf.constant(0, tf.int64), reduced)
      metrics.update({name: float(value) for name, value in reduced.items()})
  return metrics


@pytest.fixture(scope="module")
def trained():
  """Two steps of every phase (D, lazy R1, G with style mixing, lazy path length, ADA moving p every 2 steps)."""
  config = rundir.prepare_config(train_config(style_block="adain"))
  model = StyleGAN2(config, INFO, base.Hardware())
  reals = model.generate(_rng(8, seed=1), ema=False)  # images in [-1, 1] stand in for the data
  before = [v.numpy() for v in _adain_variables(model.generator)]
  metrics = _eager_steps(model, {"image": reals, "label": tf.zeros([8], tf.int32)}, 2)
  return dict(config=config, model=model, before=before, metrics=metrics)


def test_training_steps_run_every_phase_and_move_the_adain_weights(trained):
  model, metrics = trained["model"], trained["metrics"]
  assert model.style_mixing > 0
  assert {"D/loss", "D_reg/r1", "G/loss", "G_reg/path_length", "D/real_sign"} <= set(metrics)
  assert all(np.isfinite(value) for value in metrics.values())
  assert float(model.augment_p.numpy()) != 0.5 and float(model.pl_mean.numpy()) > 0
  assert np.abs(model.w_avg.numpy()).sum() > 0
  after = _adain_variables(model.generator)
  assert len(after) == 4 * 4 + 3  # 4 layers: affine (w, b), bias, noise strength; 3 of them convolve
  for a, b in zip(trained["before"], after):
    assert np.all(np.isfinite(b.numpy())) and np.abs(b.numpy() - a).max() > 1e-5, f"{b.name} did not train"


def test_truncation_and_style_mixing_sample_the_adain_generator(trained):
  model = trained["model"]
  rng = _rng(4, seed=5)
  average = tf.broadcast_to(model.w_avg[None, None], [4, model.num_ws, 16])
  images = model.generate(rng, truncation=0.0).numpy()
  assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
  np.testing.assert_allclose(images, _synthesis(model, average, rng), atol=1e-6)
  mixed = model.generate(rng, mix_seed=9, mix_layer=2).numpy()
  first, second = _ws(model, rng), _ws(model, _rng(4, seed=9))
  np.testing.assert_allclose(mixed, _synthesis(model, tf.concat([first[:, :2], second[:, 2:]], axis=1), rng),
                             atol=1e-6)
  assert not np.allclose(mixed, model.generate(rng).numpy())


def test_a_run_directory_rebuilds_the_adain_generator(trained, tmp_path):
  """What launch.sample, launch.evaluate and launch.export do with a run: its stored config builds the same
  generator, and the checkpoint restores into it."""
  workdir = str(tmp_path)
  rundir.write_config(trained["config"], INFO, workdir)
  path = tf.train.Checkpoint(model=trained["model"]).write(str(tmp_path / "ckpt"))
  config, info = rundir.read_run(workdir)
  assert config.model.style_block == "adain"
  rebuilt = models.build(config, info, base.Hardware())
  rundir.restore_model(rebuilt, path, config, workdir)
  np.testing.assert_array_equal(rebuilt.generate(_rng(4, seed=3), truncation=0.7).numpy(),
                                trained["model"].generate(_rng(4, seed=3), truncation=0.7).numpy())
  modulated = models.build(rundir.prepare_config(tiny()), info, base.Hardware())
  with pytest.raises(UserError, match="can't restore"):
    rundir.restore_model(modulated, path, config, workdir)


# ---- the default build, resume and the config checks


def test_the_default_modulated_build_has_no_adain_variables():
  """StyleGAN2's variables, named and shaped as before the setting existed (checkpoints unchanged), also for a run
  whose config predates ``style_block``."""
  config = tiny()
  assert config.model.style_block == "modulated"
  g = _model(config).generator
  assert not [m for m in g.submodules if isinstance(m, (networks.AdaINLayer, networks.AdaINBlock))]
  shapes = sorted((v.name, tuple(v.shape)) for v in g.synthesis.variables)

  def modulated(cin, cout, k):  # affine (w, b) from the 16-d w, kernel, bias
    return [("w:0", (16, cin)), ("b:0", (cin,)), ("weight:0", (k, k, cin, cout)), ("bias:0", (cout,))]

  expected = [("const:0", (4, 4, 16))] + modulated(16, 16, 3) + modulated(16, 1, 1)  # 4x4: conv1, toRGB
  expected += modulated(16, 8, 3) + modulated(8, 8, 3) + modulated(8, 1, 1)  # 8x8: conv0, conv1, toRGB
  expected += [("noise_strength:0", ())] * 3  # one scalar strength per convolution
  assert shapes == sorted(expected)
  old = rundir.prepare_config(tiny())
  del old.model["style_block"]  # as launch.sample reads an older run's config.json
  old_g = StyleGAN2(old, INFO, base.Hardware()).generator
  assert len(old_g.variables) == len(g.variables)
  for a, b in zip(g.variables, old_g.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_resuming_with_the_other_style_block_is_refused(tmp_path):
  modulated = rundir.prepare_config(tiny())
  rundir.write_config(modulated, INFO, str(tmp_path / "new"))
  with pytest.raises(UserError, match="--config.model.style_block=modulated"):
    rundir.check_resume_compatible(rundir.prepare_config(tiny(style_block="adain")), str(tmp_path / "new"))
  del modulated.model["style_block"]  # a run stored before the setting existed resumes with the default
  rundir.write_config(modulated, INFO, str(tmp_path / "old"))
  rundir.check_resume_compatible(rundir.prepare_config(tiny()), str(tmp_path / "old"))


@pytest.mark.parametrize("change,message", [
    ({"style_block": "demod"}, "unknown --config.model.style_block='demod': choose one of modulated, adain$"),
    ({"style_block": "adain", "modconv": "grouped"},
     "--config.model.style_block=adain has none: leave modconv at scaled"),
])
def test_bad_style_block_settings_are_refused(change, message):
  with pytest.raises(UserError, match=message) as error:
    rundir.prepare_config(tiny(**change))
  assert "\n" not in str(error.value)

