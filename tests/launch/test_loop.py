"""The training loop: reductions over the global batch, strategies, precisions, XLA, EMA, the non-finite guard."""

import numpy as np
import pytest
import tensorflow as tf

from launch import loop
from tests.conftest import build_trainer
from tests.launch import toy_model
import pipelines


_trainer = build_trainer


def _first_global_batch(source, config):
  layout = pipelines.InputLayout(int(config.batch_size))
  ds = source.dataset(layout, seed=int(config.seed), start_step=0, resolution=int(config.resolution),
                      channels=int(config.channels))
  return next(iter(ds))["image"].numpy()


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("replicas", [1, 2])
def test_one_sgd_step_matches_the_closed_form(replicas):
  config = toy_model.config()
  trainer = _trainer(config, cpu_replicas=replicas)
  m0 = trainer.model.m.numpy()
  result = trainer.run(1)
  metrics, finite = result.values(), result.finite
  assert finite
  x = _first_global_batch(trainer.source, config)
  pixels = m0.size
  expected = m0 - 0.5 * 2.0 * (m0 - x.mean(axis=0)) / pixels
  np.testing.assert_allclose(trainer.model.m.numpy(), expected, rtol=1e-6, atol=1e-7)
  # Metrics are means over the global batch, whatever the number of replicas.
  assert metrics["fit/x_mean"] == pytest.approx(float(x.mean()), rel=1e-5)
  per_image = x.mean(axis=(1, 2, 3))
  assert metrics["fit/bright_mean"] == pytest.approx(float(per_image[per_image > -0.8].mean()), rel=1e-5)
  assert metrics["fit/loss"] == pytest.approx(float(np.mean((m0 - x)**2)), rel=1e-5)
  assert int(trainer.step.numpy()) == 1 and int(trainer.nimg.numpy()) == 8


def test_ema_follows_the_halflife_rule():
  config = toy_model.config(ema_halflife_kimg=0.004, ema_rampup=None)  # half-life 4 images = half a step
  trainer = _trainer(config)
  ema0 = trainer.model.ema.m.numpy()
  trainer.run(1)
  beta = 0.5**(8 / 4.0)
  expected = trainer.model.m.numpy() + (ema0 - trainer.model.m.numpy()) * beta
  np.testing.assert_allclose(trainer.model.ema.m.numpy(), expected, rtol=1e-6)


def test_ema_rampup_limits_the_halflife_early():
  config = toy_model.config(ema_halflife_kimg=10.0, ema_rampup=0.5)
  trainer = _trainer(config)
  trainer.run(3)  # nimg = 24, half-life min(10000, 12) images
  assert float(trainer.ema_beta().numpy()) == pytest.approx(0.5**(8 / 12.0), rel=1e-6)


def _weights(trainer):
  return {v.name + str(i): v.numpy() for i, v in enumerate(trainer.model.variables)}


def _replica_invariant_dcgan(tiny_dcgan):
  # Layer normalisation treats examples independently, so results don't depend on the batch split.
  tiny_dcgan.model.g_norm = "layer"
  tiny_dcgan.model.d_norm = "layer"
  return tiny_dcgan



