"""Checkpoints you can resume from: committed only when complete, kept by a retention rule, restored with fallback.

Layout under ``<workdir>/checkpoints`` (local or gs://):
  ckpt-<step>.index, ckpt-<step>.data-*   written by ``tf.train.Checkpoint.write``
  state.json                              the committed checkpoints: steps, save times, milestones

A save is asynchronous (TensorFlow copies the variables to host memory and writes them in the background); a
background thread waits for the write to finish and only then adds the step to ``state.json``. A process killed
mid-save leaves the previous state intact, and at the next start orphaned ``*_temp`` directories of interrupted
writes are removed. Retention keeps the newest ``keep`` checkpoints and, when ``milestone_every`` is set, every
checkpoint whose step is a multiple of it.

Restoring tries the newest committed checkpoint first. If it fails (a truncated shard raises ``IndexError``, a
missing one a ``tf.errors`` type), the store warns, naming it, and falls back to the previous one; it never deletes
the bad one. Only the chief keeps checkpoints; under MultiWorkerMirroredStrategy every worker must take part in a
save, so the others write to a temporary directory that is emptied after each save.
"""

import concurrent.futures
import os
import re
import shutil
import tempfile
import time

from absl import logging
import tensorflow as tf

from genscale.errors import UserError
from launch import storage

STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
STATE = "state.json"
_NAME = re.compile(r"^ckpt-(\d+)\.index$")


def directory_of(workdir):
  return os.path.join(workdir, "checkpoints")


def path_of(workdir, step):
  return os.path.join(directory_of(workdir), f"ckpt-{int(step)}")


def saved_step(path):
  """The training step stored in a checkpoint, read without building anything."""
  return int(tf.train.load_variable(path, STEP_KEY))


def read_state(workdir, warn=None):
  """The committed-checkpoint record of a run, or None when there is none or it is not valid JSON (then ``warn``
  is told, naming the file; the checkpoint files themselves still tell which checkpoints exist)."""
  path = os.path.join(directory_of(workdir), STATE)
  try:
    return storage.read_json(path)
  except ValueError as e:
    if warn is not None:
      warn(f"warning: {path} is not valid JSON ({e}); using the checkpoint files beside it")
    return None


def committed_steps(workdir, warn=None):
  """Steps of the run's complete checkpoints, newest first.

  From ``state.json``; without a valid one (a directory written by other tools, a file cut off), from the
  ``.index`` files present.
  """
  return _steps_of(read_state(workdir, warn), workdir)


def _steps_of(state, workdir):
  """``committed_steps`` from an already read ``state`` (None: from the ``.index`` files)."""
  if state is not None:
    return sorted((int(s) for s in state.get("steps", [])), reverse=True)
  directory = directory_of(workdir)
  if not tf.io.gfile.isdir(directory):
    return []
  steps = [int(m.group(1)) for m in (_NAME.match(n) for n in tf.io.gfile.listdir(directory)) if m]
  return sorted(steps, reverse=True)


def latest(workdir):
  """Path of the newest committed checkpoint of a run, or None."""
  steps = committed_steps(workdir)
  return path_of(workdir, steps[0]) if steps else None


def _keras_variables_async_safe():
  """Lets TensorFlow's asynchronous checkpointing save Keras 3 variables (optimizer slots, loss scale) twice.

  TF copies every trackable to a CPU twin inside a tf.function on each async save; Keras 3's Variable creates a new
  tf.Variable there on every call, which tf.function refuses after the first. Reusing the twin, as TensorFlow's own
  variables do, fixes it. Checked by tests/launch/test_checkpoints.py (several async saves with Keras optimizers).
  """
  import keras  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import core  # pylint: disable=g-import-not-at-top
  cls = getattr(core, "Variable", None)
  if cls is None or getattr(cls, "_genscale_async_safe", False):
    return

  def copy_to_cpu(self, object_map):
    self.value._copy_trackable_to_cpu(object_map)  # pylint: disable=protected-access
    if self in object_map:
      object_map[self].assign(object_map[self.value])
    else:
      object_map[self] = tf.Variable(object_map[self.value])

  cls._copy_trackable_to_cpu = copy_to_cpu  # pylint: disable=protected-access
  cls._genscale_async_safe = True
  del keras


