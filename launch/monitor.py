"""What a run reports while it trains: console lines with rate and ETA, TensorBoard summaries, sample PNGs.

Runs on the host between compiled calls, so nothing here forces a device sync inside a step. Only the chief
writes files; other workers print nothing but errors.
"""

import os
import sys
import time

import tensorflow as tf

from genscale import images as image_lib
from genscale.progress import Progress, format_duration


class Monitor:
  """Console and TensorBoard output of one run.

  Args:
    workdir: the run directory; events go to ``<workdir>/tensorboard``, grids to ``<workdir>/samples``.
    total_steps: the run's target step.
    start_step: the step the process starts at (restored or 0).
    enabled: False on non-chief workers.
  """

  def __init__(self, workdir, total_steps, start_step, enabled=True, stream=None):
    self.workdir = workdir
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.writer = (tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if enabled
                   else tf.summary.create_noop_writer())
    self.progress = Progress(total_steps, "train", unit="step", stream=sys.stderr, start=start_step,
                             every_seconds=float("inf"))
    self._interactive = enabled and self.progress._interactive  # pylint: disable=protected-access
    self._last_time = None
    self._last_step = start_step
    self._last_nimg = None
    self._started = time.monotonic()

  def print(self, text):
    if not self.enabled:
      return
    if self._interactive:
      sys.stderr.write("\r\033[K")
    self.stream.write(text + "\n")
    self.stream.flush()
    if self._interactive:
      self.progress.update(force=True)

  def start_clock(self, step, nimg):
    """Starts rate measurement (after the first compiled call, so compile time doesn't count)."""
    self._last_time = time.monotonic()
    self._last_step = step
    self._last_nimg = nimg
    self.progress = Progress(self.progress.total, "train", unit="step", stream=sys.stderr, start=step,
                             every_seconds=float("inf"))

  def advance(self, step):
    if self.enabled and self._interactive:
      self.progress.update(done=step)
    else:
      self.progress.done = step

  def exclude_time(self, seconds):
    """Leaves ``seconds`` of host work between compiled calls (an evaluation) out of the next rates."""
    if self._last_time is not None:
      self._last_time += seconds

  def pace(self, step):
    """Seconds per step since the last line (host work left out by ``exclude_time`` excluded), or None before the
    clock started or when no step was made: the figure of the next line's ``perf/sec_per_step``."""
    if self._last_time is None or step <= self._last_step:
      return None
    return (time.monotonic() - self._last_time) / (step - self._last_step)

  def log(self, step, metrics, nimg, extra=None, eta=None):
    """Writes a log line and TensorBoard scalars for the metrics averaged since the last log.

    ``metrics``: {name: value}, ``perf/input_wait_fraction`` among them; ``nimg``: images shown so far (steps
    need not all have the same number of images: a growing GAN's batch per resolution); ``eta``: seconds left, when
    the caller knows better than the steps left at the overall pace.
    """
    now = time.monotonic()
    scalars = dict(metrics)
    if self._last_time is not None and step > self._last_step:
      seconds = now - self._last_time
      scalars["perf/img_per_sec"] = (nimg - self._last_nimg) / seconds
      scalars["perf/sec_per_step"] = seconds / (step - self._last_step)
    scalars["progress/kimg"] = nimg / 1000.0
    scalars.update(extra or {})
    self._last_time, self._last_step, self._last_nimg = now, step, nimg
    self.scalars(step, scalars)
    if eta is None and self.progress.rate() > 0:  # the caller's estimate (stage by stage), else steps at one pace
      eta = self.progress.eta_seconds()
    # Model state (fade-in alpha, ADA p...) goes on the line too: it says where a run is as much as the losses do.
    state = {k: v for k, v in (extra or {}).items() if k.startswith("model/")}
    # Names with a second "/" (a VAE's KL per latent dimension) are details for TensorBoard, not for the line.
    losses = {k: v for k, v in metrics.items() if not k.startswith("perf/") and k.count("/") < 2}
    shown = " ".join(f"{k}={_fmt(v)}" for k, v in sorted({**losses, **state}.items()))
    rate = scalars.get("perf/img_per_sec")
    wait = scalars.get("perf/input_wait_fraction")
    self.print(f"step {step}/{self.progress.total} kimg {scalars['progress/kimg']:.1f} "
               f"{'' if rate is None else f'img/s {rate:.0f} '}"
               f"{'' if wait is None else f'input-wait {100 * wait:.1f}% '}ETA {format_duration(eta)} {shown}")

  def scalars(self, step, values):
    if not self.enabled:
      return
    with self.writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, float(value))
    self.writer.flush()

  def image_grid(self, step, tag, pixels, path=None):
    """Writes a uint8 grid [H, W, C] to TensorBoard and, when ``path`` is given, as a PNG under the workdir."""
    if not self.enabled:
      return
    with self.writer.as_default(step=step):
      tf.summary.image(tag, pixels[None], step=step)
    self.writer.flush()
    if path:
      image_lib.write_png(os.path.join(self.workdir, path), pixels)

  def histograms(self, step, named_arrays, prefix):
    """One histogram per array (weights or gradients), tagged ``<prefix>/<name>``."""
    if not self.enabled:
      return
    with self.writer.as_default(step=step):
      for name, values in named_arrays.items():
        tf.summary.histogram(f"{prefix}/{name}", values, step=step)
    self.writer.flush()

  def hparams(self, config, run_name):
    """The run's hyperparameters for TensorBoard's HParams dashboard (one row per run; metrics are the run's
    scalars, so the table shows their latest values)."""
    if not self.enabled:
      return
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    values = {}
    for key, value in flatten(config).items():
      if isinstance(value, (bool, int, float, str)):
        values[key] = value
      elif value is not None:
        values[key] = str(value)
    with self.writer.as_default():
      hp.hparams(values, trial_id=run_name)
    self.writer.flush()

  def text(self, step, tag, value):
    if not self.enabled:
      return
    with self.writer.as_default(step=step):
      tf.summary.text(tag, value, step=step)
    self.writer.flush()

  def close(self):
    if self.enabled and self._interactive:
      self.progress.close()
    self.writer.close()

  def elapsed(self):
    return time.monotonic() - self._started


def flatten(config, prefix=""):
  """A nested ConfigDict or dict as {"a.b.c": value}."""
  items = config.items() if hasattr(config, "items") else []
  out = {}
  for key, value in items:
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def versions():
  """Package versions that matter for reproducing a run, as Markdown."""
  import platform  # pylint: disable=g-import-not-at-top
  import genscale  # pylint: disable=g-import-not-at-top
  lines = [f"- genscale {genscale.__version__}", f"- tensorflow {tf.__version__}",
           f"- python {platform.python_version()} on {platform.platform()}"]
  for package in ("keras", "tensorboard", "numpy", "tensorflow_datasets"):
    try:
      module = __import__(package)
      lines.append(f"- {package} {getattr(module, '__version__', '?')}")
    except ImportError:
      pass
  return "\n".join(lines)


def _fmt(value):
  value = float(value)
  return f"{value:.4g}"
