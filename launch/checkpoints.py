"""Checkpoints of a run: everything in ``Trainer.checkpoint``, under ``<workdir>/checkpoints``.

Runs on the host between compiled calls. Only the chief keeps checkpoints; under MultiWorkerMirroredStrategy every
worker must take part in a save, so the others write to a temporary directory that is removed at once.
"""

import os
import shutil
import tempfile

from absl import logging
import tensorflow as tf

STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"


def directory_of(workdir):
  return os.path.join(workdir, "checkpoints")


def saved_step(path):
  """The training step stored in a checkpoint, read without building anything."""
  return int(tf.train.load_variable(path, STEP_KEY))


def latest(workdir):
  """Path of the newest checkpoint of a run, or None."""
  return tf.train.latest_checkpoint(directory_of(workdir))


class Store:
  """Saves and restores one run's checkpoints.

  Args:
    workdir: the run directory (local or gs://).
    checkpoint: the tf.train.Checkpoint to save.
    keep: number of most recent checkpoints kept.
    is_chief: whether this process owns the workdir.
  """

  def __init__(self, workdir, checkpoint, keep, is_chief=True):
    self.checkpoint = checkpoint
    self.is_chief = is_chief
    self.directory = directory_of(workdir) if is_chief else tempfile.mkdtemp(prefix="genscale-worker-ckpt-")
    self.manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=int(keep),
                                              checkpoint_name="ckpt")

  def restore_latest(self):
    """Restores the newest checkpoint; returns its path or None when the run is new."""
    path = self.manager.latest_checkpoint if self.is_chief else None
    if path is None:
      return None
    self.checkpoint.restore(path).assert_existing_objects_matched()
    logging.info("restored %s", path)
    return path

  def save(self, step):
    path = self.manager.save(checkpoint_number=int(step))
    if not self.is_chief:
      shutil.rmtree(self.directory, ignore_errors=True)
      os.makedirs(self.directory, exist_ok=True)
    return path
