"""StyleGAN2: sampling (seeds, truncation, style mixing, interpolation), global state updates, config checks, and
training across strategies, XLA and precisions, with resume and the sample command."""

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import checkpoints
from launch import rundir
from launch import runtime as runtime_lib
from launch.trainer import Trainer
from launch.configs import stylegan2 as sg_config
from models import base
from models import layers
from models.stylegan2 import StyleGAN2
from models.stylegan2 import networks
import models
import pipelines
from tests.conftest import run_module

INFO = pipelines.DataInfo(spec="test", count=10, resolution=8, channels=1, num_classes=10)


def tiny(**model):
  """8x8 images, 16-dimensional latents, 16 and 8 feature maps, two mapping layers: a step in well under a second.
  The synthesis network is the reference's (filtered up-convolutions, linear output) unless ``model`` says
  otherwise."""
  c = sg_config.get_config("cpu")
  c.resolution = 8
  c.batch_size = 8
  c.steps = 2
  c.sample_grid = 4
  c.log_every = c.sample_every = c.checkpoint_every = 2
  c.runtime.steps_per_loop = 1
  c.model.update(dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=16, w_avg_samples=8,
                      synthesis_up="filtered", output_activation="linear"))
  c.model.update(model)
  return c


def _model(config, info=INFO, dtype=tf.float32, **hardware):
  return StyleGAN2(rundir.prepare_config(config), info, base.Hardware(compute_dtype=dtype, **hardware))


def _rng(batch, seed=0, call=0):
  return base.BatchRng(tf.constant([seed, call], tf.int64), 0, batch, 1)


@pytest.fixture(scope="module")
def model():
  m = _model(tiny())
  # Non-trivial noise strengths and average w, so that the checks below can tell noise and w apart.
  for v in m.generator_ema.variables:
    if "noise_strength" in v.name:
      v.assign(0.3)
  m.w_avg.assign(tf.random.stateless_normal([16], [1, 2]))
  return m


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")


# ---- sampling


def test_the_same_seed_gives_the_same_image(model):
  a = model.generate(_rng(4, seed=3)).numpy()
  assert a.shape == (4, 8, 8, 1) and a.dtype == np.float32
  np.testing.assert_array_equal(model.generate(_rng(4, seed=3)).numpy(), a)
  assert not np.allclose(model.generate(_rng(4, seed=4)).numpy(), a)
  assert not np.allclose(a[0], a[1])


def _ws(model, rng):
  net = model.generator_ema
  return model._broadcast(net.mapping(rng.normal([model.z_dim], "sample/z")))  # pylint: disable=protected-access


def _synthesis(model, ws, rng):
  net = model.generator_ema
  return tf.clip_by_value(net.synthesis(ws, model.sample_noises(net, rng)), -1.0, 1.0).numpy()


def test_truncation_psi_0_gives_the_image_of_the_average_w(model):
  rng = _rng(4, seed=5)
  average = tf.broadcast_to(model.w_avg[None, None], [4, model.num_ws, 16])
  np.testing.assert_allclose(model.generate(rng, truncation=0.0).numpy(), _synthesis(model, average, rng),
                             atol=1e-6)
  ws = _ws(model, rng)
  np.testing.assert_allclose(model.generate(rng, truncation=0.5).numpy(),
                             _synthesis(model, average + 0.5 * (ws - average), rng), atol=1e-6)


def test_style_mixing_switches_w_at_the_crossover_layer(model):
  rng = _rng(4, seed=6, call=2)
  mixed = model.generate(rng, mix_seed=9, mix_layer=3).numpy()
  first, second = _ws(model, rng), _ws(model, _rng(4, seed=9, call=2))
  expected = _synthesis(model, tf.concat([first[:, :3], second[:, 3:]], axis=1), rng)
  np.testing.assert_allclose(mixed, expected, atol=1e-6)
  assert not np.allclose(mixed, model.generate(rng).numpy())


