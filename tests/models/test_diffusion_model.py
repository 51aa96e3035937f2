"""The diffusion family as the loop and the sampler use it: network, guidance, options, configs and training.

The network tests share one tiny conditional model per formulation (built once per module) and run eagerly, so
they pay no tracing.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import ddpm as ddpm_config
from launch.configs import edm as edm_config
from models import base
from models.diffusion import model as diffusion
import pipelines
from tests.conftest import build_trainer

INFO = pipelines.DataInfo(spec="test", count=10, resolution=16, channels=1, num_classes=10)
NULL = 10  # the null class of a 10-class model
CONFIGS = {"ddpm": ddpm_config, "edm": edm_config}


def tiny(name="edm", **model):
  """Unconditional 16x16 digits, a two-level U-Net of widths 8-16 with attention at 8x8, batch 8, 3 sampling steps."""
  c = CONFIGS[name].get_config("cpu_uncond")
  c.resolution = 16
  c.batch_size = 8
  c.model.update(channels=8, channel_mults="1,2", num_blocks=1, attention_resolutions="8", sample_steps=3,
                 lr_warmup_kimg=0.0)
  c.runtime.steps_per_loop = 1
  c.model.update(model)
  return c


def _build(config, dtype=tf.float32, info=INFO):
  return diffusion.DiffusionModel(rundir.prepare_config(config), info, base.Hardware(compute_dtype=dtype))


def _perturb(network, scale=0.3):
  """Moves every weight off its initial value: the zero-initialised output layers would otherwise hide what the
  inputs do. All variables, since an EMA network's are not trainable."""
  for i, v in enumerate(network.variables):
    v.assign(v + scale * tf.random.stateless_normal(v.shape, [i, 17]))


def _rng(count=4, seed=0):
  return base.BatchRng(tf.constant([seed, 11], tf.int64), 0, count, 1)


@pytest.fixture(scope="module")
def conditional():
  """{"ddpm": model, "edm": model}: conditional, dropout 0.1, both networks perturbed (differently)."""
  out = {}
  for name in ("ddpm", "edm"):
    model = _build(tiny(name, conditional=True, dropout=0.1))
    _perturb(model.network)
    _perturb(model.network_ema, 0.25)
    out[name] = model
  return out


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


# ---- network and sampling


@pytest.mark.parametrize("name", ["ddpm", "edm"])
def test_generate_returns_float32_images_in_range(conditional, name):
  model = conditional[name]
  images = model.generate(_rng(), tf.constant([0, 1, 2, 3]))
  assert images.shape == (4, 16, 16, 1) and images.dtype == tf.float32
  assert float(tf.math.reduce_std(images)) > 0.05  # not a constant image (the output is clipped to [-1, 1])


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_half_precision_keeps_float32_weights_and_outputs(conditional, dtype):
  model = _build(tiny(conditional=True), dtype)
  assert model.network.compute_dtype == dtype
  assert all(v.dtype == tf.float32 for v in model.variables)
  for target, source in zip(model.network_ema.variables, conditional["edm"].network_ema.variables):
    target.assign(source)
  labels = tf.constant([0, 1, 2, 3])
  half = model.generate(_rng(), labels).numpy()
  assert half.dtype == np.float32 and np.all(np.isfinite(half))
  # The σ maths stays float32, so only the network's rounding separates the result from the float32 model's.
  full = conditional["edm"].generate(_rng(), labels).numpy()
  assert np.abs(half - full).mean() < 0.05


@pytest.mark.parametrize("sampler,options", [("ddpm", {}), ("ddim", {"eta": 0.5}), ("euler", {"churn": 5.0}),
                                             ("heun", {"churn": 5.0})])
def test_every_sampler_runs_in_generate_and_its_option_matters(conditional, sampler, options):
  model = conditional["ddpm"]
  labels = tf.constant([1, 2])
  images = model.generate(_rng(2), labels, sampler=sampler, steps=3, **options).numpy()
  assert images.shape == (2, 16, 16, 1) and np.all(np.isfinite(images)) and images.std() > 0
  if options:  # the stochastic option changes the result (so it reaches the sampler)
    plain = model.generate(_rng(2), labels, sampler=sampler, steps=3).numpy()
    assert np.abs(images - plain).max() > 1e-3


