"""Sources: the embedded digits and spec parsing."""

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from pipelines import embedded
from pipelines import transforms
import pipelines


def test_embedded_splits_are_disjoint_balanced_and_padded():
  train_x, train_y = embedded.load("train")
  test_x, test_y = embedded.load("test")
  all_x, _ = embedded.load("all")
  assert train_x.shape == (4500, 32, 32, 1) and test_x.shape == (500, 32, 32, 1) and all_x.shape[0] == 5000
  assert np.bincount(train_y).tolist() == [450] * 10 and np.bincount(test_y).tolist() == [50] * 10
  # Two pixels of zero padding on every side of the 28x28 originals.
  assert train_x[:, :2].max() == 0 and train_x[:, -2:].max() == 0 and train_x[:, :, :2].max() == 0
  assert train_x.max() == 255
  train_rows = {x.tobytes() for x in train_x}
  assert not any(x.tobytes() in train_rows for x in test_x)


def test_open_source_reports_info():
  source = pipelines.open_source("embedded:mnist")
  assert (source.info.count, source.info.resolution, source.info.channels, source.info.num_classes) == (
      4500, 32, 1, 10)
  assert pipelines.open_source("embedded:mnist:test").info.count == 500


@pytest.mark.parametrize("spec,message", [
    ("nosuch:thing", "unknown data source"),
    ("embedded:cifar", "unknown embedded dataset"),
    ("embedded:mnist:valid", "unknown split"),
])
def test_bad_specs_are_refused(spec, message):
  with pytest.raises(UserError, match=message):
    pipelines.open_source(spec)


def test_dataset_yields_static_model_batches_at_the_training_resolution():
  source = pipelines.open_source("embedded:mnist")
  layout = pipelines.InputLayout(16, 1, 0, 2)
  ds = source.dataset(layout, seed=0, start_step=0, resolution=16, channels=3)
  assert ds.element_spec["image"].shape.as_list() == [8, 16, 16, 3]
  batch = next(iter(ds))
  # Digits: black background at exactly -1, strokes up to (nearly) white; no value outside [-1, 1].
  assert batch["image"].numpy().min() == -1.0 and 0.9 < batch["image"].numpy().max() <= 1.0


def test_transforms_agree_eagerly_and_in_tf_data():
  images = np.random.default_rng(0).integers(0, 256, [4, 32, 32, 1], dtype=np.uint8)
  transform = pipelines.sources.model_transform((16, 16), 3, "center")
  eager = transform(tf.constant(images)).numpy()
  in_data = next(iter(tf.data.Dataset.from_tensors(images).map(transform))).numpy()
  np.testing.assert_array_equal(eager, in_data)
  # Area downsampling by 2 is the mean of each 2x2 block.
  block_mean = images.reshape(4, 16, 2, 16, 2, 1).mean(axis=(2, 4)).astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(eager[..., :1], block_mean, atol=1e-5)


def test_channel_conversion():
  rgb = tf.constant([[[[255, 0, 0]]]], tf.uint8)
  assert transforms.to_channels(rgb, 1).numpy().ravel().tolist() == [76]  # 0.299 * 255
  gray = tf.constant([[[[10]]]], tf.uint8)
  assert transforms.to_channels(gray, 3).numpy().ravel().tolist() == [10, 10, 10]
  rgba = tf.constant([[[[200, 100, 50, 0]]]], tf.uint8)
  assert transforms.to_channels(rgba, 3).numpy().ravel().tolist() == [200, 100, 50]  # alpha dropped, as PIL does
  for image in ([[[[255, 0, 0]]]], [[[[200, 100, 50, 7]]]], [[[[9, 250]]]]):
    array = np.asarray(image, np.uint8)
    for channels in (1, 3):
      np.testing.assert_array_equal(transforms.to_channels(tf.constant(array), channels).numpy()[0],
                                    transforms.to_channels_numpy(array[0], channels))


def test_a_semi_supervised_source_keeps_labels_spread_evenly_over_the_classes():
  options = pipelines.InputOptions(labelled=100)
  source = pipelines.open_source("embedded:mnist", options)
  _, labels = embedded.load("train")
  layout = pipelines.InputLayout(500, 1, 0, 1)
  seen = {}
  for batch in source.dataset(layout, seed=3, start_step=0, resolution=32, channels=1).take(9):  # one epoch
    for image, label in zip(batch["image"].numpy(), batch["label"].numpy()):
      seen[image.tobytes()] = label
  images, _ = source.arrays((32, 32), 1)
  # Every example once per epoch: the first 10 of each class (the split is in class order, 450 of each) with
  # their labels, every other one with -1.
  expected = {transforms.to_model_range(x[None]).numpy()[0].tobytes(): (y if i % 450 < 10 else -1)
              for i, (x, y) in enumerate(zip(images, labels))}
  assert np.all(labels == np.arange(4500) // 450)
  assert seen == expected
  kept = pipelines.open_source("embedded:mnist", pipelines.InputOptions(labelled=25)).training_labels()
  assert np.bincount(kept[kept >= 0]).tolist() == [3] * 5 + [2] * 5  # 25 over 10 classes
  np.testing.assert_array_equal(source.arrays((32, 32), 1)[1], labels)  # held-out scoring sees every label
  with pytest.raises(UserError, match="--config.input.labelled"):
    pipelines.InputOptions.from_config({"labelled": -1})