def test_interpolation_frames_move_linearly_between_the_ws_of_consecutive_seeds(model):
  frames = 3
  # Call 1 of a 6-image batch holds images 6..11: segments 2 and 3 of seed 10 (from seed 12 to 13, 13 to 14).
  rng = _rng(6, seed=10, call=1)
  ws = model.interpolation_ws(model.generator_ema, rng, None, frames).numpy()[:, 0]

  def w_of_seed(seed):  # the w of the first image that --seed=seed draws
    return _ws(model, _rng(1, seed=seed)).numpy()[0, 0]

  anchors = {k: w_of_seed(10 + k) for k in (2, 3, 4)}
  for i, g in enumerate(range(6, 12)):
    k, t = g // frames, (g % frames) / frames
    np.testing.assert_allclose(ws[i], anchors[k] + t * (anchors[k + 1] - anchors[k]), atol=1e-5, err_msg=str(g))
  images = model.generate(rng, interpolate=frames).numpy()
  assert images.shape == (6, 8, 8, 1) and np.all(np.isfinite(images))


@pytest.mark.parametrize("options,message", [
    ({"steps": 10}, "StyleGAN2 sampling takes --truncation"),
    ({"mix_layer": 2}, "--mix_layer needs --mix_seed"),
    ({"mix_seed": 1, "mix_layer": 4}, "layers 0..3"),
    ({"mix_seed": 1, "interpolate": 4}, "either --interpolate or --mix_seed"),
    ({"interpolate": 0}, "--interpolate=0 must be at least 1"),
])
def test_bad_sampling_options_are_refused(model, options, message):
  with pytest.raises(UserError, match=message):
    model.generate(_rng(2), **options)


def test_conditional_networks_depend_on_the_label():
  m = _model(tiny(conditional=True))
  rng = _rng(4)
  a = m.generate(rng, tf.constant([1, 1, 1, 1]), ema=False).numpy()
  b = m.generate(rng, tf.constant([2, 2, 2, 2]), ema=False).numpy()
  assert not np.allclose(a, b)
  assert not np.allclose(m.discriminator(a, tf.constant([1] * 4)).numpy(),
                         m.discriminator(a, tf.constant([2] * 4)).numpy())


def test_reduced_precision_only_in_the_top_blocks():
  m = _model(tiny(reduced_precision_res=1), dtype=tf.bfloat16)
  assert [b.dtype for b in m.generator.synthesis.blocks] == [tf.float32, tf.bfloat16]
  assert [b.dtype for b in m.discriminator.blocks] == [tf.bfloat16]
  assert all(v.dtype == tf.float32 for v in m.variables if v.dtype.is_floating)
  images = m.generate(_rng(4))
  assert images.dtype == tf.float32 and m.discriminator(images).dtype == tf.float32
  assert networks.block_dtype(64, 1024, 4, tf.float16) == tf.float32  # 128..1024 are the top 4
  assert networks.block_dtype(128, 1024, 4, tf.float16) == tf.float16


# ---- global state


def test_ada_p_follows_the_overfitting_signal_every_interval():
  m = _model(tiny(augment="ada", augment_p=0.5, ada_interval=2, ada_kimg=0.4))
  step = 8 * 2 / 400.0  # global batch x interval / (ada_kimg * 1000)

  def update(sign):
    m.update_state(base.Stage(), tf.constant(0, tf.int64), tf.constant(0, tf.int64), {"D/real_sign": tf.constant(sign)})
    return float(m.augment_p.numpy())

  assert update(1.0) == 0.5  # the first step of an interval only accumulates
  assert update(0.8) == pytest.approx(0.5 + step)  # r_t = 0.9 > 0.6: D is overfitting, augment more
  assert float(m.ada_r_t.numpy()) == pytest.approx(0.9)
  assert update(0.1) == pytest.approx(0.5 + step)
  assert update(0.1) == pytest.approx(0.5)  # r_t = 0.1 < 0.6: augment less
  for _ in range(30):
    update(1.0)
  assert float(m.augment_p.numpy()) == 1.0
  for _ in range(60):
    update(-1.0)
  assert float(m.augment_p.numpy()) == 0.0


def test_fixed_p_does_not_move():
  m = _model(tiny(augment="fixed", augment_p=0.3))
  m.update_state(base.Stage(), tf.constant(0, tf.int64), tf.constant(0, tf.int64), {"D/real_sign": tf.constant(1.0)})
  m.update_state(base.Stage(), tf.constant(1, tf.int64), tf.constant(0, tf.int64), {"D/real_sign": tf.constant(1.0)})
  assert float(m.augment_p.numpy()) == pytest.approx(0.3)


