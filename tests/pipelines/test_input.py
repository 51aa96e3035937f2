"""The deterministic in-memory input: the same global batches for any layout, exact resume, full epochs."""

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from pipelines import input as input_lib
from pipelines import transforms

COUNT = 20
IMAGES = (np.arange(COUNT, dtype=np.uint8)[:, None, None, None] * np.ones([1, 4, 4, 1], np.uint8))
LABELS = np.arange(COUNT, dtype=np.int32)


def _global_batches(num_pipelines, replicas_per_pipeline, steps, start_step=0, global_batch=8, **kw):
  """Reassembles global batches (as label lists) from every pipeline's per-replica batches."""
  pipelines_out = []
  for pid in range(num_pipelines):
    layout = input_lib.InputLayout(global_batch, num_pipelines, pid, replicas_per_pipeline)
    ds = input_lib.indexed_batches(IMAGES, LABELS, layout, seed=3, start_step=start_step,
                                   transform=transforms.to_model_range, **kw)
    pipelines_out.append(list(ds.take(steps * replicas_per_pipeline).as_numpy_iterator()))
  batches = []
  for step in range(steps):
    parts = []
    for pid in range(num_pipelines):
      parts += pipelines_out[pid][step * replicas_per_pipeline:(step + 1) * replicas_per_pipeline]
    batches.append(np.concatenate([p["label"] for p in parts]))
  return batches, pipelines_out


def test_every_layout_sees_the_same_global_batches():
  single, _ = _global_batches(1, 1, 5)
  for layout in [(1, 2), (2, 1), (2, 2), (4, 2)]:
    other, _ = _global_batches(*layout, 5)
    for a, b in zip(single, other):
      np.testing.assert_array_equal(a, b)


def test_each_epoch_is_a_permutation_and_epochs_differ():
  batches, _ = _global_batches(1, 1, 5, global_batch=4)  # 5 steps x 4 = one epoch of 20
  epoch0 = np.concatenate(batches)
  assert sorted(epoch0.tolist()) == list(range(COUNT))
  assert epoch0.tolist() != list(range(COUNT))  # shuffled
  next_epoch, _ = _global_batches(1, 1, 5, start_step=5, global_batch=4)
  epoch1 = np.concatenate(next_epoch)
  assert sorted(epoch1.tolist()) == list(range(COUNT))
  assert epoch1.tolist() != epoch0.tolist()


def test_two_pipelines_split_an_epoch_without_overlap():
  _, per_pipeline = _global_batches(2, 1, 5, global_batch=4)
  seen = [np.concatenate([b["label"] for b in p]) for p in per_pipeline]
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen).tolist()) == list(range(COUNT))


def test_resume_continues_the_stream_exactly():
  straight, _ = _global_batches(2, 2, 7)
  resumed, _ = _global_batches(2, 2, 4, start_step=3)
  for a, b in zip(straight[3:], resumed):
    np.testing.assert_array_equal(a, b)


def test_images_follow_labels_and_are_scaled():
  _, out = _global_batches(1, 1, 2)
  batch = out[0][0]
  expected = batch["label"].astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(batch["image"][:, 0, 0, 0], expected, rtol=1e-6)
  assert batch["image"].shape == (8, 4, 4, 1) and batch["label"].dtype == np.int32


def test_flip_is_deterministic_per_position_and_mirrors():
  asym = np.zeros([COUNT, 2, 2, 1], np.uint8)
  asym[:, :, 0] = 255  # left column white
  layout = input_lib.InputLayout(COUNT)
  ds = input_lib.indexed_batches(asym, LABELS, layout, seed=1, start_step=0, transform=transforms.to_model_range,
                                 flip=True)
  first = next(iter(ds))["image"].numpy()
  again = next(iter(ds))["image"].numpy()
  np.testing.assert_array_equal(first, again)
  flipped = first[:, 0, 1, 0] > 0
  assert 0 < flipped.sum() < COUNT  # some, not all
  np.testing.assert_array_equal(first[flipped][:, :, 0], -np.ones_like(first[flipped][:, :, 0]))


def test_batch_not_divisible_by_replicas_is_refused():
  with pytest.raises(UserError, match="not divisible by 4 replicas"):
    input_lib.InputLayout(30, 2, 0, 2).check()
