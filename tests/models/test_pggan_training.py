"""Progressive GAN training through the loop, across a fade-in: the stages (input resolution, batch, one trace
each), the schedule in the checkpoint, resume mid-fade and across a stage change, XLA on
vs off, and bfloat16 with XLA.

Schedule of the tiny run (8x8 target; batch 16 at 4x4 and 8 at 8x8; 4x4 stable for 16 images, 8x8 faded in over
32), one stage per line:
  steps 0, 1: 4x4, batch 16 (lod 1; nimg 0, 16)
  steps 2, 3: 8x8 fading in, batch 8, alpha 0.5 and 0.75 (lod 0.5, 0.25; nimg 32, 40)
  step 4:     8x8, batch 8 (lod 0; nimg 48)
"""

import numpy as np
import pytest
import tensorflow as tf

from launch import rundir
from launch import runtime as runtime_lib
from launch.trainer import Trainer
from tests.models.test_pggan import tiny_config
import pipelines

STEPS = 5
LODS = [1.0, 1.0, 0.5, 0.25, 0.0, 0.0]  # lod used by step s (and, at index STEPS, by the next one)
STAGES = [(0, False), (0, False), (1, True), (1, True), (1, False)]
IMAGES = [(16, 4), (16, 4), (8, 8), (8, 8), (8, 8)]  # (global batch, resolution) of each step's input


def _config():
  c = tiny_config(8)
  c.model.stable_kimg = 0.016
  c.model.fade_kimg = 0.032
  c.model.batch_by_resolution = "4:16"
  return c


def run_steps(trainer, steps):
  """Runs ``steps`` steps as the loop does: compiled calls cut at stage ends (each new stage gets its input).
  Returns (the last call's metrics, all finite)."""
  target, finite, metrics = int(trainer.step.numpy()) + steps, True, {}
  while finite and int(trainer.step.numpy()) < target:
    result = trainer.run(target - int(trainer.step.numpy()))
    metrics, finite = result.values(), result.finite
  return metrics, finite


def _trainer(config, **runtime_overrides):
  config = rundir.prepare_config(config)
  config.runtime.update(runtime_overrides)
  return Trainer(config, runtime_lib.create(config.runtime), pipelines.open_source(config.data))


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
  """One device, float32: STEPS steps one at a time, checkpoints written before step 2 (the stage change to the
  fade) and before step 3 (mid-fade)."""
  trainer = _trainer(_config())
  lods, checkpoints = [float(trainer.model.lod.numpy())], {}
  resolutions, stages, shapes, traces = [], [], [], []
  top_layer = trainer.model.generator.to_rgb[1].w.numpy()
  trainable = trainer.model.generator.trainable_variables + trainer.model.discriminator.trainable_variables
  updates = []
  for step in range(STEPS):
    if step in (2, 3):
      checkpoints[step] = trainer.checkpoint.write(str(tmp_path_factory.mktemp("pggan") / "ckpt"))
    resolutions.append(float(trainer.model.scalars()["resolution"]))
    before = [v.numpy() for v in trainable]
    if trainer.stage is None or trainer.next_stage().key != trainer.stage.key:
      shapes.append((step, tuple(trainer.dataset_spec()["image"].shape)))
    result = trainer.run(1)
    metrics, finite = result.values(), result.finite
    stages.append(result.stage.key)
    assert (result.stage_start is not None) == (shapes[-1][0] == step)  # a new stage, and only then
    traces.append(trainer.trace_counts())
    updates.append(np.concatenate([np.abs(v.numpy() - b).ravel() for v, b in zip(trainable, before)]))
    assert finite and all(np.isfinite(v) for v in metrics.values())
    lods.append(float(trainer.model.lod.numpy()))
    if step == 3:
      state_after_fade = _state(trainer)
    if step == 1:
      # The 8x8 layers are in no phase of the 4x4 stage: unchanged.
      np.testing.assert_array_equal(trainer.model.generator.to_rgb[1].w.numpy(), top_layer)
  return dict(state=_state(trainer), lods=lods, resolutions=resolutions, checkpoints=checkpoints, updates=updates,
              alpha=float(trainer.model.scalars()["alpha"]), trainer=trainer, stages=stages,
              shapes=shapes, traces=traces, nimg=int(trainer.nimg.numpy()), state_after_fade=state_after_fade)


def test_the_level_of_detail_follows_the_schedule_step_by_step(unbroken):
  assert unbroken["lods"] == LODS
  assert unbroken["resolutions"] == [4.0, 4.0, 8.0, 8.0, 8.0]
  assert unbroken["nimg"] == 16 + 16 + 8 + 8 + 8


def test_the_input_changes_resolution_and_batch_at_the_scheduled_kimg(unbroken):
  """The 4x4 stage ends after 0.016 kimg (its last step starts at nimg 16); the fade's input is 8x8, batch 8."""
  assert unbroken["stages"] == STAGES
  assert unbroken["shapes"] == [(0, (16, 4, 4, 1)), (2, (8, 8, 8, 1)), (4, (8, 8, 8, 1))]
  trainer = unbroken["trainer"]
  assert trainer.model.stage(16).key == (0, False) and trainer.model.stage(17).key == (1, True)
  assert trainer.model.stage(17).end_nimg == 48 and trainer.model.stage(48).end_nimg is None


def test_each_stage_is_traced_once_and_only_when_it_starts(unbroken):
  traces = unbroken["traces"]
  four, fade, eight = (0, False), (1, True), (1, False)
  assert [sorted(t) for t in traces] == [[four]] * 2 + [[four, fade]] * 2 + [[four, eight, fade]]
  assert traces[1] == traces[0] and traces[3] == traces[2]  # the second step of a stage reuses its trace
  assert traces[4][(1, False)] == 1 and traces[2][(1, True)] == 1