def test_path_length_mean_and_average_w_follow_their_running_means():
  m = _model(tiny(pl_decay=0.1, w_avg_beta=0.5))
  m.update_state(base.Stage(), tf.constant(3, tf.int64), tf.constant(0, tf.int64), {"G_reg/path_length": tf.constant(2.0)})
  m.update_state(base.Stage(), tf.constant(3, tf.int64), tf.constant(0, tf.int64), {"G_reg/path_length": tf.constant(2.0)})
  assert float(m.pl_mean.numpy()) == pytest.approx(0.2 + 0.1 * (2.0 - 0.2))
  m.update_state(base.Stage(), tf.constant(3, tf.int64), tf.constant(0, tf.int64), {"G/loss": tf.constant(1.0)})
  from genscale import random as random_lib  # pylint: disable=g-import-not-at-top
  z = random_lib.normal_values(tf.constant([0, 3], tf.int64), "w_avg/z",
                               tf.reshape(tf.range(8 * 16, dtype=tf.int64), [8, 16]))
  mean = m.generator.mapping(z).numpy().mean(axis=0)
  np.testing.assert_allclose(m.w_avg.numpy(), 0.5 * mean, rtol=1e-5, atol=1e-7)


# ---- synthesis options


def _section(**model):
  """The resolved model section, as the model builds its networks from it on one CPU (filter_impl decided)."""
  return _model(tiny(**model)).config


def _synthesis_network(**model):
  m = _section(**model)
  return networks.SynthesisNetwork(m, 8, 1, layers.Keys(3), tf.float32)


def test_tanh_output_is_tanh_of_the_linear_output():
  ws = tf.random.stateless_normal([4, 5, 16], [3, 4])
  linear = _synthesis_network()(ws).numpy()
  squashed = _synthesis_network(output_activation="tanh")(ws).numpy()
  assert np.abs(linear).max() > 1.0  # the check below would not see tanh on small values
  np.testing.assert_allclose(squashed, np.tanh(linear), rtol=1e-5, atol=1e-6)


