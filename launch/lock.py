"""One run per workdir: a lock that names its holder and proves it is alive.

The lock is ``<workdir>/lock.json`` holding the holder's host, pid, start time and a heartbeat time that a daemon
thread refreshes every ``heartbeat_seconds``. Creating it is atomic: on a local disk an exclusive create
(O_CREAT | O_EXCL); on GCS an upload with the precondition ``if_generation_match=0``, which fails when the object
exists, and refreshed with the precondition of our own generation, so a lock someone else broke is never
overwritten.

A lock left by a process that is gone from this machine (kill -9, a crash) is removed with a warning. A lock whose
heartbeat is older than ``stale_seconds`` is stale: its holder may be another machine that died or lost its
network, which this one can't tell apart from a slow one, so the run refuses to start and says so, and
``--break_lock`` removes it.
"""

import json
import os
import socket
import threading
import time

from absl import logging

from genscale.errors import UserError
from genscale.progress import format_duration
from launch import storage

LOCK = "lock.json"


def describe(holder, now=None):
  """'host H pid P, heartbeat 12s ago' for a lock's content."""
  now = now or time.time()
  return (f"host {holder.get('host')} pid {holder.get('pid')}, last heartbeat "
          f"{format_duration(now - float(holder.get('heartbeat', 0)))} ago")


def holder_is_dead(holder):
  """True when the holder ran on this machine and its process is gone (killed, crashed)."""
  if holder.get("host") != socket.gethostname():
    return False
  try:
    os.kill(int(holder.get("pid")), 0)
  except ProcessLookupError:
    return True
  except (PermissionError, TypeError, ValueError):
    pass
  return False


def is_stale(holder, stale_seconds, now=None):
  """A lock whose holder is known dead, or whose heartbeat is older than ``stale_seconds``."""
  now = now or time.time()
  return holder_is_dead(holder) or now - float(holder.get("heartbeat", 0)) > stale_seconds


class WorkdirLock:
  """Context manager holding the lock of a workdir.

  Args:
    workdir: local path or gs:// URL.
    break_stale: remove a stale lock instead of refusing to start.
    stale_seconds: heartbeat age after which a lock counts as stale.
    heartbeat_seconds: how often the holder refreshes its heartbeat.
  """

  def __init__(self, workdir, break_stale=False, stale_seconds=600.0, heartbeat_seconds=30.0):
    self.path = f"{workdir.rstrip('/')}/{LOCK}" if storage.is_gcs(workdir) else os.path.join(workdir, LOCK)
    self.workdir = workdir
    self.break_stale = break_stale
    self.stale_seconds = stale_seconds
    self.heartbeat_seconds = heartbeat_seconds
    self._generation = None
    self._stop = threading.Event()
    self._thread = None
    self._started = time.time()

  def _content(self):
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": self._started,
                       "heartbeat": time.time()})

  # ---- storage-specific primitives: create if absent, read, refresh, delete

  def _create(self):
    """Creates the lock; returns False when it already exists."""
    if storage.is_gcs(self.path):
      from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
      blob = storage.blob(self.path)
      try:
        blob.upload_from_string(self._content(), if_generation_match=0)
      except exceptions.PreconditionFailed:
        return False
      self._generation = blob.generation
      return True
    os.makedirs(self.workdir, exist_ok=True)
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(self._content())
    return True

  def _read(self):
    """(holder dict, generation) of the existing lock, or (None, None)."""
    if storage.is_gcs(self.path):
      from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
      blob = storage.blob(self.path)
      try:
        blob.reload()
        return json.loads(blob.download_as_bytes(if_generation_match=blob.generation)), blob.generation
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        return None, None
    try:
      with open(self.path) as f:
        return json.load(f), None
    except FileNotFoundError:
      return None, None
    except ValueError:
      return {"host": "?", "pid": "?", "heartbeat": os.path.getmtime(self.path)}, None

  def _refresh(self):
    if storage.is_gcs(self.path):
      blob = storage.blob(self.path)
      blob.upload_from_string(self._content(), if_generation_match=self._generation)
      self._generation = blob.generation
      return
    temp = f"{self.path}.{os.getpid()}.tmp"
    with open(temp, "w") as f:
      f.write(self._content())
    os.replace(temp, self.path)

  def _delete(self, generation=None):
    if storage.is_gcs(self.path):
      from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
      try:
        storage.blob(self.path).delete(if_generation_match=generation)
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass
      return
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  # ---- protocol

  def acquire(self):
    for _ in range(3):
      if self._create():
        self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
        self._thread.start()
        return self
      holder, generation = self._read()
      if holder is None:
        continue  # released between our attempt and the read: try again
      if not is_stale(holder, self.stale_seconds):
        raise UserError(f"--workdir {self.workdir} is in use by {describe(holder)}; wait for that run to finish "
                        f"or use another --workdir")
      if holder_is_dead(holder):
        logging.warning("removing the lock of %s left by a dead process (%s)", self.workdir, describe(holder))
      elif not self.break_stale:
        raise UserError(f"--workdir {self.workdir} has a stale lock from {describe(holder)}; if that run is "
                        "dead, rerun with --break_lock")
      else:
        logging.warning("breaking the stale lock of %s (%s)", self.workdir, describe(holder))
      self._delete(generation)
    raise UserError(f"could not take the lock of --workdir {self.workdir}; another run is starting there")

  def _beat(self):
    while not self._stop.wait(self.heartbeat_seconds):
      try:
        self._refresh()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("could not refresh the workdir lock %s: %s", self.path, e)

  def release(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
      self._thread = None
      self._delete(self._generation)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
