"""The embedded digits' files: MNIST's IDX format decoded by hand, and a damaged file refused in one line."""

import gzip
import shutil
import struct

import numpy as np
import pytest

from genscale.errors import UserError
from pipelines import embedded


def _write_idx(path, array, compress=True):
  header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with (gzip.open if compress else open)(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_returns_the_array_written_in_the_format(tmp_path, compress):
  array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
  path = str(tmp_path / ("a.idx.gz" if compress else "a.idx"))
  _write_idx(path, array, compress)
  np.testing.assert_array_equal(embedded.read_idx(path), array)


def test_read_idx_refuses_a_header_that_disagrees_with_the_data(tmp_path):
  path = str(tmp_path / "short.gz")
  with gzip.open(path, "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(9))
  with pytest.raises(UserError, match="holds 9 values where its header says"):
    embedded.read_idx(path)
  with gzip.open(path, "wb") as f:
    f.write(b"not an idx file")
  with pytest.raises(UserError, match="is not an IDX file"):
    embedded.read_idx(path)


def test_the_shipped_files_hold_500_images_of_each_digit_in_the_mnist_range():
  images = embedded.read_idx(f"{embedded.DATA_DIR}/{embedded.IMAGES_FILE}")
  labels = embedded.read_idx(f"{embedded.DATA_DIR}/{embedded.LABELS_FILE}")
  assert images.shape == (5000, 28, 28) and labels.shape == (5000,)
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [500] * 10)
  # Ink on a black background, as in MNIST (whose mean pixel over the training set is 0.1307 of full scale).
  assert images.max() == 255 and images[:, 0].max() == 0 and 0.10 < images.mean() / 255 < 0.16


def test_a_file_whose_values_changed_is_an_error_naming_it_not_a_different_dataset(tmp_path, monkeypatch):
  shutil.copy(f"{embedded.DATA_DIR}/{embedded.LABELS_FILE}", tmp_path)
  images = embedded.read_idx(f"{embedded.DATA_DIR}/{embedded.IMAGES_FILE}").copy()
  images[17, 14, 14] ^= 1  # one pixel, one bit: a well-formed file with different contents
  _write_idx(str(tmp_path / embedded.IMAGES_FILE), images)
  monkeypatch.setattr(embedded, "DATA_DIR", str(tmp_path))
  embedded._load_all.cache_clear()
  try:
    with pytest.raises(UserError, match=f"{embedded.IMAGES_FILE} decodes to different values .* restore it"):
      embedded.load("train")
  finally:
    embedded._load_all.cache_clear()