def test_nearest_up_layer_is_the_plain_layer_on_nearest_upsampled_input():
  m = _section(synthesis_up="nearest")
  up = networks.ModulatedLayer(m, 16, 8, 6, 8, layers.Keys(5), tf.float32, up=True)
  plain = networks.ModulatedLayer(m, 16, 8, 6, 8, layers.Keys(5), tf.float32)
  up.bias.assign(tf.random.stateless_normal([6], [7, 7]))  # non-zero, so a missed bias would show
  plain.bias.assign(up.bias)
  x = tf.random.stateless_normal([2, 4, 4, 8], [1, 1])
  w = tf.random.stateless_normal([2, 16], [2, 2])
  expected = plain(np.repeat(np.repeat(x.numpy(), 2, axis=1), 2, axis=2), w)
  np.testing.assert_allclose(up(x, w).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
  filtered = networks.ModulatedLayer(_section(), 16, 8, 6, 8, layers.Keys(5), tf.float32, up=True)
  filtered.bias.assign(up.bias)
  assert np.abs(filtered(x, w).numpy() - expected.numpy()).max() > 1e-2  # the two modes differ


# ---- configs




def test_filters_default_to_slices_under_xla_and_depthwise_convolutions_otherwise():
  """``filter_impl=auto`` is decided for the hardware the model is built for; the run's config keeps "auto"."""
  config = tiny()
  assert _model(config).config.filter_impl == "depthwise"
  assert _model(config, xla=True).config.filter_impl == "slices"
  assert _model(config, device="tpu").config.filter_impl == "slices"
  assert _model(tiny(filter_impl="slices")).config.filter_impl == "slices"
  assert config.model.filter_impl == "auto"
  block = _model(config, xla=True).generator.synthesis.blocks[-1]
  assert block.filter_impl == block.convs[0].filter_impl == "slices"  # what the networks were built with


@pytest.mark.parametrize("change,message", [
    ({"resolution": 48}, "square power of two"),
    ({"model.modconv": "fused"}, "unknown --config.model.modconv"),
    ({"model.filter_impl": "fft"}, "unknown --config.model.filter_impl"),
    ({"model.synthesis_up": "bilinear"}, "unknown --config.model.synthesis_up"),
    ({"model.output_activation": "sigmoid"}, "unknown --config.model.output_activation"),
    ({"model.augment": "sometimes"}, "unknown --config.model.augment"),
    ({"model.augment_p": 1.5}, "augment_p=1.5 must be in"),
    ({"model.augment_ops": "xflip,cutout"}, "augment_ops"),
])
def test_bad_settings_are_refused(change, message):
  c = tiny()
  for key, value in change.items():
    node = c
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  with pytest.raises(UserError, match=message):
    rundir.prepare_config(c)


@pytest.mark.parametrize("change,hardware,message", [
    ({"model.modconv": "grouped"}, {}, "only with XLA on"),
    ({"batch_size": 6}, {}, "6 examples per replica on 1 replicas, not a multiple of --config.model.mbstd_group_size=4"),
    ({"batch_size": 12}, {"replicas": 2}, "6 examples per replica on 2 replicas"),
])
def test_settings_the_hardware_cannot_run_are_refused_before_building(change, hardware, message):
  c = tiny()
  for key, value in change.items():
    node = c
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  config = rundir.prepare_config(c)  # the config alone is fine
  with pytest.raises(UserError, match=message):
    models.build(config, INFO, base.Hardware(**hardware))


def test_lazy_regularisers_are_phases_with_their_interval_and_rescaled_adam():
  m = _model(tiny(r1_interval=16, pl_interval=4, lr=0.002, beta2=0.99))
  assert [(p.name, p.optimizer, p.interval) for p in m.phases(base.Stage())] == [
      ("D", "d", 1), ("D_reg", "d", 16), ("G", "g", 1), ("G_reg", "g", 4)]
  d, g = m.optimizers["d"], m.optimizers["g"]
  assert float(d.learning_rate.numpy()) == pytest.approx(0.002 * 16 / 17)
  assert float(d.beta_2) == pytest.approx(0.99**(16 / 17))
  assert float(g.learning_rate.numpy()) == pytest.approx(0.002 * 4 / 5)


def test_regularisers_every_step_fold_r1_into_the_d_phase():
  m = _model(tiny(r1_interval=1, pl_interval=1, r1_gamma=2.0))
  assert [(p.name, p.interval) for p in m.phases(base.Stage())] == [("D", 1), ("G", 1), ("G_reg", 1)]
  batch = {"image": m.generate(_rng(4, seed=1), ema=False), "label": tf.zeros([4], tf.int32)}
  loss, metrics = m.phases(base.Stage())[0].loss(batch, _rng(4))
  game = np.log1p(np.exp(-metrics["D/real"].numpy())) + np.log1p(np.exp(metrics["D/fake"].numpy()))
  np.testing.assert_allclose(loss.numpy(), game + 0.5 * 2.0 * metrics["D/r1"].numpy(), rtol=1e-5)
  assert float(tf.reduce_min(metrics["D/r1"])) > 0


def test_conditional_without_labels_is_refused():
  unlabelled = pipelines.DataInfo(spec="folder:x", count=10, resolution=8, channels=1, num_classes=0)
  with pytest.raises(UserError, match="has no labels"):
    _model(tiny(conditional=True), unlabelled)


# ---- training


def train_config(**model):
  """ADA with p moving every 2 steps, lazy R1 and path length every 2 steps: in 2 steps every phase and every state
  update runs."""
  settings = dict(augment="ada", augment_p=0.5, ada_interval=2, ada_kimg=0.1, r1_interval=2, pl_interval=2)
  settings.update(model)
  return tiny(**settings)


def _trainer(config, **runtime):
  config = rundir.prepare_config(config)
  config.runtime.update(runtime)
  return Trainer(config, runtime_lib.create(config.runtime), pipelines.open_source(config.data))


def _weights(trainer):
  return {f"{i}:{v.name}": v.numpy() for i, v in enumerate(trainer.model.variables)}


def _train(config, steps, **runtime):
  trainer = _trainer(config, **runtime)
  result = trainer.run(steps)
  metrics, finite = result.values(), result.finite
  return trainer, metrics, finite, _weights(trainer)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """Two steps on one device (weights and metrics), a checkpoint of them in a run directory, and a third step."""
  config = train_config()
  trainer = _trainer(config)
  result = trainer.run(2)
  metrics, finite = result.values(), result.finite
  after_two = _weights(trainer)
  state = {name: getattr(trainer.model, name).numpy() for name in ("augment_p", "pl_mean", "w_avg")}
  workdir = str(tmp_path_factory.mktemp("sg2") / "run")
  rundir.write_config(trainer.config, trainer.source.info, workdir)
  store = checkpoints.Store(workdir, trainer.checkpoint, asynchronous=False)
  store.save(2)
  store.close()
  trainer.run(1)
  return dict(trainer=trainer, metrics=metrics, finite=finite, weights=after_two, state=state,
              workdir=workdir, store=store, unbroken=_weights(trainer),
              unbroken_pl_mean=float(trainer.model.pl_mean.numpy()))


def _assert_same_weights(a, b, atol=2e-5):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=atol, err_msg=name)