def test_xla_and_no_xla_agree(tiny_dcgan):
  config = _replica_invariant_dcgan(tiny_dcgan)
  results = []
  for xla in (False, True):
    trainer = _trainer(config, xla=xla)
    metrics = trainer.run(2).values()
    results.append((_weights(trainer), metrics))
  for name, value in results[0][0].items():
    np.testing.assert_allclose(results[1][0][name], value, rtol=1e-4, atol=1e-5, err_msg=name)
  for name, value in results[0][1].items():
    if not name.startswith("perf/"):
      assert results[1][1][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_xla_under_mirrored_trains(tiny_dcgan):
  trainer = _trainer(tiny_dcgan, xla=True, cpu_replicas=2, steps_per_loop=2)
  result = trainer.run(3)
  metrics, finite = result.values(), result.finite
  assert finite and int(trainer.step.numpy()) == 3
  assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_each_precision_trains_with_finite_losses(tiny_dcgan, precision):
  trainer = _trainer(tiny_dcgan, precision=precision)
  before = _weights(trainer)
  result = trainer.run(3)
  metrics, finite = result.values(), result.finite
  assert finite
  assert {"D/loss", "G/loss", "D/real", "D/fake"} <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  after = _weights(trainer)
  assert all(v.dtype == np.float32 for v in after.values())
  assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_loss_scaling_skips_an_inf_gradient(tiny_dcgan):
  trainer = _trainer(tiny_dcgan, precision="mixed_float16")
  optimizer = trainer.optimizers["d"]  # the Trainer's loss-scaling wrapper of the model's optimizer
  variables = trainer.model.discriminator.trainable_variables
  scale = float(optimizer.dynamic_scale.numpy())
  before = [v.numpy() for v in variables]

  @tf.function
  def apply(value):
    grads = [tf.fill(v.shape, value) for v in variables]
    grads[0] = grads[0] * float("inf")
    optimizer.apply_gradients(zip(grads, variables))

  trainer.runtime.strategy.run(apply, args=(tf.constant(1.0),))
  for a, v in zip(before, variables):
    np.testing.assert_array_equal(a, v.numpy())
  assert float(optimizer.dynamic_scale.numpy()) == scale / 2
  # A finite gradient is applied afterwards.
  finite_apply = tf.function(lambda: optimizer.apply_gradients(
      zip([tf.fill(v.shape, 1.0) for v in variables], variables)))
  trainer.runtime.strategy.run(finite_apply)
  assert not np.array_equal(before[1], variables[1].numpy())


def test_lazy_phases_run_at_their_interval(tiny_dcgan):
  tiny_dcgan.model.n_critic = 3
  trainer = _trainer(tiny_dcgan, steps_per_loop=4)
  metrics = trainer.run(7).values()
  assert int(trainer.model.optimizers["d"].iterations.numpy()) == 7
  assert int(trainer.model.optimizers["g"].iterations.numpy()) == 3  # steps 0, 3, 6
  assert "G/loss" in metrics


def test_the_training_call_makes_no_variable_while_it_is_traced(tiny_dcgan):
  # A variable made during a trace makes TensorFlow trace the whole call a second time.
  trainer = _trainer(tiny_dcgan, steps_per_loop=2)
  made = []

  def creator(next_creator, **kwargs):
    made.append(kwargs.get("name"))
    return next_creator(**kwargs)

  with tf.variable_creator_scope(creator):
    result = trainer.run(2)
  assert made == [] and result.step == 2
  assert {"D/loss", "G/loss", "perf/input_wait_fraction"} <= set(result.values())


def test_more_metrics_than_slots_is_a_clear_error(monkeypatch):
  from launch import metrics  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(metrics.Accumulators, "CAPACITY", 2)
  sums = metrics.Accumulators()

  @tf.function
  def add(names):
    for name in names:
      sums.add(name, tf.constant(1.0))

  add(["a", "b"])
  with pytest.raises(ValueError, match="more than 2 training metrics; metric 'c' has no slot"):
    add(["a", "c"])
  assert {k: m.value for k, m in sums.read().items()} == {"a": 1.0, "b": 1.0}


def test_a_nonfinite_loss_ends_the_call_at_that_step():
  config = toy_model.config(model={"name": "mean_image", "lr": 0.5, "nan_at_step": 3, "width": 1})
  trainer = _trainer(config)
  result = trainer.run(10)
  metrics, finite = result.values(), result.finite
  assert not finite
  assert int(trainer.step.numpy()) == 4  # steps 0..3 ran; step 3 was the bad one
  assert np.isnan(metrics["fit/loss"])


def test_train_stops_on_nonfinite_loss_and_keeps_the_last_checkpoint(tmp_path):
  config = toy_model.config(steps=20, checkpoint_every=5, log_every=5, sample_every=10,
                            model={"name": "mean_image", "lr": 0.5, "nan_at_step": 12, "width": 1})
  workdir = str(tmp_path / "run")
  with pytest.raises(loop.NonFiniteLoss, match="fit/loss=nan at step 12"):
    loop.train(config, workdir)
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  latest = checkpoints.latest(workdir)
  assert latest.endswith("ckpt-10") and checkpoints.saved_step(latest) == 10
  assert np.all(np.isfinite(tf.train.load_variable(latest, "model/m/.ATTRIBUTES/VARIABLE_VALUE")))


def test_rollback_restores_the_last_checkpoint_and_skips_the_bad_data(tmp_path, capsys):
  config = toy_model.config(steps=20, checkpoint_every=5, log_every=5, sample_every=20, on_nonfinite="rollback",
                            model={"name": "mean_image", "lr": 0.5, "nan_at_step": 12, "width": 1})
  workdir = str(tmp_path / "run")
  metrics = loop.train(config, workdir)
  assert np.isfinite(metrics["fit/loss"])
  out = capsys.readouterr().out
  assert "non-finite fit/loss=nan at step 12: rolled back to step 10 (rollback 1 of 3)" in out
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  final = checkpoints.latest(workdir)
  assert checkpoints.saved_step(final) == 20
  # Steps 10.. continue from stream position 13: the diverged position 12 is skipped.
  assert tf.train.load_variable(final, "position_offset/.ATTRIBUTES/VARIABLE_VALUE") == 3


def test_rollbacks_are_limited(tmp_path):
  config = toy_model.config(steps=20, checkpoint_every=5, on_nonfinite="rollback", max_rollbacks=0,
                            model={"name": "mean_image", "lr": 0.5, "nan_at_step": 12, "width": 1})
  with pytest.raises(loop.NonFiniteLoss, match="at step 12"):
    loop.train(config, str(tmp_path / "run"))


def _scalars(workdir, prefix):
  """{tag: {step: value}} of a run's TensorBoard scalars whose tag starts with ``prefix``."""
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  found = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith(prefix):
          found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return found


def _overflow_config(**changes):
  """The toy model in mixed_float16 whose gradient overflows (is infinite) at step 1, loss finite throughout."""
  config = toy_model.config(steps=4, log_every=2, checkpoint_every=2, sample_every=4,
                            model={"name": "mean_image", "lr": 0.5, "nan_at_step": -1, "width": 1,
                                   "inf_grad_at_step": 1})
  config.runtime.precision = "mixed_float16"
  config.update(changes)
  return config


def test_loss_scaling_skips_an_overflowing_step_through_the_loop_and_reports_it(tmp_path):
  workdir = str(tmp_path / "run")
  metrics = loop.train(_overflow_config(), workdir)
  assert np.isfinite(metrics["fit/loss"])
  scalars = _scalars(workdir, "optimizer/sgd/")
  # Keras starts the dynamic scale at 2^15 and halves it at a non-finite gradient; growth comes after 2000 steps.
  assert scalars["optimizer/sgd/loss_scale"] == {2: 2.0**14, 4: 2.0**14}
  assert scalars["optimizer/sgd/skipped_nonfinite"] == {2: 1.0, 4: 1.0}  # counted in this process
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(checkpoints.latest(workdir))
  saved = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("loss_scale/")}
  assert 2.0**14 in [float(v) for v in saved.values()], saved  # the scale is part of the checkpoint
  m = tf.train.load_variable(checkpoints.latest(workdir), "model/m/.ATTRIBUTES/VARIABLE_VALUE")
  assert np.all(np.isfinite(m))


@pytest.mark.parametrize("case", ["mixed_float16 with a skipped step", "several steps per compiled call"])
def test_a_resumed_run_equals_the_unbroken_one(tmp_path, case):
  """The loss-scale state (scale, growth counter) and a multi-step call's data position survive a resume."""
  if case.startswith("mixed"):
    make = lambda steps: _overflow_config(steps=steps)
  else:
    make = lambda steps: toy_model.config(steps=steps, log_every=3, checkpoint_every=3, sample_every=6,
                                          runtime=dict(strategy="cpu", steps_per_loop=3))
  total = 4 if case.startswith("mixed") else 6
  loop.train(make(total), str(tmp_path / "unbroken"))
  loop.train(make(total // 2), str(tmp_path / "resumed"))
  loop.train(make(total), str(tmp_path / "resumed"))
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  values = []
  for run in ("unbroken", "resumed"):
    reader = tf.train.load_checkpoint(checkpoints.latest(str(tmp_path / run)))
    values.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k})
  assert values[0].keys() == values[1].keys() and any(k.startswith("model/") for k in values[0])
  for key, value in values[0].items():
    np.testing.assert_array_equal(values[1][key], value, err_msg=key)
