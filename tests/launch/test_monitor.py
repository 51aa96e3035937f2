"""The monitor's rates and image counts when steps don't all have the same number of images."""

import io

from launch import monitor as monitor_lib


def _line_after(monitor, clock, seconds, step, nimg, metrics=None):
  stream = monitor.stream = io.StringIO()
  clock[0] += seconds
  monitor.log(step, metrics or {}, nimg=nimg)
  return stream.getvalue()


def test_rates_and_kimg_count_images_shown_across_a_batch_change(tmp_path, monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(monitor_lib.time, "monotonic", lambda: clock[0])
  monitor = monitor_lib.Monitor(str(tmp_path), 100, 0, stream=io.StringIO())
  monitor.start_clock(0, nimg=0)
  # 6 steps of 16 images, then the batch grows to 32 for 4 steps: 224 images in 2 seconds.
  line = _line_after(monitor, clock, 2.0, 10, nimg=6 * 16 + 4 * 32)
  assert "kimg 0.2 " in line and "img/s 112 " in line, line
  # 10 more steps of 32 images in 2 seconds; the input-wait share is one of the metrics, not a loss.
  line = _line_after(monitor, clock, 2.0, 20, nimg=6 * 16 + 14 * 32, metrics={"perf/input_wait_fraction": 0.25})
  assert "kimg 0.5 " in line and "img/s 160 " in line and "input-wait 25.0% " in line, line
  assert "perf/" not in line.split("ETA")[1]
  monitor.close()
