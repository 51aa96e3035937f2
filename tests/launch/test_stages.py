"""Training stages in the loop (``GenerativeModel.stage``): the input, the batch and the trace change where the model
says, the data position counts examples, and a run resumed on either side of a stage change equals an unbroken one.

The model is the loop tests' mean image with two stages: "coarse" (2x2 images, batch 8) for the first 24 images,
then "fine" (4x4, batch 4); the parameter image is average-pooled to the batch's resolution.
"""

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import checkpoints
from launch import loop
from models import base
from tests.conftest import build_trainer
from tests.launch import toy_model
import models
import pipelines

CHANGE = 24  # images: the first step with nimg >= 24 belongs to the fine stage


class StagedMeanImage(toy_model.MeanImage):
  fine_batch = 4

  def stage(self, nimg):
    if nimg < CHANGE:
      return base.Stage(key="coarse", name="coarse", resolution=2, global_batch=8, end_nimg=CHANGE)
    return base.Stage(key="fine", name="fine", resolution=4, global_batch=self.fine_batch)

  def phases(self, stage):
    self.asked = getattr(self, "asked", []) + [stage.key]  # the loop asks once per stage
    return super().phases(stage)

  def loss(self, batch, rng):
    size = int(batch["image"].shape[1])
    factor = int(self.m.shape[0]) // size
    pooled = tf.nn.avg_pool2d(self.m[None], factor, factor, "VALID")[0]
    x = tf.cast(batch["image"], tf.float32)
    per_example = tf.reduce_mean(tf.square(pooled - x), axis=[1, 2, 3])
    return per_example, {"fit/x_mean": tf.reduce_mean(x, axis=[1, 2, 3])}


models.register("staged_mean_image", lambda c: c, StagedMeanImage)


def _config(**overrides):
  config = toy_model.config(model={"name": "staged_mean_image", "lr": 0.5, "nan_at_step": -1, "width": 1},
                            ema_halflife_kimg=0.01, ema_rampup=None)
  config.update(overrides)
  return config


def _batch(source, batch, resolution, start_step):
  """The first global batch of the source's stream for this batch size and resolution from ``start_step``."""
  layout = pipelines.InputLayout(batch)
  ds = source.dataset(layout, seed=0, start_step=start_step, resolution=resolution, channels=1)
  return next(iter(ds))["image"].numpy()


def test_one_stage_models_keep_their_step_positions_and_one_trace(tiny_dcgan):
  trainer = build_trainer(tiny_dcgan)
  assert trainer.next_stage() == base.Stage() and trainer.steps_left_in_stage() >= 2**62
  trainer.run(2)
  trainer.position_offset.assign(3)
  assert trainer.position() == 2 + 3  # step + offset, as before stages
  assert list(trainer.trace_counts()) == [None]


def test_the_input_batch_and_trace_change_at_the_stage_end():
  trainer = build_trainer(_config())
  source = trainer.source
  assert trainer.dataset_spec()["image"].shape == (8, 2, 2, 1)
  first = trainer.run(10)  # cut at the stage end: 3 steps of 8 images
  assert first.finite and first.step == 3 and first.nimg == CHANGE
  assert first.stage.key == "coarse" and first.stage_start == (0, 0)
  assert trainer.dataset_spec()["image"].shape == (4, 4, 4, 1)
  assert trainer.position() == CHANGE // 4  # examples shown, counted in the new batch
  result = trainer.run(2)  # the next call enters the fine stage, with its own input
  metrics, finite = result.values(), result.finite
  assert trainer.global_batch == 4 and trainer.per_replica_batch == 4
  assert result.stage.key == "fine" and result.stage_start == (3, CHANGE)
  assert finite and int(trainer.nimg.numpy()) == CHANGE + 2 * 4
  # The fine stage's first steps read stream positions 24..31, at 4x4.
  first_two = np.concatenate([_batch(source, 4, 4, 6), _batch(source, 4, 4, 7)])
  assert metrics["fit/x_mean"] == pytest.approx(float(first_two.mean()), rel=1e-5)
  # EMA β per step from the stage's batch: half-life 10 images.
  assert float(trainer.ema_beta().numpy()) == pytest.approx(0.5**(4 / 10.0), rel=1e-6)
  counts = trainer.trace_counts()
  assert set(counts) == {"coarse", "fine"}
  later = trainer.run(3)
  assert trainer.trace_counts() == counts  # the fine stage's trace is reused
  assert later.stage_start is None  # not a new stage
  assert trainer.model.asked == ["coarse", "fine"]  # phases(stage): asked once per stage