def test_adam_restarts_when_a_fade_starts_and_ends(unbroken):
  """With β1 = 0, Adam's first update (t = 1) moves a weight by lr |g| / (|g| + ε / sqrt(1 - β2)) <= lr, = lr unless
  the gradient is tiny; later updates (t > 1) can move it by up to lr sqrt(1 - β2^t) / sqrt(1 - β2) > lr. Without
  the restart the new 8x8 layers' first update at step 2 would be 1.73 lr."""
  lr = 1e-3
  # The fade starts before step 2 and ends before step 4.
  for step, first in [(0, True), (1, False), (2, True), (3, False), (4, True)]:
    update = unbroken["updates"][step]
    moved = update[update > 0]
    if first:
      assert moved.max() <= lr * 1.001, step
      assert np.median(moved) == pytest.approx(lr, rel=1e-3), step
    else:
      assert moved.max() > lr * 1.01, step


@pytest.mark.parametrize("at", [3, 2])  # mid-fade (alpha 0.75 next); at the change from 4x4 to the fade
def test_a_resumed_run_equals_the_unbroken_run(unbroken, at):
  """Restores a checkpoint into the finished trainer (saving new traces): every value the rest of the run depends
  on must come from the checkpoint, since the trainer holds the end-of-run values otherwise."""
  checkpoint = unbroken["checkpoints"][at]
  assert tf.train.load_variable(checkpoint, "model/lod/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(LODS[at])
  trainer = unbroken["trainer"]
  trainer.checkpoint.read(checkpoint).assert_consumed()
  assert int(trainer.step.numpy()) == at
  assert float(trainer.model.scalars()["alpha"]) == pytest.approx(1.0 - LODS[at])  # continues the same fade
  traces = trainer.trace_counts()
  _, finite = run_steps(trainer, STEPS - at)
  assert finite and trainer.trace_counts() == traces  # the stages' traces are reused
  assert float(trainer.model.lod.numpy()) == LODS[STEPS]
  assert float(trainer.model.scalars()["alpha"]) == unbroken["alpha"]
  _assert_same(unbroken["state"], _state(trainer), rtol=0, atol=0)  # weights, EMA, optimizer slots: bitwise



def test_xla_and_no_xla_agree(unbroken):
  """Through the 4x4 stage and the fade (two XLA compilations; the stable 8x8 stage adds nothing new here)."""
  trainer = _trainer(_config(), xla=True, steps_per_loop=STEPS)
  _, finite = run_steps(trainer, 4)
  assert finite and float(trainer.model.lod.numpy()) == LODS[4]
  # XLA fuses differently: float rounding differs, and Adam turns a tiny gradient's rounding into up to a whole
  # step of lr = 1e-3 on that weight; 1e-4 is a tenth of one step.
  _assert_same(unbroken["state_after_fade"], _state(trainer), rtol=1e-4, atol=1e-4)


def test_bfloat16_with_xla_trains_across_the_fade(unbroken):
  """Through the 4x4 stage and the fade (two stages, so two XLA compilations: the third adds nothing here)."""
  trainer = _trainer(_config(), precision="mixed_bfloat16", xla=True, steps_per_loop=STEPS)
  new_block = trainer.model.generator.to_rgb[1].w.numpy()
  metrics, finite = run_steps(trainer, 4)
  assert finite and all(np.isfinite(v) for v in metrics.values())
  assert sorted(trainer.trace_counts()) == [(0, False), (1, True)]
  assert float(trainer.model.lod.numpy()) == LODS[4]
  model = trainer.model
  assert all(v.dtype == tf.float32 for v in model.generator.variables + model.discriminator.variables)
  assert not np.array_equal(trainer.model.generator.to_rgb[1].w.numpy(), new_block)  # trained once faded in
  del unbroken


def test_a_fresh_process_resumes_mid_fade_as_the_unbroken_run(tmp_path):
  """``launch.train`` to step 3 (mid-fade: alpha 0.75 next) here, then the same command to step 5 in a new process
  (nothing traced, nothing cached): its final checkpoint equals, bitwise, a run of 5 steps in one go."""
  from launch import checkpoints, loop  # pylint: disable=g-import-not-at-top
  from launch.configs import common, pggan  # pylint: disable=g-import-not-at-top
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  changes = {"resolution": 8, "batch_size": 8, "model.latent_dim": 16, "model.width_base": 128,
             "model.width_max": 32, "model.stable_kimg": 0.016, "model.fade_kimg": 0.032,
             "model.batch_by_resolution": "4:16", "runtime.steps_per_loop": 1, "checkpoint_every": 3,
             "log_every": 1, "sample_every": 100, "sample_grid": 4, "histogram_every": 0}
  config = lambda steps: common.apply(pggan.get_config("cpu"), {**changes, "steps": steps})
  unbroken, resumed = str(tmp_path / "unbroken"), str(tmp_path / "resumed")
  loop.train(config(5), unbroken)
  loop.train(config(3), resumed)
  flags = [f"--config.{k}={v}" for k, v in {**changes, "steps": 5}.items()]
  second = run_module("launch.train", "--config=launch/configs/pggan.py:cpu", *flags, f"--workdir={resumed}")
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resuming at step 3" in second.stdout and "stage 8x8 fade-in" in second.stdout
  values = []
  for run in (unbroken, resumed):
    reader = tf.train.load_checkpoint(checkpoints.latest(run))
    values.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k})
  assert values[0].keys() == values[1].keys()
  assert values[1]["model/lod/.ATTRIBUTES/VARIABLE_VALUE"] == pytest.approx(LODS[STEPS])
  for key, value in values[0].items():
    np.testing.assert_array_equal(values[1][key], value, err_msg=key)
