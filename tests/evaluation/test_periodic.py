"""Evaluation during training: settings checked up front, the cost reported, and the scores at the due steps in
metrics.jsonl, TensorBoard and the log."""

import glob
import json
import os

import keras
import pytest
import tensorflow as tf

from evaluation import periodic
from genscale.errors import UserError
from launch import actions
from launch import loop
from launch import rundir
from launch import runtime as runtime_lib
import models
import pipelines


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


def _eval_config(config, **values):
  # The training loop's config has these keys (launch/configs/common.py); set them on any config for this test.
  defaults = dict(eval_every=2, eval_num=32, eval_metrics="fid,kid", eval_extractor="classifier",
                  eval_inception_weights=None, eval_data="embedded:mnist:test", eval_batch_size=16)
  for key, value in {**defaults, **values}.items():
    config[key] = value
  return config


def test_bad_evaluation_settings_are_refused_before_training(tiny_dcgan):
  with pytest.raises(UserError, match=r"--config.eval_every=-1 must be 0 \(off\) or a number of steps"):
    periodic.check_config(_eval_config(tiny_dcgan, eval_every=-1))
  with pytest.raises(UserError, match="--config.eval_extractor=inception needs --config.eval_inception_weights=PATH"):
    periodic.check_config(_eval_config(tiny_dcgan, eval_extractor="inception"))
  periodic.check_config(_eval_config(tiny_dcgan, eval_every=0, eval_extractor="inception"))  # off: not checked
  assert periodic.PeriodicEvaluation.from_config(_eval_config(tiny_dcgan, eval_every=0), None, None, None,
                                                 None) is None


def test_an_evaluation_reports_its_scores_and_its_share_of_the_time(tiny_dcgan):
  config = rundir.prepare_config(_eval_config(tiny_dcgan, eval_every=5))
  runtime = runtime_lib.create(config.runtime)
  info = pipelines.open_source(config.data).info
  with runtime.strategy.scope():
    model = models.build(config, info, runtime.hardware)
  times = iter([100.0, 130.0, 136.0, 136.0])  # built at 100 s; the evaluation runs from 130 s to 136 s
  printed = []
  evaluation = periodic.PeriodicEvaluation(config, runtime, model, info, None, printed.append, lambda: next(times))
  action = actions.Evaluate(12, evaluation, monitor=None)  # how the loop runs it
  assert [s for s in range(1, 13) if action.due(s)] == [5, 10, 12]
  scalars = evaluation(5)
  assert scalars["perf/eval_sec"] == 6.0 and scalars["perf/eval_fraction"] == pytest.approx(6 / 36)
  assert scalars["eval/fid_classifier"] > 0
  assert printed[0].startswith(f"eval step 5: fid={scalars['eval/fid_classifier']:.4g} kid=")
  assert printed[0].endswith("(32 images, classifier) in 6.0s; evaluation is 16.7% of this process's 36s")


def _events(workdir):
  found = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(event.step)
  return found


def test_training_evaluates_at_the_due_steps(tiny_dcgan, tmp_path, capsys):
  config = _eval_config(tiny_dcgan, eval_every=2)
  config.update(steps=4, log_every=2, sample_every=4, checkpoint_every=4, sample_grid=4, histogram_every=0)
  workdir = str(tmp_path / "run")
  loop.train(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [2, 4] and records[0]["num"] == 32
  assert records[0]["reference_count"] == 500  # eval_data: the test split
  events = _events(workdir)
  assert sorted(events["eval/fid_classifier"]) == [2, 4] and sorted(events["perf/eval_fraction"]) == [2, 4]
  out = capsys.readouterr().out
  assert "eval step 2: fid=" in out and "eval step 4: fid=" in out and "% of this process's" in out
