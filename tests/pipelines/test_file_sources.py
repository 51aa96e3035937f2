"""Folder, TFRecord and TFDS sources: same pixels as the files, sharding, resume, resolution switching, errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from pipelines import prepare as prepare_lib
from pipelines import records
from pipelines import transforms
from tests.pipelines.conftest import known_images, write_folder
import pipelines


def _take(source, layout, batches, resolution=8, channels=3, start_step=0, shuffle=True, flip=False):
  ds = source.dataset(layout, seed=5, start_step=start_step, resolution=resolution, channels=channels,
                      shuffle=shuffle, flip=flip)
  return list(ds.take(batches).as_numpy_iterator())


def _as_uint8(images):
  return np.rint((images + 1.0) * 127.5).astype(np.uint8)


def _key(pixels):
  return pixels.tobytes()


@pytest.fixture
def prepared(image_folder, tmp_path):
  root, written, _ = image_folder
  out = str(tmp_path / "records")
  prepare_lib.prepare(f"folder:{root}", out, 8, channels=3, shards=3, folder_labels=True, workers=1)
  return out, written


@pytest.mark.parametrize("kind", ["folder", "tfrecord", "folder-cached", "tfrecord-cached"])
def test_a_source_yields_the_pixels_and_labels_of_its_files(kind, prepared, image_folder):
  root, written, _ = image_folder
  spec = f"folder:{root}" if kind.startswith("folder") else f"tfrecord:{prepared[0]}"
  options = pipelines.InputOptions(folder_labels=True, cache=kind.endswith("cached"))
  source = pipelines.open_source(spec, options)
  assert source.info.count == 12 and source.info.label_names == ("cat", "dog")
  batches = _take(source, pipelines.InputLayout(4), 3)
  expected = {_key(pixels): cls for pixels, cls in written.values()}
  seen = {}
  for batch in batches:
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (4, 8, 8, 3)
    for image, label in zip(_as_uint8(batch["image"]), batch["label"]):
      seen[_key(image)] = label
  assert seen == expected  # one epoch: every file once, with its class


def test_the_same_files_give_the_same_stream(prepared):
  source = pipelines.open_source(f"tfrecord:{prepared[0]}")
  a = _take(source, pipelines.InputLayout(4), 6)
  b = _take(source, pipelines.InputLayout(4), 6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])


@pytest.mark.parametrize("kind", ["folder", "tfrecord"])
def test_two_input_pipelines_split_an_epoch_exactly(kind, prepared, image_folder):
  spec = f"folder:{image_folder[0]}" if kind == "folder" else f"tfrecord:{prepared[0]}"
  source = pipelines.open_source(spec)
  if kind == "tfrecord":  # files are sharded: pipeline p reads shards p, p + 2, ...
    shards = json.load(open(os.path.join(prepared[0], "metadata.json")))["shards"]
    epoch = [sum(s["count"] for s in shards[p::2]) for p in range(2)]
  else:  # the 12 files themselves are sharded
    epoch = [6, 6]
  seen = []
  for pipeline in range(2):
    layout = pipelines.InputLayout(2, num_pipelines=2, pipeline_id=pipeline, replicas_per_pipeline=1)
    batches = _take(source, layout, epoch[pipeline])
    seen.append([_key(img) for b in batches for img in _as_uint8(b["image"])])
  assert [len(set(s)) for s in seen] == epoch  # no example twice within a pipeline's epoch
  assert not set(seen[0]) & set(seen[1])  # no overlap between pipelines
  assert len(set(seen[0]) | set(seen[1])) == 12  # together: the whole dataset


@pytest.mark.parametrize("kind", ["folder", "tfrecord"])
def test_resume_skips_exactly_the_consumed_examples(kind, prepared, image_folder):
  spec = f"folder:{image_folder[0]}" if kind == "folder" else f"tfrecord:{prepared[0]}"
  source = pipelines.open_source(spec)
  layout = pipelines.InputLayout(4, 1, 0, 2)  # two replicas fed by one pipeline
  straight = _take(source, layout, 10, flip=True)
  resumed = _take(source, layout, 4, start_step=3, flip=True)
  for a, b in zip(straight[6:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_resolution_switching_downsamples_the_same_stream(prepared):
  source = pipelines.open_source(f"tfrecord:{prepared[0]}")
  full = _take(source, pipelines.InputLayout(4), 2, resolution=8, shuffle=False)
  half = _take(source, pipelines.InputLayout(4), 2, resolution=4, shuffle=False)
  for a, b in zip(full, half):
    pooled = a["image"].reshape(4, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(b["image"], pooled, atol=1e-5)
  with pytest.raises(UserError, match="holds 8x8 images, smaller than the requested 16x16"):
    _take(source, pipelines.InputLayout(4), 1, resolution=16)


def test_grayscale_and_non_square_training_shapes(image_folder):
  source = pipelines.open_source(f"folder:{image_folder[0]}", pipelines.InputOptions(crop="pad"))
  batch = _take(source, pipelines.InputLayout(4), 1, resolution="4x8", channels=1)[0]
  assert batch["image"].shape == (4, 4, 8, 1)
  # Padding an 8x8 image to 1:2 adds black columns on both sides.
  assert np.all(batch["image"][:, :, 0] == -1.0) and np.all(batch["image"][:, :, -1] == -1.0)


def test_fit_box_centre_crop_and_pad():
  assert transforms.fit_box(100, 50, (1, 1), "center") == (25, 0, 50, 50)
  assert transforms.fit_box(50, 100, (1, 1), "pad") == (-25, 0, 100, 100)
  assert transforms.fit_box(64, 64, (32, 64), "center") == (16, 0, 32, 64)
  assert transforms.fit_box(10, 20, (5, 5), "none") == (0, 0, 10, 20)


def test_folder_source_decodes_every_supported_format(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = known_images(1)[0]
  for ext in ("png", "bmp", "webp", "gif", "jpg"):
    kwargs = {"lossless": True} if ext == "webp" else {}
    Image.fromarray(pixels).save(tmp_path / f"x.{ext}", **kwargs)
  source = pipelines.open_source(f"folder:{tmp_path}")
  assert source.info.count == 5
  images = _as_uint8(_take(source, pipelines.InputLayout(5), 1, shuffle=False)[0]["image"])
  exact = [img for img in images if np.array_equal(img, pixels)]
  assert len(exact) >= 3  # png, bmp and lossless webp are exact; gif is palettised and jpeg lossy


def test_tfds_source_through_mock_data():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=24):
    source = pipelines.open_source("tfds:mnist")
    assert source.info.count == 24 and source.info.num_classes == 10 and source.info.resolution == 28
    layout = pipelines.InputLayout(8, 1, 0, 2)
    batches = _take(source, layout, 4, resolution=16, channels=3)
    assert batches[0]["image"].shape == (4, 16, 16, 3)
    assert all(0 <= b["label"].min() and b["label"].max() < 10 for b in batches)
    again = _take(source, layout, 4, resolution=16, channels=3)
    for a, b in zip(batches, again):
      np.testing.assert_array_equal(a["image"], b["image"])
    resumed = _take(source, layout, 2, resolution=16, channels=3, start_step=1)
    np.testing.assert_array_equal(resumed[0]["image"], batches[2]["image"])


@pytest.mark.parametrize("setup,spec,message", [
    (None, "folder:{tmp}/nowhere", "data path {tmp}/nowhere does not exist"),
    ("empty_dir", "folder:{tmp}/empty", "holds no png/jpg"),
    (None, "tfrecord:{tmp}/*.tfrecord", "matches no files"),
    ("no_metadata", "tfrecord:{tmp}/half", "has no metadata.json"),
    ("garbage", "tfrecord:{tmp}/bad", "can't read TFRecord file {tmp}/bad/shard-00000-of-00001.tfrecord"),
])
def test_clear_errors_name_the_path(tmp_path, setup, spec, message):
  tmp = str(tmp_path)
  if setup == "empty_dir":
    os.makedirs(f"{tmp}/empty")
  elif setup == "no_metadata":
    os.makedirs(f"{tmp}/half")
    with tf.io.TFRecordWriter(f"{tmp}/half/shard-00000-of-00001.tfrecord") as w:
      w.write(records.serialize(np.zeros([2, 2, 3], np.uint8), 0))
  elif setup == "garbage":
    os.makedirs(f"{tmp}/bad")
    with open(f"{tmp}/bad/shard-00000-of-00001.tfrecord", "wb") as f:
      f.write(b"this is not a tfrecord file at all" * 10)
    records.write_metadata(f"{tmp}/bad", {"count": 1, "resolution": [2, 2], "channels": 3, "label_names": [],
                                          "shards": [{"file": "shard-00000-of-00001.tfrecord", "count": 1}]})
  with pytest.raises(UserError, match=message.format(tmp=tmp).replace("(", r"\(").replace("*", r"\*")):
    pipelines.open_source(spec.format(tmp=tmp))


def test_metadata_is_complete(prepared):
  meta = json.load(open(os.path.join(prepared[0], "metadata.json")))
  assert meta["count"] == 12 and meta["resolution"] == [8, 8] and meta["channels"] == 3
  assert meta["label_names"] == ["cat", "dog"] and meta["bad_files"] == 0
  assert sum(s["count"] for s in meta["shards"]) == 12 and len(meta["shards"]) == 3