class Store:
  """Saves, retains and restores one run's checkpoints. Host only.

  Args:
    workdir: the run directory (local or gs://).
    checkpoint: the tf.train.Checkpoint to save.
    keep: number of most recent checkpoints kept.
    milestone_every: also keep every checkpoint whose step is a multiple of this (0: none).
    is_chief: whether this process owns the workdir.
    asynchronous: write in the background (training continues while the files are written).
  """

  def __init__(self, workdir, checkpoint, keep=3, milestone_every=0, is_chief=True, asynchronous=True):
    self.workdir = workdir
    self.checkpoint = checkpoint
    self.keep = max(int(keep), 1)
    self.milestone_every = int(milestone_every or 0)
    self.is_chief = is_chief
    self.directory = directory_of(workdir) if is_chief else tempfile.mkdtemp(prefix="genscale-worker-ckpt-")
    if asynchronous:
      _keras_variables_async_safe()
    self.options = tf.train.CheckpointOptions(experimental_enable_async_checkpoint=bool(asynchronous))
    self.asynchronous = bool(asynchronous)
    self._committer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-commit")
    self._pending = None
    self.last_saved_step = None

  # ---- start-up

  def remove_orphans(self):
    """Deletes the ``*_temp`` directories that interrupted writes leave behind. Returns their paths."""
    if not self.is_chief or not tf.io.gfile.isdir(self.directory):
      return []
    removed = []
    for name in tf.io.gfile.listdir(self.directory):
      name = name.rstrip("/")
      if name.endswith("_temp"):
        path = os.path.join(self.directory, name)
        tf.io.gfile.rmtree(path)
        removed.append(path)
        logging.warning("removed %s, left by an interrupted checkpoint write", path)
    return removed

  def restore_latest(self, warn=print):
    """Restores the newest checkpoint that reads back; returns its step, or None for a new run.

    Every worker restores, from the chief's directory (so under MultiWorkerMirroredStrategy the workdir must be
    one every worker can read: a shared disk or gs://). A checkpoint that fails to restore is reported through
    ``warn`` and skipped, never deleted.
    """
    steps = committed_steps(self.workdir, warn=warn if self.is_chief else None)
    for i, step in enumerate(steps):
      path = path_of(self.workdir, step)
      try:
        self.checkpoint.read(path).assert_existing_objects_matched()
        return step
      except (IndexError, ValueError, AssertionError, tf.errors.OpError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        following = f"falling back to ckpt-{steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint left"
        if not self.is_chief:
          continue
        warn(f"warning: checkpoint {path} failed to restore ({type(e).__name__}: {reason}); {following}; "
             "the bad checkpoint is left in place")
    if steps:
      tried = ", ".join(f"ckpt-{step}" for step in steps)
      raise UserError(f"none of the checkpoints in {self.directory} could be restored (tried {tried}; the "
                      "warnings above say why); nothing was deleted: train in a new --workdir, or move that "
                      "directory aside to start this run again from step 0")
    return None

  # ---- saving

  def save(self, step):
    """Starts saving the current state as ``ckpt-<step>``; returns at once when asynchronous."""
    self.wait()  # one save in flight at a time
    path = os.path.join(self.directory, f"ckpt-{int(step)}")
    self.checkpoint.write(path, options=self.options)
    self._pending = self._committer.submit(self._finish, int(step))
    self.last_saved_step = int(step)
    if not self.asynchronous:
      self.wait()
    return path

  def wait(self):
    """Blocks until the save in flight, if any, is written and committed."""
    if self._pending is not None:
      pending, self._pending = self._pending, None
      pending.result()

  def _finish(self, step):
    if self.asynchronous:
      self.checkpoint.sync()
    if not self.is_chief:
      shutil.rmtree(self.directory, ignore_errors=True)
      os.makedirs(self.directory, exist_ok=True)
      return
    state = read_state(self.workdir)  # read once: on gs:// every read is a request
    steps = sorted(set(_steps_of(state, self.workdir)) | {step})
    state = state or {"saved_at": {}}
    saved_at = {str(k): v for k, v in state.get("saved_at", {}).items()}
    saved_at[str(step)] = time.time()
    kept = self._retained(steps)
    dropped = [s for s in steps if s not in kept]
    state = {"steps": kept, "saved_at": {str(s): saved_at.get(str(s)) for s in kept}, "latest": max(kept),
             "milestone_every": self.milestone_every, "keep": self.keep}
    storage.write_json(os.path.join(self.directory, STATE), state)  # commit before deleting anything
    for old in dropped:
      for name in tf.io.gfile.glob(os.path.join(self.directory, f"ckpt-{old}.*")):
        tf.io.gfile.remove(name)

  def _retained(self, steps):
    recent = set(sorted(steps)[-self.keep:])
    milestones = {s for s in steps if self.milestone_every and s % self.milestone_every == 0}
    return sorted(recent | milestones)

  def close(self):
    self.wait()
    self._committer.shutdown(wait=True)
    if not self.is_chief:
      shutil.rmtree(self.directory, ignore_errors=True)
