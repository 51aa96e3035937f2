"""The evaluate command as a user runs it (one end-to-end run on a trained DCGAN), and the functions behind its
flags in-process: scores printed, metrics.jsonl, TensorBoard scalars, the cached reference reused or refused, the
same scores on two replicas, the real-vs-real floor, and one-line errors."""

import glob
import io
import json
import os
import shutil

import pytest
import tensorflow as tf

from evaluation.evaluator import EvalSettings
from evaluation.features import FeatureRunner
from genscale.errors import UserError
from launch import checkpoints
from launch import rundir
from launch import runtime as runtime_lib
from launch import scoring as command
from launch.configs import dcgan
from launch.trainer import Trainer
import pipelines
from tests.conftest import error_lines, run_module


def _scalars(workdir):
  """{tag: [(step, value)]} of the eval/ scalars in a run's TensorBoard events."""
  found = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith("eval/"):
          number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
          found.setdefault(value.tag, []).append((event.step, number))
  return found


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _train_dcgan(workdir, steps=4):
  """A DCGAN cpu run trained for a few steps with the loop's Trainer, saved as ``launch.train`` saves it (resolved
  config, data info, committed checkpoint), without the sample grids and summaries the evaluation doesn't read."""
  config = dcgan.get_config("cpu")
  config.model.update(g_width=8, d_width=8, latent_dim=16, g_norm="layer")  # layer norm: replica-count invariant
  config.update(steps=steps, batch_size=16)
  config = rundir.prepare_config(config)
  runtime = runtime_lib.create(config.runtime)
  source = pipelines.open_source(config.data)
  trainer = Trainer(config, runtime, source)
  finite = trainer.run(steps).finite
  assert finite and int(trainer.step.numpy()) == steps
  rundir.write_config(config, source.info, workdir)
  store = checkpoints.Store(workdir, trainer.checkpoint, asynchronous=False)
  store.save(steps)
  store.close()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  """A 4-step DCGAN cpu run, evaluated once by the command with the classifier."""
  workdir = str(tmp_path_factory.mktemp("eval") / "run")
  _train_dcgan(workdir)
  result = run_module("launch.evaluate", f"--workdir={workdir}", "--metrics=fid,kid", "--num=200",
                      "--extractor=classifier")
  assert result.returncode == 0, result.stderr[-3000:]
  [reference] = glob.glob(os.path.join(workdir, "eval", "reference-classifier-*.npz"))
  return workdir, result, reference


def test_evaluate_prints_scores_and_writes_jsonl_and_tensorboard_scalars(evaluated):
  workdir, result, _ = evaluated
  assert "ckpt-4 (step 4): 200 generated images (EMA weights) vs 4500 images of embedded:mnist" in result.stdout
  lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.startswith("  ")}
  assert float(lines["fid"][0]) > 0 and float(lines["kid"][0]) != 0 and lines["kid"][1] == "±"
  assert "reference embedded:mnist" in result.stderr and "ETA" in result.stderr  # progress bars
  [record] = _records(workdir)
  assert record["step"] == 4 and record["extractor"] == "classifier" and record["num"] == 200
  assert record["reference_count"] == 4500 and record["data"] == "embedded:mnist"
  assert set(record["metrics"]) == {"fid", "kid", "kid_std"}
  assert record["metrics"]["fid"] == pytest.approx(float(lines["fid"][0]), rel=1e-5)
  scalars = _scalars(workdir)
  assert scalars["eval/fid_classifier"] == [(4, pytest.approx(record["metrics"]["fid"], rel=1e-6))]
  assert [step for step, _ in scalars["eval/kid_classifier"]] == [4]


def _settings(**values):
  settings = EvalSettings(**{"metrics": "fid,kid", "num": 200, "kid_subsets": 100, **values})
  settings.validate()
  return settings


def test_two_replicas_reuse_the_reference_and_score_the_same_images(evaluated, monkeypatch):
  workdir, _, reference = evaluated

  def no_reference(*args, **kwargs):
    raise AssertionError("the reference statistics were computed again")

  monkeypatch.setattr(FeatureRunner, "of_source", no_reference)
  out = io.StringIO()
  evaluator = command.evaluate_checkpoint(workdir, _settings(reference=reference), checkpoint="4",
                                          runtime_options=dict(strategy="cpu", cpu_replicas=2), stream=out,
                                          progress=False)
  assert evaluator.runtime.num_replicas == 2
  first, second = _records(workdir)
  # The same seeds give the same images on two replicas as on one; features agree to float32 rounding.
  assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-4)
  assert second["metrics"]["kid"] == pytest.approx(first["metrics"]["kid"], rel=1e-3, abs=1e-7)
  assert "ckpt-4 (step 4): 200 generated images" in out.getvalue()


def test_a_reference_for_other_data_is_refused(evaluated):
  workdir, _, reference = evaluated
  with pytest.raises(UserError) as error:
    command.evaluate_checkpoint(workdir, _settings(reference=reference, data="embedded:mnist:test"),
                                stream=io.StringIO(), progress=False)
  assert str(error.value) == (
      f"--reference={reference} holds statistics for data='embedded:mnist', but this evaluation needs "
      "data='embedded:mnist:test'; pass another --reference or delete the file to recompute it")


def test_a_checkpoint_that_does_not_fit_the_model_is_a_one_line_error(evaluated, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(evaluated[0], workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  config["model"]["g_width"] = 16  # the checkpoint holds a generator of width 8
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with pytest.raises(UserError, match=r"can't restore .*ckpt-4 into the dcgan model that .*config.json describes "
                     r"\(.*shape.*\); was it written by another version of the code\?"):
    command.evaluate_checkpoint(workdir, _settings(), stream=io.StringIO(), progress=False)


def test_real_vs_real_gives_a_floor_below_the_model(evaluated):
  # The held-out test split scored against the train split's statistics (the cached reference): what a perfect
  # generator would reach with 500 images. The 4-step model is far above it.
  workdir, _, reference = evaluated
  out = io.StringIO()
  evaluator = command.evaluate_data("embedded:mnist:test", _settings(data="embedded:mnist", reference=reference,
                                                                     num=500), stream=out, progress=False)
  floor = evaluator.last_record["metrics"]
  assert evaluator.last_record["num"] == 500 and evaluator.last_record["reference_count"] == 4500
  assert 0 < floor["fid"] < 0.1 * _records(workdir)[0]["metrics"]["fid"]
  assert abs(floor["kid"]) < 0.1 * _records(workdir)[0]["metrics"]["kid"]
  assert out.getvalue().startswith("500 images of embedded:mnist:test vs 4500 images of embedded:mnist")


def test_missing_inception_weights_exit_with_one_line(tmp_path):
  result = run_module("launch.evaluate", f"--workdir={tmp_path / 'w'}", "--extractor=inception")
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert len(errors) == 1, result.stderr[-2000:]
  assert errors[0].startswith("genscale: error: --extractor=inception needs --inception_weights=PATH to "
                              "classify_image_graph_def.pb from inception-2015-12-05.tgz")
