"""The Evaluator the training loop calls: settings from the config, one reference, records and scalars."""

import json
import os

import keras
import tensorflow as tf
import pytest

from evaluation.evaluator import EvalSettings, Evaluator, parse_metrics
from genscale.errors import UserError
from launch import rundir
from launch import runtime as runtime_lib
import models
import pipelines


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


def test_metrics_are_parsed_and_checked():
  assert parse_metrics("FID, kid,fid") == ("fid", "kid")
  with pytest.raises(UserError, match="unknown --metrics entry 'lpips': choose from fid, kid, is, pr"):
    parse_metrics("fid,lpips")


def test_settings_come_from_the_config_and_arguments_override_them(tiny_dcgan):
  config = tiny_dcgan
  config.eval_num = 123
  config.eval_metrics = "fid,is"
  settings = EvalSettings.from_config(config)
  assert settings.num == 123 and settings.metrics == ("fid", "is") and settings.extractor == "classifier"
  assert EvalSettings.from_config(config, num=7, metrics=None).num == 7
  config.eval_metrics = "fid,lpips"
  with pytest.raises(UserError, match="unknown --config.eval_metrics entry 'lpips'"):
    EvalSettings.from_config(config)
  config.eval_metrics = "fid"
  config.eval_extractor = "inception"
  with pytest.raises(UserError, match="needs --config.eval_inception_weights=PATH"):
    EvalSettings.from_config(config)
  config.eval_inception_weights = "/no/such/classify_image_graph_def.pb"
  with pytest.raises(UserError, match="--config.eval_inception_weights=/no/such/classify_image_graph_def.pb does not"):
    EvalSettings.from_config(config)


def _evaluator(config, workdir):
  config = rundir.prepare_config(config)
  runtime = runtime_lib.create(config.runtime)
  info = pipelines.open_source(config.data).info
  with runtime.strategy.scope():
    model = models.build(config, info, runtime.hardware)
  return Evaluator(runtime, model, config, info, workdir, progress=False, kid_subsets=10)


def test_the_evaluator_scores_a_model_and_computes_its_reference_once(tiny_dcgan, tmp_path):
  config = tiny_dcgan
  config.eval_num = 64
  config.eval_metrics = "fid,kid,is,pr"
  config.eval_data = "embedded:mnist:test"  # 500 reference images keep the test quick
  workdir = str(tmp_path)
  evaluator = _evaluator(config, workdir)
  first = evaluator(5)
  assert set(first) == {f"eval/{m}_classifier" for m in ("fid", "kid", "kid_std", "is", "is_std", "precision",
                                                         "recall")}
  assert first["eval/fid_classifier"] > 0
  # An untrained generator's samples look alike to the classifier: far below real digits' Inception Score
  # (test_a_data_source_scored_against_itself_has_no_distance: above 8.5 of at most 10).
  assert first["eval/is_classifier"] < 3.0

  def no_second_reference(*args, **kwargs):
    raise AssertionError("the reference statistics were computed again")

  evaluator.runner.of_source = no_second_reference
  assert evaluator(6) == first  # the same weights and seeds score the same
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [5, 6]
  assert records[0]["num"] == 64 and records[0]["reference_count"] == 500
  # A new evaluator (a resumed run) reads the cached reference instead of computing it.
  again = _evaluator(config, workdir)
  again.runner.of_source = no_second_reference
  loaded = again.reference_stats()
  assert again.reference_path == evaluator.reference_path and os.path.exists(again.reference_path)
  assert (loaded.mean == evaluator.reference_stats().mean).all()


def test_a_data_source_scored_against_itself_has_no_distance(tiny_dcgan, tmp_path):
  config = tiny_dcgan
  config.eval_data = "embedded:mnist:test"
  config.eval_metrics = "fid,pr,is"
  evaluator = Evaluator(runtime_lib.create(rundir.prepare_config(config).runtime), None, config,
                        pipelines.open_source(config.data).info, None, progress=False)
  scores = evaluator.evaluate_source("embedded:mnist:test")
  assert scores["eval/fid_classifier"] == pytest.approx(0.0, abs=1e-6)
  assert scores["eval/precision_classifier"] == 1.0 and scores["eval/recall_classifier"] == 1.0
  # Ten nearly balanced classes, each recognised with confidence: exp(H(p(y)) - E H(p(y|x))) close to 10.
  assert 8.5 < scores["eval/is_classifier"] <= 10.0


def test_concurrent_appends_to_a_local_metrics_file_lose_no_line(tmp_path):
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from evaluation.evaluator import append_jsonl  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "run" / "metrics.jsonl")
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda i: append_jsonl(path, {"n": i, "pad": "x" * 5000}), range(200)))
  with open(path) as f:
    lines = f.read().splitlines()
  assert sorted(json.loads(line)["n"] for line in lines) == list(range(200))
  with open(path, "a") as f:
    f.write('{"cut off')  # a writer that died mid-line
  append_jsonl(path, {"n": 200})
  with open(path) as f:
    assert json.loads(f.read().splitlines()[-1]) == {"n": 200}


class _DigitsOnRequest(models.base.GenerativeModel):
  """Draws, for each asked label, a real held-out digit of that class (``honest``) or always the same 3."""

  samples_from_prior = True

  def __init__(self, honest):
    super().__init__(name="digits_on_request")
    import numpy as np  # pylint: disable=g-import-not-at-top
    images, labels = pipelines.open_source("embedded:mnist:test").arrays((32, 32), 1)
    firsts = [int(np.flatnonzero(labels == k)[0]) for k in range(10)]
    self.table = tf.constant(images[firsts].astype(np.float32) / 127.5 - 1.0)
    self.num_classes = 10
    self.honest = honest

  def generate(self, rng, labels=None, ema=True, **options):
    del rng, ema, options
    return tf.gather(self.table, labels if self.honest else tf.fill(tf.shape(labels), 3))


def test_classes_count_the_classifiers_decisions_and_the_asked_labels(tiny_dcgan):
  import numpy as np  # pylint: disable=g-import-not-at-top
  config = tiny_dcgan
  config.eval_num = 100  # labels 0..9 ten times each
  config.eval_metrics = "classes"
  runtime = runtime_lib.create(rundir.prepare_config(config).runtime)
  info = pipelines.open_source(config.data).info
  honest = Evaluator(runtime, _DigitsOnRequest(True), config, info, None, progress=False)(0)
  cheat = Evaluator(runtime, _DigitsOnRequest(False), config, info, None, progress=False)(0)
  # The classifier recognises the ten real digits it is shown: every asked class comes out, a tenth each.
  assert honest["eval/class_agreement_classifier"] == 1.0
  assert honest["eval/class_share_min_classifier"] == honest["eval/class_share_max_classifier"] == pytest.approx(0.1)
  # Always a 3: one class takes every sample, and only the asked 3s agree.
  assert cheat["eval/class_share_3_classifier"] == 1.0 and cheat["eval/class_share_min_classifier"] == 0.0
  assert cheat["eval/class_agreement_classifier"] == pytest.approx(0.1)
  assert cheat["eval/class_agreement_std_classifier"] == pytest.approx(np.sqrt(0.1 * 0.9 / 100))


def test_classes_need_the_digit_classifier(tiny_dcgan):
  config = tiny_dcgan
  config.eval_metrics = "fid,classes"
  config.eval_extractor = "inception"
  with pytest.raises(UserError, match="--config.eval_metrics=classes reads the embedded digit classifier's "
                     "decisions; use --config.eval_extractor=classifier"):
    EvalSettings.from_config(config)