def test_two_training_steps_run_every_phase_and_move_the_state(one_device):
  metrics, state = one_device["metrics"], one_device["state"]
  assert one_device["finite"]
  assert {"D/loss", "D_reg/r1", "G/loss", "G_reg/path_length", "D/real_sign"} <= set(metrics)
  p = state["augment_p"]
  assert p == pytest.approx(0.5 + 0.16) or p == pytest.approx(0.5 - 0.16)  # one move of 8 x 2 / 100 images
  assert state["pl_mean"] > 0
  assert np.abs(state["w_avg"]).sum() > 0
  assert all(np.all(np.isfinite(v)) for v in one_device["weights"].values())


def test_resume_restores_ada_p_and_the_path_length_mean(one_device):
  """Restore the step-2 checkpoint over scrambled state and train step 2 again: the result equals the unbroken
  step 2, so everything the step depends on (ADA p and its accumulators, the path-length mean, w_avg, weights,
  optimizer slots, counters) is in the checkpoint."""
  trainer = one_device["trainer"]
  for v in trainer.model.variables:
    v.assign(tf.fill(v.shape, tf.constant(0.123, v.dtype) if v.dtype.is_floating else tf.constant(7, v.dtype)))
  assert one_device["store"].restore_latest() == 2
  assert trainer.model.augment_p.numpy() == one_device["state"]["augment_p"]
  assert trainer.model.pl_mean.numpy() == one_device["state"]["pl_mean"]
  trainer.run(1)  # from the restored data position, 2
  resumed, unbroken = _weights(trainer), one_device["unbroken"]
  for name in unbroken:
    np.testing.assert_array_equal(resumed[name], unbroken[name], err_msg=name)
  assert one_device["unbroken_pl_mean"] != one_device["state"]["pl_mean"]  # step 2 used and moved it



def test_xla_and_no_xla_agree(one_device):
  _, metrics, finite, compiled = _train(train_config(), 2, xla=True)
  assert finite
  _assert_same_weights(one_device["weights"], compiled)
  for name, value in one_device["metrics"].items():
    if not name.startswith("perf/"):
      assert metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name


# ---- sampling from a run


def test_sampler_passes_the_options_through(one_device):
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  trainer = one_device["trainer"]
  frames = Sampler(trainer.runtime, trainer.model, 6, interpolate=3).generate(seed=4, count=6)
  first_of_seed = Sampler(trainer.runtime, trainer.model, 1).generate(seed=5, count=1)
  assert frames.shape == (6, 8, 8, 1) and not np.allclose(frames[0], frames[1])
  # Frame 0 of segment 1 sits on the w of seed 5's first image; the noise differs (one noise for all frames).
  ws = trainer.model.interpolation_ws(trainer.model.generator_ema, base.BatchRng(tf.constant([4, 0], tf.int64), 0,
                                                                                  6, 1), None, 3).numpy()
  np.testing.assert_allclose(ws[3, 0], _ws(trainer.model, _rng(1, seed=5)).numpy()[0, 0], atol=1e-5)
  assert first_of_seed.shape == (1, 8, 8, 1)


def test_sample_command_with_truncation_and_style_mixing(one_device, tmp_path):
  grid = str(tmp_path / "grid.png")
  result = run_module("launch.sample", f"--workdir={one_device['workdir']}", "--num=8", "--truncation=0.7",
                      "--mix_seed=3", "--mix_layer=1", f"--out={grid}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert np.asarray(Image.open(grid)).shape[:2] == (3 * 9 + 1, 3 * 9 + 1)  # 8 images of 8x8 in 3 columns
  assert "wrote 8 samples" in result.stdout
