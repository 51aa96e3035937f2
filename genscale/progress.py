"""Console progress with rate and ETA, for every long-running command.

On a terminal the line is redrawn in place; otherwise (logs, CI, notebooks writing to files) a plain line is printed
at most every ``every_seconds``, so log files stay readable.
"""

import sys
import time


def format_duration(seconds):
  """Formats seconds as ``1h02m``, ``3m05s`` or ``42s``."""
  if seconds is None or seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


class Progress:
  """Tracks ``done`` out of ``total`` units and prints a bar with rate and ETA.

  Args:
    total: number of units (images, steps, files) the task will process.
    description: short label printed before the bar.
    unit: name of one unit, for the rate ("img", "step").
    stream: where to print; standard error by default so results on standard output stay clean.
    every_seconds: minimum time between two lines when the stream is not a terminal.
    start: units already done before this process started (a resumed run); they count for the bar, not the rate.
  """

  def __init__(self, total, description="", unit="it", stream=None, every_seconds=10.0, start=0):
    self.total = max(int(total), 0)
    self.description = description
    self.unit = unit
    self.stream = stream if stream is not None else sys.stderr
    self.every_seconds = every_seconds
    self.start_done = int(start)
    self.done = int(start)
    self._t0 = time.monotonic()
    self._last_print = -float("inf")
    self._last_printed_done = None
    self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())

  def rate(self):
    """Units per second since this process started counting."""
    elapsed = time.monotonic() - self._t0
    return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

  def eta_seconds(self):
    rate = self.rate()
    return (self.total - self.done) / rate if rate > 0 else None

  def line(self):
    frac = self.done / self.total if self.total else 1.0
    width = 24
    filled = int(round(frac * width))
    bar = "#" * filled + "." * (width - filled)
    head = f"{self.description} " if self.description else ""
    return (f"{head}[{bar}] {self.done}/{self.total} {100 * frac:5.1f}% "
            f"{self.rate():.1f} {self.unit}/s ETA {format_duration(self.eta_seconds())}")

  def update(self, done=None, advance=0, force=False):
    """Sets or advances the count and prints when due."""
    self.done = int(done) if done is not None else self.done + int(advance)
    now = time.monotonic()
    if self._interactive:
      if force or now - self._last_print >= 0.2 or self.done >= self.total:
        self.stream.write("\r" + self.line())
        self.stream.flush()
        self._last_print = now
    elif (force or now - self._last_print >= self.every_seconds or self.done >= self.total) and (
        self.done != self._last_printed_done):
      self.stream.write(self.line() + "\n")
      self.stream.flush()
      self._last_print = now
      self._last_printed_done = self.done

  def close(self):
    """Prints the final state and ends the line."""
    self.update(force=True)
    if self._interactive:
      self.stream.write("\n")
      self.stream.flush()
