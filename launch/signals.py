"""Stopping on request: SIGTERM (preemption) and Ctrl-C are noted, and the loop stops at the next call boundary.

A second Ctrl-C interrupts at once (``KeyboardInterrupt``), for a user who doesn't want to wait for the save.
Host only; the handlers are installed on the main thread (elsewhere the signals keep their default behaviour).
"""

import signal
import threading


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; the run saved a checkpoint at its current step and stopped."""


class StopSignals:
  """A context in which SIGTERM and SIGINT set ``requested`` (the signal's name) instead of stopping the process."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None
    self._previous = {}

  def _handle(self, number, frame):
    del frame
    if self.requested and number == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(number).name

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in self.SIGNALS:
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc):
    for number, handler in self._previous.items():
      signal.signal(number, handler)
