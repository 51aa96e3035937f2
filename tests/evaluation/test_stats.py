"""Streaming statistics: equal to the batch statistics, exact recentering, splits, kept features, files."""

import numpy as np
import pytest

from evaluation.stats import FeatureStats
from genscale.errors import UserError


def _stream(features, logits, chunks, **kwargs):
  stats = FeatureStats(features.shape[1], logits.shape[1], total=len(features), **kwargs)
  edges = np.linspace(0, len(features), chunks + 1).astype(int)
  for start, end in zip(edges[:-1], edges[1:]):
    stats.add(features[start:end], logits[start:end])
  return stats


def test_streaming_statistics_equal_the_batch_statistics():
  rng = np.random.default_rng(0)
  # A mean far from zero next to unit spread: raw sums of squares would lose the covariance to cancellation.
  features = 1e5 + rng.normal(size=(1000, 12)) @ rng.normal(size=(12, 12))
  logits = rng.normal(size=(1000, 5)) * 3
  streamed = _stream(features, logits, chunks=17, splits=4, keep=300)
  whole = _stream(features, logits, chunks=1, splits=4, keep=300)
  assert streamed.count == 1000
  np.testing.assert_allclose(streamed.mean, features.mean(0), rtol=1e-12)
  np.testing.assert_allclose(streamed.covariance, np.cov(features, rowvar=False), rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(streamed.split_probs, whole.split_probs, rtol=1e-12)
  np.testing.assert_allclose(streamed.split_entropy, whole.split_entropy, rtol=1e-12)
  assert streamed.inception_score() == pytest.approx(whole.inception_score(), rel=1e-12)
  np.testing.assert_array_equal(streamed.features, whole.features)


def test_recentering_keeps_the_statistics():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(50, 3)) + 7.0
  stats = FeatureStats(3, total=50)
  stats.add(features)
  mean, cov = stats.mean.copy(), stats.covariance.copy()
  stats.recenter(np.array([-3.0, 100.0, 0.5]))
  np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
  np.testing.assert_allclose(stats.covariance, cov, rtol=1e-9)


def test_splits_are_equal_random_parts_and_the_kept_features_a_random_subset():
  features = np.repeat(np.arange(10.0), 100)[:, None]  # a class-sorted stream: 100 of each class in a row
  logits = 40.0 * np.eye(10)[np.repeat(np.arange(10), 100)]
  stats = _stream(features, logits, chunks=10, splits=10, keep=200)
  np.testing.assert_array_equal(stats.split_count, np.full(10, 100.0))
  assert stats.inception_score()[0] > 9.0  # contiguous parts of this stream would score about 1
  kept = stats.features[:, 0]
  assert len(kept) == 200 and len(np.unique(kept)) == 10  # not just the first two classes


def test_fewer_images_than_splits_use_fewer_splits():
  stats = FeatureStats(2, 3, total=4, splits=10)
  assert stats.splits == 4


def test_statistics_round_trip_through_a_file_with_their_keys(tmp_path):
  rng = np.random.default_rng(2)
  stats = _stream(rng.normal(size=(40, 4)), rng.normal(size=(40, 3)), chunks=3, splits=2, keep=10)
  path = str(tmp_path / "ref.npz")
  stats.save(path, {"data": "embedded:mnist", "count": 40})
  loaded, keys = FeatureStats.load(path)
  assert keys == {"data": "embedded:mnist", "count": 40}
  np.testing.assert_array_equal(loaded.mean, stats.mean)
  np.testing.assert_array_equal(loaded.covariance, stats.covariance)
  np.testing.assert_array_equal(loaded.features, stats.features)
  assert loaded.inception_score() == stats.inception_score()


def test_a_file_that_is_not_statistics_is_refused(tmp_path):
  path = tmp_path / "junk.npz"
  path.write_bytes(b"not an npz")
  with pytest.raises(UserError, match="is not a genscale reference-statistics file"):
    FeatureStats.load(str(path))
