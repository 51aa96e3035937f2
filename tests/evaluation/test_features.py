"""Distributed feature statistics: the same on one and two replicas, and equal to the host computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from evaluation import extractors
from evaluation.features import FeatureRunner
from evaluation.stats import FeatureStats
from launch import rundir
from launch import runtime as runtime_lib
from launch.configs import common
from launch.sampling import Sampler
import models
import pipelines
from pipelines import embedded


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


def _runtime(replicas, xla=False):
  return runtime_lib.create(common.runtime(strategy="cpu", cpu_replicas=replicas, xla=xla))


def _generator(runtime, tiny_dcgan):
  # Layer norm in G: batch norm would normalise over each replica's rows, which differ with the replica count.
  config = tiny_dcgan
  config.model.g_norm = "layer"
  config = rundir.prepare_config(config)
  info = pipelines.DataInfo(spec="embedded:mnist", count=4500, resolution=32, channels=1, num_classes=10)
  with runtime.strategy.scope():
    return models.build(config, info, runtime.hardware)


def _model_stats(replicas, tiny_dcgan, num=40, xla=False):
  runtime = _runtime(replicas, xla)
  model = _generator(runtime, tiny_dcgan)
  extractor = extractors.build("classifier", strategy=runtime.strategy)
  runner = FeatureRunner(runtime, extractor, batch_size=16)
  return runner.of_model(model, seed=3, num=num, splits=4, keep=25), (runtime, model, extractor)


def _assert_same(a, b, atol=2e-6, rtol=1e-5):
  """Equal up to float32 rounding (the same images in differently shaped batches round differently)."""
  assert a.count == b.count
  print("max differences: mean", np.abs(a.mean - b.mean).max(), "cov", np.abs(a.covariance - b.covariance).max(),
        "features", np.abs(a.features - b.features).max(), "split probs", np.abs(a.split_probs - b.split_probs).max())
  for name in ("mean", "covariance", "split_probs", "split_entropy", "features"):
    np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, rtol=rtol, err_msg=name)
  np.testing.assert_array_equal(a.split_count, b.split_count)


def test_generated_statistics_are_the_same_on_one_and_two_replicas(tiny_dcgan):
  one, _ = _model_stats(1, tiny_dcgan)
  two, _ = _model_stats(2, tiny_dcgan)
  assert one.count == 40 and one.features.shape == (25, 128)  # 3 calls of 16, the last one partly masked
  assert np.trace(one.covariance) > 1e-2  # not a constant image (some ReLU features are dead, that's fine)
  _assert_same(one, two)


def test_device_statistics_equal_the_host_statistics_of_the_sampled_images(tiny_dcgan):
  device, (runtime, model, extractor) = _model_stats(1, tiny_dcgan)
  # The same images through the sampler (call i uses key (seed, i); image n has label n % 10), scored on the host.
  images = Sampler(runtime, model, 16).generate(3, 40, labels=np.arange(48) % 10)
  features, logits = extractor(tf.constant(images))
  host = FeatureStats(128, 10, total=40, splits=4, keep=25)
  host.add(features.numpy(), logits.numpy())
  _assert_same(device, host)


def test_xla_compiled_statistics_match(tiny_dcgan):
  plain, _ = _model_stats(1, tiny_dcgan, num=16)
  compiled, _ = _model_stats(1, tiny_dcgan, num=16, xla=True)
  _assert_same(plain, compiled, atol=1e-4)


def test_reference_statistics_are_the_same_on_one_and_two_replicas_and_cover_every_image():
  source = pipelines.open_source("embedded:mnist:test")
  results = []
  for replicas in (1, 2):
    runtime = _runtime(replicas)
    extractor = extractors.build("classifier", strategy=runtime.strategy)
    runner = FeatureRunner(runtime, extractor, batch_size=64)
    results.append(runner.of_source(source, resolution=32, channels=1, num=500, splits=10, keep=100))
  _assert_same(*results)
  # All 500 images once (8 calls, the last one partly masked): the order-free statistics equal the host's.
  images, _ = embedded.load("test")
  features, logits = extractor(tf.constant(images.astype(np.float32) / 127.5 - 1.0))
  host = FeatureStats(128, 10, total=500, splits=10)
  host.add(features.numpy(), logits.numpy())
  assert results[0].count == 500
  np.testing.assert_allclose(results[0].mean, host.mean, atol=1e-5)
  np.testing.assert_allclose(results[0].covariance, host.covariance, atol=1e-4)
  assert results[0].inception_score()[0] > 8.0  # random splits of real digits: close to 10 classes
