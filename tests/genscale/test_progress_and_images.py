"""Console progress and image grids."""

import io

import numpy as np
from PIL import Image

from genscale import images
from genscale.progress import Progress, format_duration


def test_format_duration():
  assert format_duration(42) == "42s"
  assert format_duration(185) == "3m05s"
  assert format_duration(3720) == "1h02m"
  assert format_duration(None) == "?"


def test_progress_prints_count_rate_and_eta_without_a_terminal():
  stream = io.StringIO()
  progress = Progress(10, "work", unit="img", stream=stream, every_seconds=0.0)
  progress.update(advance=5)
  progress.update(advance=5)
  progress.close()
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith("work [############............] 5/10  50.0%")
  assert "img/s ETA" in lines[0]
  assert lines[-1].startswith("work [########################] 10/10 100.0%")
  assert len(lines) == 2  # close() does not repeat the final line


def test_a_resumed_count_starts_from_where_it_was():
  progress = Progress(100, stream=io.StringIO(), start=40)
  assert progress.done == 40 and progress.rate() == 0.0 and progress.eta_seconds() is None


def test_grid_places_images_in_rows_with_borders():
  tiles = np.stack([np.full([2, 3, 1], i, np.uint8) for i in range(1, 6)])
  out = images.grid(tiles, columns=2, padding=1)
  assert out.shape[:2] == images.grid_shape(5, 2, 3, columns=2) == (3 * 3 + 1, 2 * 4 + 1)
  assert out[1, 1, 0] == 1 and out[1, 5, 0] == 2 and out[4, 1, 0] == 3 and out[7, 1, 0] == 5
  assert out[7, 5, 0] == 0  # the sixth cell is empty
  assert out[0].max() == 0  # border


def test_png_round_trip(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, [5, 7, 3], dtype=np.uint8)
  path = str(tmp_path / "sub" / "x.png")
  images.write_png(path, pixels)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)


def test_to_uint8_rounds_and_clips():
  np.testing.assert_array_equal(images.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])), [0, 0, 128, 255, 255])


def test_animations_hold_every_frame_enlarged(tmp_path):
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  frames = np.stack([np.full((16, 16, 1), 20 * i, np.uint8) for i in range(6)])
  images.write_animation(str(tmp_path / "a.gif"), frames, fps=10, size=64)
  gif = Image.open(tmp_path / "a.gif")
  assert gif.n_frames == 6 and gif.size == (64, 64) and gif.info["duration"] == 100
  gif.seek(3)
  assert np.asarray(gif.convert("L"))[10, 10] == 60
  images.write_animation(str(tmp_path / "a.mp4"), frames, fps=10, size=64)
  decoded = imageio.mimread(str(tmp_path / "a.mp4"))
  assert len(decoded) == 6 and decoded[0].shape == (64, 64, 3)
  assert abs(int(decoded[5][32, 32, 0]) - 100) <= 6  # H.264 is lossy
  with pytest.raises(UserError, match="a .gif or an .mp4"):
    images.write_animation(str(tmp_path / "a.avi"), frames)
