"""Per-example randomness that does not depend on how a batch is split over replicas."""

import numpy as np
import pytest
import tensorflow as tf

from models import base
from models import layers


def _draw(rng):
  return (rng.normal([3], "z").numpy(), rng.uniform([], "eps").numpy(), rng.integers([], "label", 10).numpy())


def test_replica_slices_concatenate_to_the_single_device_draw():
  key = tf.constant([7, 123], tf.int64)
  whole = _draw(base.BatchRng(key, 0, 8, 1))
  parts = [_draw(base.BatchRng(key, r, 2, 4)) for r in range(4)]
  for i, full in enumerate(whole):
    # Integer and uniform draws are bit-exact; normals may differ in the last bit where vectorised log/cos
    # take a different code path for a different tensor length.
    np.testing.assert_allclose(np.concatenate([p[i] for p in parts]), full, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])
  np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), whole[2])


def test_streams_steps_and_seeds_are_independent():
  a = base.BatchRng(tf.constant([0, 1], tf.int64), 0, 16, 1)
  b = base.BatchRng(tf.constant([0, 2], tf.int64), 0, 16, 1)
  c = base.BatchRng(tf.constant([1, 1], tf.int64), 0, 16, 1)
  za = a.normal([4], "z").numpy()
  assert not np.allclose(za, a.normal([4], "other").numpy())
  assert not np.allclose(za, b.normal([4], "z").numpy())
  assert not np.allclose(za, c.normal([4], "z").numpy())
  np.testing.assert_array_equal(za, a.normal([4], "z").numpy())  # same key and stream: same draw


def test_draws_agree_under_xla():
  key = tf.constant([3, 9], tf.int64)
  fn = lambda k: base.BatchRng(k, 1, 4, 2).normal([5], "z")
  np.testing.assert_allclose(tf.function(fn)(key).numpy(), tf.function(fn, jit_compile=True)(key).numpy(),
                             rtol=1e-6, atol=1e-6)
  uni = lambda k: base.BatchRng(k, 1, 4, 2).uniform([5], "u")
  np.testing.assert_array_equal(tf.function(uni)(key).numpy(), tf.function(uni, jit_compile=True)(key).numpy())


def test_integers_and_uniform_ranges():
  rng = base.BatchRng(tf.constant([1, 1], tf.int64), 0, 1000, 1)
  labels = rng.integers([], "label", 10).numpy()
  assert labels.min() == 0 and labels.max() == 9 and labels.dtype == np.int32
  u = rng.uniform([], "u", 2.0, 3.0).numpy()
  assert 2.0 <= u.min() and u.max() < 3.0


def test_ema_copy_is_untrainable_and_starts_equal():
  source = tf.Module()
  source.w = tf.Variable([1.0, 2.0])

  def build(keys):
    assert isinstance(keys, layers.Keys)  # the copy is built as the source was, from initialisation keys
    m = tf.Module()
    m.w = tf.Variable([0.0, 0.0])
    return m

  copy, pairs = base.ema_copy(build, source, seed=3)
  assert not copy.w.trainable
  assert copy.w.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA
  np.testing.assert_array_equal(copy.w.numpy(), [1.0, 2.0])
  assert pairs[0][0] is copy.w and pairs[0][1] is source.w


def test_state_variables_are_untrainable_and_written_by_the_first_replica():
  p = base.state_variable(0.5, "augment_p")
  steps = base.state_variable(0, "ada_steps", tf.int64)
  assert not p.trainable and p.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA
  assert steps.dtype == tf.int64 and float(p.numpy()) == 0.5


def test_conditional_classes_come_from_the_data_or_are_refused():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  labelled = pipelines.DataInfo(spec="embedded:mnist", count=1, resolution=32, channels=1, num_classes=10)
  unlabelled = pipelines.DataInfo(spec="folder:x", count=1, resolution=32, channels=1, num_classes=0)
  assert base.conditional_classes(ml_collections.ConfigDict({"conditional": True}), labelled) == 10
  assert base.conditional_classes(ml_collections.ConfigDict({"conditional": False}), labelled) == 0
  with pytest.raises(UserError, match="folder:x has no labels; set it to false"):
    base.conditional_classes(ml_collections.ConfigDict({"conditional": True}), unlabelled)


def test_distributions_have_the_right_moments():
  rng = base.BatchRng(tf.constant([5, 6], tf.int64), 0, 20000, 1)
  z = rng.normal([4], "z").numpy()
  assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
  assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.03
  u = rng.uniform([], "u").numpy()
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1.0 / 12.0) < 0.002
  counts = np.bincount(rng.integers([], "k", 10).numpy(), minlength=10)
  assert counts.min() > 1800 and counts.max() < 2200


def test_shared_draws_are_the_same_on_every_replica():
  key = tf.constant([2, 2], tf.int64)
  a = base.BatchRng(key, 0, 4, 2).shared_normal([3], "w").numpy()
  b = base.BatchRng(key, 1, 4, 2).shared_normal([3], "w").numpy()
  np.testing.assert_array_equal(a, b)