def test_dropout_masks_come_from_the_step_rng(conditional):
  net = conditional["edm"].network
  x = tf.random.stateless_normal([4, 16, 16, 1], [0, 1])
  noise, labels = tf.constant([0.1, 0.2, 0.3, 0.4]), tf.constant([1, 2, 3, NULL])
  a = net(x, noise, labels, rng=_rng(seed=1)).numpy()
  np.testing.assert_array_equal(a, net(x, noise, labels, rng=_rng(seed=1)).numpy())
  assert not np.allclose(a, net(x, noise, labels, rng=_rng(seed=2)).numpy())
  plain = net(x, noise, labels).numpy()  # sampling: no dropout, deterministic
  assert not np.allclose(a, plain)
  np.testing.assert_array_equal(plain, net(x, noise, labels).numpy())


def test_guidance_ends_are_the_unconditional_and_conditional_predictions(conditional):
  model = conditional["edm"]
  net = model.network
  labels = tf.constant([3, 1, 4, 1])
  x = 0.5 * tf.random.stateless_normal([4, 16, 16, 1], [2, 1])
  sigma = tf.constant(0.7)

  def direct(classes):
    return model.formulation.denoise(net, x, tf.fill([4], sigma), classes).numpy()

  cond, uncond = direct(labels), direct(tf.fill([4], NULL))
  assert np.abs(cond - uncond).max() > 1e-3  # the label matters
  guided = lambda w: model.denoiser(net, labels, w)(x, sigma).numpy()
  np.testing.assert_allclose(guided(1.0), cond, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(guided(0.0), uncond, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(guided(2.5), uncond + 2.5 * (cond - uncond), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(model.denoiser(net, None)(x, sigma).numpy(), uncond, rtol=1e-5, atol=1e-5)


def test_label_dropout_replaces_labels_with_the_null_class(conditional):
  model = conditional["edm"]
  seen = []
  formulation_loss = model.formulation.loss
  model.formulation.loss = lambda net, x0, labels, rng: (seen.append(labels.numpy()) or tf.zeros([64]),
                                                          tf.ones([64]))
  try:
    rng = _rng(64)
    model.loss({"image": tf.zeros([64, 16, 16, 1]), "label": tf.fill([64], 7)}, rng)
  finally:
    model.formulation.loss = formulation_loss
  dropped = rng.uniform([], "label_dropout").numpy() < 0.1
  np.testing.assert_array_equal(seen[0], np.where(dropped, NULL, 7))
  assert 0 < dropped.sum() < 20


def test_generate_is_deterministic_and_uses_the_ema_network(conditional):
  model = conditional["edm"]
  labels = tf.constant([5, 6, 7, 8])
  first = model.generate(_rng(), labels, sampler="ddim", steps=3).numpy()
  np.testing.assert_array_equal(first, model.generate(_rng(), labels, sampler="ddim", steps=3).numpy())
  assert not np.allclose(first, model.generate(_rng(seed=5), labels, sampler="ddim", steps=3).numpy())
  assert not np.allclose(first, model.generate(_rng(), labels, ema=False, sampler="ddim", steps=3).numpy())


def test_generate_compiles_with_xla():
  config = tiny(channels=4, channel_mults="1,1", attention_resolutions="4")
  config.resolution = 8
  model = _build(config)
  _perturb(model.network_ema)
  fn = lambda key: model.generate(base.BatchRng(key, 0, 2, 1), sampler="euler", steps=2, churn=2.0)
  key = tf.constant([0, 1], tf.int64)
  np.testing.assert_allclose(tf.function(fn, jit_compile=True)(key).numpy(), tf.function(fn)(key).numpy(),
                             rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("options,message", [
    ({"truncation": 0.5}, "diffusion sampling takes --sampler"),
    ({"sampler": "plms"}, "unknown --sampler='plms'"),
    ({"sampler": "heun", "eta": 0.5}, "--eta applies to the ddim sampler only"),
    ({"sampler": "ddim", "churn": 5.0}, "--churn applies to the euler and heun samplers only"),
    ({"steps": 0}, "--steps=0 must be at least 1"),
    ({"sampler": "ddim", "steps": 1001}, "more than the 1000 DDPM timesteps"),
])
def test_bad_sampling_options_are_refused(conditional, options, message):
  with pytest.raises(UserError, match=message):
    conditional["ddpm"].generate(_rng(), **options)


def test_guidance_needs_a_conditional_model():
  with pytest.raises(UserError, match="--guidance=2.0 needs a class-conditional model"):
    _build(tiny()).generate(_rng(), guidance=2.0)


@pytest.mark.parametrize("name,change,message", [
    ("edm", {"channel_mults": "1,x"}, "channel_mults='1,x': use comma-separated integers"),
    ("edm", {"channel_mults": "1,2,2,2"}, "can't be halved 3 times"),
    ("edm", {"attention_resolutions": "16,7"}, "7 is not a feature-map size of this U-Net"),
    ("edm", {"noise_embedding": "learned"}, "unknown --config.model.noise_embedding"),
    ("edm", {"sampler": "dpm"}, "unknown --config.model.sampler='dpm'"),
    ("edm", {"guidance": 3.0}, "needs a class-conditional model"),
    ("edm", {"num_heads": 3}, "num_heads=3 must divide every level's width"),
    ("ddpm", {"schedule": "sigmoid"}, "unknown --config.model.schedule='sigmoid'"),
    ("ddpm", {"prediction": "x0"}, "unknown --config.model.prediction='x0'"),
])
def test_bad_model_settings_are_refused(name, change, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(")):
    rundir.prepare_config(tiny(name, **change))


def test_conditional_without_labels_is_refused():
  unlabelled = pipelines.DataInfo(spec="folder:x", count=10, resolution=16, channels=1, num_classes=0)
  with pytest.raises(UserError, match="has no labels"):
    _build(tiny(conditional=True), info=unlabelled)




# ---- training through the loop's Trainer




def _training_config(name, **model):
  config = tiny(name, conditional=True, dropout=0.1, lr=2e-3, **model)
  return config


def _losses_per_10_steps(trainer):
  losses = []
  for _ in range(10):
    result = trainer.run(10)
    metrics, finite = result.values(), result.finite
    assert finite
    losses.append(metrics["diffusion/loss"])
  return losses


@pytest.mark.parametrize("name", ["ddpm", "edm"])
def test_training_loss_decreases_within_100_steps(name):
  trainer = build_trainer(_training_config(name), steps_per_loop=10)
  losses = _losses_per_10_steps(trainer)
  # Mean loss of steps 0-9 against steps 90-99 (the seed is fixed, so the comparison is reproducible).
  assert losses[-1] < 0.7 * losses[0], losses


def test_mirrored_bfloat16_step_matches_the_loss_of_the_whole_batch():
  trainer = build_trainer(_training_config("edm"), cpu_replicas=2, precision="mixed_bfloat16")
  model, strategy = trainer.model, trainer.runtime.strategy
  assert trainer.runtime.num_replicas == 2 and model.network.compute_dtype == tf.bfloat16
  # Step 0's loss computed eagerly on the whole global batch, as one replica would see it.
  first = next(iter(trainer.dataset(0)))
  whole = {k: tf.concat(strategy.experimental_local_results(v), 0) for k, v in first.items()}
  rng = base.BatchRng(tf.constant([trainer.seed, 0], tf.int64), 0, trainer.global_batch, 1)
  expected = float(tf.reduce_mean(model.loss(whole, rng)[0]))
  before = [v.numpy() for v in model.network.trainable_variables]

  result = trainer.run(1)
  metrics, finite = result.values(), result.finite
  assert finite and int(trainer.step.numpy()) == 1
  # Each replica drew its own rows of the same σ, noise, dropout masks and label drops: the same per-example
  # losses, up to bfloat16 rounding. A mismatch in the split would change the loss by far more.
  assert metrics["diffusion/loss"] == pytest.approx(expected, rel=0.01)
  buckets = [name for name in metrics if name.startswith("loss_bucket/sigma_")]
  assert buckets and all(np.isfinite(metrics[name]) for name in buckets)
  after = [v.numpy() for v in model.network.trainable_variables]
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))
  assert all(v.dtype == tf.float32 for v in model.network_ema.variables)
