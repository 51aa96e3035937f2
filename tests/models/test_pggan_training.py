"""Progressive GAN training through the loop, across a fade-in: the schedule in the checkpoint, resume mid-fade,
one device vs Mirrored, XLA on vs off, and bfloat16 with XLA.

Schedule of the tiny run (batch 8, 8x8 target, 4x4 stable for 8 images, 8x8 faded in over 16):
  step 0, 1: 4x4 (lod 1)    step 2: 8x8 fading in, alpha 0.5 (lod 0.5)    step 3: 8x8 (lod 0)
"""

import numpy as np
import pytest
import tensorflow as tf

from launch import loop
from launch import runtime as runtime_lib
from tests.models.test_pggan import tiny_config
import pipelines

STEPS = 4
LODS = [1.0, 1.0, 0.5, 0.0, 0.0]  # lod used by step s (and, at index STEPS, by the next one)


def _config():
  c = tiny_config(8)
  c.model.stable_kimg = 0.008
  c.model.fade_kimg = 0.016
  return c


def _trainer(config, **runtime_overrides):
  config = loop.prepare_config(config)
  config.runtime.update(runtime_overrides)
  source = pipelines.open_source(config.data)
  trainer = loop.Trainer(config, runtime_lib.create(config.runtime), source.info)
  return trainer, source


def _state(trainer):
  values = {f"{i}:{v.name}": v.numpy() for i, v in enumerate(trainer.model.variables)}
  for name, optimizer in trainer.model.optimizers.items():
    values.update({f"{name}/{i}:{v.name}": v.numpy() for i, v in enumerate(optimizer.variables)})
  return values


def _assert_same(a, b, **tolerance):
  assert a.keys() == b.keys()
  for name, value in a.items():
    np.testing.assert_allclose(b[name], value, err_msg=name, **tolerance)


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
  """One device, float32: STEPS steps one at a time, a checkpoint written mid-fade (before step 2)."""
  trainer, source = _trainer(_config())
  iterator = iter(trainer.dataset(source, 0))
  lods, prefix = [float(trainer.model.lod.numpy())], None
  resolutions = []
  top_layer = trainer.model.generator.to_rgb[1].w.numpy()
  trainable = trainer.model.generator.trainable_variables + trainer.model.discriminator.trainable_variables
  updates = []
  for step in range(STEPS):
    resolutions.append(float(trainer.model.scalars()["resolution"]))
    before = [v.numpy() for v in trainable]
    metrics, finite = trainer.run(iterator, 1)
    updates.append(np.concatenate([np.abs(v.numpy() - b).ravel() for v, b in zip(trainable, before)]))
    assert finite and all(np.isfinite(v) for v in metrics.values())
    lods.append(float(trainer.model.lod.numpy()))
    if step == 1:
      prefix = trainer.checkpoint.write(str(tmp_path_factory.mktemp("pggan") / "ckpt"))
      # Layers of 8x8 got zero gradients while training at 4x4, so Adam (β1 = 0) left them unchanged.
      np.testing.assert_array_equal(trainer.model.generator.to_rgb[1].w.numpy(), top_layer)
  return dict(state=_state(trainer), lods=lods, resolutions=resolutions, checkpoint=prefix, updates=updates,
              alpha=float(trainer.model.scalars()["alpha"]), trainer=trainer, source=source)


def test_the_level_of_detail_follows_the_schedule_step_by_step(unbroken):
  assert unbroken["lods"] == LODS
  assert unbroken["resolutions"] == [4.0, 4.0, 8.0, 8.0]


def test_adam_restarts_when_a_fade_starts_and_ends(unbroken):
  """With β1 = 0, Adam's first update (t = 1) moves a weight by lr |g| / (|g| + ε / sqrt(1 - β2)) <= lr, = lr unless
  the gradient is tiny; later updates (t > 1) can move it by up to lr sqrt(1 - β2^t) / sqrt(1 - β2) > lr. Without
  the restart the new 8x8 layers' first update at step 2 would be 1.73 lr."""
  lr = 1e-3
  for step, first in [(0, True), (1, False), (2, True), (3, True)]:  # the fade starts before step 2, ends before 3
    update = unbroken["updates"][step]
    moved = update[update > 0]
    if first:
      assert moved.max() <= lr * 1.001, step
      assert np.median(moved) == pytest.approx(lr, rel=1e-3), step
    else:
      assert moved.max() > lr * 1.01, step


def test_a_run_resumed_mid_fade_equals_the_unbroken_run(unbroken):
  """Restores the mid-fade checkpoint into the finished trainer (saving a second trace): every value the rest of
  the run depends on must come from the checkpoint, since the trainer holds the end-of-run values otherwise."""
  checkpoint = unbroken["checkpoint"]
  assert tf.train.load_variable(checkpoint, "model/lod/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(0.5)
  trainer = unbroken["trainer"]
  trainer.checkpoint.read(checkpoint).assert_consumed()
  assert int(trainer.step.numpy()) == 2
  assert float(trainer.model.scalars()["alpha"]) == pytest.approx(0.5)  # continues the same fade
  iterator = iter(trainer.dataset(unbroken["source"], trainer.position()))
  _, finite = trainer.run(iterator, STEPS - 2)
  assert finite
  assert float(trainer.model.lod.numpy()) == LODS[STEPS]
  assert float(trainer.model.scalars()["alpha"]) == unbroken["alpha"]
  _assert_same(unbroken["state"], _state(trainer), rtol=0, atol=0)  # weights, EMA, optimizer slots: bitwise


def test_one_device_and_mirrored_reach_the_same_weights(unbroken):
  trainer, source = _trainer(_config(), cpu_replicas=2)
  assert trainer.runtime.num_replicas == 2
  _, finite = trainer.run(iter(trainer.dataset(source, 0)), STEPS)
  assert finite and float(trainer.model.lod.numpy()) == LODS[STEPS]
  _assert_same(unbroken["state"], _state(trainer), rtol=1e-4, atol=1e-5)


def test_xla_and_no_xla_agree(unbroken):
  trainer, source = _trainer(_config(), xla=True, steps_per_loop=STEPS)
  _, finite = trainer.run(iter(trainer.dataset(source, 0)), STEPS)
  assert finite and float(trainer.model.lod.numpy()) == LODS[STEPS]
  # XLA fuses differently: float rounding differs, and Adam turns a tiny gradient's rounding into up to a whole
  # step of lr = 1e-3 on that weight; 1e-4 is a tenth of one step.
  _assert_same(unbroken["state"], _state(trainer), rtol=1e-4, atol=1e-4)


def test_bfloat16_with_xla_trains_across_the_fade(unbroken):
  trainer, source = _trainer(_config(), precision="mixed_bfloat16", xla=True, steps_per_loop=STEPS)
  new_block = trainer.model.generator.to_rgb[1].w.numpy()
  metrics, finite = trainer.run(iter(trainer.dataset(source, 0)), STEPS)
  assert finite and all(np.isfinite(v) for v in metrics.values())
  assert float(trainer.model.lod.numpy()) == LODS[STEPS]
  model = trainer.model
  assert all(v.dtype == tf.float32 for v in model.generator.variables + model.discriminator.variables)
  assert not np.array_equal(trainer.model.generator.to_rgb[1].w.numpy(), new_block)  # trained once faded in
  del unbroken