def test_a_stage_batch_the_replicas_cannot_share_is_refused():
  StagedMeanImage.fine_batch = 5
  try:
    with pytest.raises(UserError, match="batch size 5 of training stage fine is not divisible by 2") as error:
      build_trainer(_config(), cpu_replicas=2)
  finally:
    StagedMeanImage.fine_batch = 4
  assert "\n" not in str(error.value)


def _weights(workdir, steps, **overrides):
  loop.train(_config(steps=steps, checkpoint_every=1, **overrides), str(workdir))
  reader = tf.train.load_checkpoint(checkpoints.latest(str(workdir)))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "model/" in k or k.startswith("n")}


@pytest.mark.parametrize("first", [2, 3])  # inside the coarse stage; exactly at the change
def test_a_resumed_run_equals_the_unbroken_one_across_the_stage_change(tmp_path, first, capsys):
  unbroken = _weights(tmp_path / "unbroken", 6)
  _weights(tmp_path / "resumed", first)
  resumed = _weights(tmp_path / "resumed", 6)
  assert "stage fine: 4x4 images, batch 4, from step 3 (kimg 0.0)" in capsys.readouterr().out
  assert unbroken.keys() == resumed.keys() and any("nimg" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


# ---- the log line's ETA, stage by stage


def test_the_eta_walks_the_stages_left_each_at_its_measured_or_scaled_pace():
  from launch.stages import Stages  # pylint: disable=g-import-not-at-top
  config = _config(steps=20)
  stages = Stages(StagedMeanImage(config, None, base.Hardware()), config, 1)
  # By hand: coarse is 3 steps of 8 images (24 images), then fine steps of 4. From 8 images, 20 steps:
  assert [(s.key, n) for s, n in stages.schedule(8, 20)] == [("coarse", 2), ("fine", 18)]
  assert stages.work(stages.at(0)) == 8 * 2 * 2 and stages.work(stages.at(CHANGE)) == 4 * 4 * 4
  assert stages.seconds_left(8, 20, {}) is None
  # Coarse timed at 0.1 s a step (32 pixels): fine, not timed yet, takes 64 pixels a step -> 0.2 s.
  assert stages.seconds_left(8, 20, {"coarse": 0.1}) == pytest.approx(2 * 0.1 + 18 * 0.2)
  # Once fine is timed, its own figure counts.
  assert stages.seconds_left(CHANGE + 8, 10, {"coarse": 0.1, "fine": 0.5}) == pytest.approx(10 * 0.5)


def test_the_log_line_passes_the_stage_aware_eta():
  from launch import actions  # pylint: disable=g-import-not-at-top
  trainer = build_trainer(_config(steps=8, log_every=1))
  now = [100.0]
  printed = []

  class Monitor:
    """The monitor's clock on a fake time: a line's pace is the seconds per step since the last line."""

    def start_clock(self, step, nimg):
      self.last = (now[0], step)

    def advance(self, step):
      pass

    def pace(self, step):
      time, last_step = self.last
      return (now[0] - time) / (step - last_step) if step > last_step else None

    def log(self, step, metrics, nimg, extra=None, eta=None):
      printed.append((step, eta))
      self.last = (now[0], step)

  log = actions.LogLine(8, 1, trainer, Monitor())
  for _ in range(5):  # steps 1-3 coarse (8 images each), then fine (4 images, 4x the pixels of a coarse step)
    log(trainer.run(1))
    now[0] += 1.0  # every step takes a second on this clock
  assert printed[0] == (1, None)  # nothing timed yet: the monitor falls back to its overall pace
  # After step 2: coarse at 1 s a step; 1 coarse step left, then 5 fine ones scaled to 2 s each.
  assert printed[1] == (2, pytest.approx(1 * 1.0 + 5 * 2.0))
  # Step 4's window crossed into fine, so fine is still scaled from coarse: 4 steps of 2 s.
  assert printed[3] == (4, pytest.approx(4 * 2.0))
  # Step 5 timed fine itself at 1 s a step: 3 steps left.
  assert printed[4] == (5, pytest.approx(3 * 1.0))
