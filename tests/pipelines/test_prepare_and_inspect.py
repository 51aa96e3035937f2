"""The preparation tool (bad files, --strict, crash safety) and the inspection tool."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from genscale.errors import UserError
from pipelines import inspect as inspect_lib
from pipelines import prepare as prepare_lib
from pipelines import records
from tests.conftest import error_lines, run_module
from tests.pipelines.conftest import known_images, write_folder
import pipelines


def _add_bad_files(root):
  """One of each kind of bad file; returns {file name: reason fragment}."""
  bad = os.path.join(root, "cat")
  open(os.path.join(bad, "empty.png"), "wb").close()
  with open(os.path.join(bad, "notes.jpg"), "w") as f:
    f.write("not an image")
  Image.fromarray(known_images(1, 32)[0]).save(os.path.join(bad, "whole.jpg"))
  data = open(os.path.join(bad, "whole.jpg"), "rb").read()
  os.remove(os.path.join(bad, "whole.jpg"))
  with open(os.path.join(bad, "truncated.jpg"), "wb") as f:
    f.write(data[:len(data) // 2])
  Image.new("CMYK", (8, 8)).save(os.path.join(bad, "cmyk.jpg"))
  Image.fromarray(np.zeros((8, 8), np.uint16)).save(os.path.join(bad, "deep.png"))
  Image.new("RGB", (4, 4)).save(os.path.join(bad, "tiny.png"))
  return {"empty.png": "empty file", "notes.jpg": "not an image", "truncated.jpg": "truncated",
          "cmyk.jpg": "CMYK", "deep.png": "16-bit", "tiny.png": "too small: 4x4 for 8x8"}


def _records(out):
  meta = records.read_metadata(out)
  images, labels = [], []
  for shard in meta["shards"]:
    for raw in tf.data.TFRecordDataset(os.path.join(out, shard["file"])).batch(100):
      x, y = records.parse_batch(raw, 8, 8, meta["channels"])
      images += list(x.numpy())
      labels += list(y.numpy())
  return meta, images, labels


def test_good_images_round_trip_and_bad_ones_are_reported(image_folder, tmp_path):
  root, written, _ = image_folder
  expected_bad = _add_bad_files(root)
  out = str(tmp_path / "out")
  meta = prepare_lib.prepare(f"folder:{root}", out, 8, shards=2, folder_labels=True, workers=2)
  assert meta["count"] == 12 and meta["bad_files"] == len(expected_bad)
  _, images, labels = _records(out)
  stored = {img.tobytes(): label for img, label in zip(images, labels)}
  assert stored == {pixels.tobytes(): cls for pixels, cls in written.values()}  # exact pixels and labels
  report = open(os.path.join(out, "bad_files.txt")).read().splitlines()
  assert report[0] == "file\treason" and len(report) == 1 + len(expected_bad)
  for name, reason in expected_bad.items():
    assert any(line.startswith(os.path.join(root, "cat", name) + "\t") and reason in line for line in report), name


def test_resizing_and_channels_follow_the_documented_filters(tmp_path):
  pixels = known_images(1, 16)[0]
  root = str(tmp_path / "img")
  os.makedirs(root)
  Image.fromarray(pixels).save(os.path.join(root, "a.png"))
  out = str(tmp_path / "out")
  prepare_lib.prepare(f"folder:{root}", out, 8, channels=1, shards=1, workers=1)
  meta, images, _ = _records(out)
  assert meta["channels"] == 1 and images[0].shape == (8, 8, 1)
  # Luma first (BT.601, rounded), then the box filter by 2, rounded to the nearest integer.
  from pipelines import transforms  # pylint: disable=g-import-not-at-top
  luma = transforms.to_channels_numpy(pixels, 1)[..., 0].astype(np.float32)
  box = luma.reshape(8, 2, 8, 2).mean(axis=(1, 3))
  assert np.abs(images[0][..., 0].astype(np.float32) - box).max() <= 0.5


def test_the_numpy_area_filter_equals_tensorflows():
  from pipelines import transforms  # pylint: disable=g-import-not-at-top
  image = known_images(1, 20)[0]
  for size in ((10, 10), (7, 13), (20, 5)):
    expected = tf.image.resize(tf.cast(image, tf.float32), size, method="area").numpy()
    np.testing.assert_allclose(transforms.area_resize_numpy(image, size), expected, atol=1e-3)


def test_strict_stops_at_the_first_bad_file_naming_it(image_folder, tmp_path):
  root = image_folder[0]
  open(os.path.join(root, "dog", "broken.png"), "wb").close()
  out = str(tmp_path / "out")
  result = run_module("pipelines.prepare", f"--source=folder:{root}", f"--out={out}", "--resolution=8",
                      "--strict", "--workers=1")
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      f"genscale: error: bad file {os.path.join(root, 'dog', 'broken.png')}: empty file (--strict)"]
  assert not os.path.exists(os.path.join(out, "metadata.json"))
  assert not [n for n in os.listdir(out) if n.endswith(".tfrecord") or n.startswith(".incomplete")]


def test_an_empty_source_is_an_error(tmp_path):
  root = tmp_path / "nothing"
  root.mkdir()
  with pytest.raises(UserError, match="holds no png"):
    prepare_lib.prepare(f"folder:{root}", str(tmp_path / "out"), 8, workers=1)
  only_bad = tmp_path / "bad"
  only_bad.mkdir()
  (only_bad / "x.png").write_bytes(b"")
  with pytest.raises(UserError, match="has no usable images"):
    prepare_lib.prepare(f"folder:{only_bad}", str(tmp_path / "out2"), 8, workers=1)


def test_a_crash_leaves_nothing_a_reader_takes_as_complete(image_folder, tmp_path, monkeypatch):
  root = image_folder[0]
  out = str(tmp_path / "out")
  calls = []

  def failing(image, label):
    calls.append(1)
    if len(calls) > 5:
      raise RuntimeError("disk full")
    return original(image, label)

  original = records.serialize
  monkeypatch.setattr(records, "serialize", failing)
  with pytest.raises(RuntimeError, match="disk full"):
    prepare_lib.prepare(f"folder:{root}", out, 8, shards=2, workers=1)
  monkeypatch.setattr(records, "serialize", original)
  assert os.listdir(out) == []
  # A hard kill mid-write leaves a staging directory and maybe stray shards, but no metadata.json.
  os.makedirs(os.path.join(out, ".incomplete-dead"))
  with tf.io.TFRecordWriter(os.path.join(out, records.shard_name(0, 2, "0123abcd"))) as w:
    w.write(b"partial")
  with pytest.raises(UserError, match="has no metadata.json"):
    pipelines.open_source(f"tfrecord:{out}")
  meta = prepare_lib.prepare(f"folder:{root}", out, 8, shards=2, workers=1)
  assert meta["count"] == 12
  assert sorted(os.listdir(out)) == ["metadata.json", *sorted(s["file"] for s in meta["shards"])]
  assert all(records.PREPARED_SHARD.match(s["file"]) for s in meta["shards"]) and len(meta["shards"]) == 2
  assert pipelines.open_source(f"tfrecord:{out}").info.count == 12
  with pytest.raises(UserError, match="already holds a prepared dataset"):
    prepare_lib.prepare(f"folder:{root}", out, 8, workers=1)


def test_files_it_did_not_write_are_never_deleted(image_folder, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "mine.tfrecord").write_bytes(b"a user's own records")
  with pytest.raises(UserError, match="holds .tfrecord files that pipelines.prepare did not write .*mine.tfrecord"):
    prepare_lib.prepare(f"folder:{image_folder[0]}", str(out), 8, shards=2, workers=1)
  assert sorted(os.listdir(out)) == ["mine.tfrecord"] and (out / "mine.tfrecord").read_bytes() == b"a user's own records"


def test_overwrite_keeps_the_old_dataset_whole_until_the_new_metadata_is_written(image_folder, tmp_path,
                                                                                 monkeypatch):
  root, out = image_folder[0], str(tmp_path / "out")
  old = prepare_lib.prepare(f"folder:{root}", out, 8, shards=2, workers=1)
  old_files = sorted(s["file"] for s in old["shards"])
  seen = []
  original = records.write_metadata

  def watching(directory, meta):  # at the switch, the old dataset must still be there, file for file
    seen.append(sorted(f for f in os.listdir(directory) if f in old_files))
    original(directory, meta)

  monkeypatch.setattr(records, "write_metadata", watching)
  new = prepare_lib.prepare(f"folder:{root}", out, 8, shards=3, workers=1, overwrite=True)
  assert seen == [old_files]
  assert sorted(os.listdir(out)) == ["metadata.json", *sorted(s["file"] for s in new["shards"])]  # old ones gone
  assert pipelines.open_source(f"tfrecord:{out}").info.count == new["count"] == 12


def test_a_glob_over_the_directory_skips_the_metadata_and_the_report(image_folder, tmp_path):
  root, out = image_folder[0], str(tmp_path / "out")
  _add_bad_files(root)
  prepare_lib.prepare(f"folder:{root}", out, 8, shards=2, workers=1)
  assert os.path.exists(os.path.join(out, records.REPORT))  # the bad files are reported beside the shards
  source = pipelines.open_source(f"tfrecord:{out}/*")
  assert len(source.files) == 2 and all(f.endswith(".tfrecord") for f in source.files)


def test_inspect_reports_counts_range_labels_and_writes_a_preview(image_folder, tmp_path):
  root = image_folder[0]
  out = str(tmp_path / "preview.png")
  summary = inspect_lib.inspect(f"folder:{root}", resolution=8, out=out,
                                options=pipelines.InputOptions(folder_labels=True), stream=open(os.devnull, "w"))
  assert summary["count"] == 12 and summary["scanned"] == 12 and summary["shape"] == [8, 8, 3]
  assert summary["labels"] == {"cat": 6, "dog": 6}
  assert -1.0 <= summary["min"] < -0.9 and 0.9 < summary["max"] <= 1.0
  assert np.asarray(Image.open(out)).shape == (3 * 9 + 1, 4 * 9 + 1, 3)  # 12 images: 4 columns, 3 rows


def test_inspect_command_on_the_embedded_digits(tmp_path):
  out = str(tmp_path / "digits.png")
  result = run_module("pipelines.inspect", "embedded:mnist:test", f"--out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "embedded:mnist:test: 500 examples; model input 32x32x1 float32" in result.stdout
  assert "labels: 0=50, 1=50, 2=50" in result.stdout
  assert os.path.exists(out)
