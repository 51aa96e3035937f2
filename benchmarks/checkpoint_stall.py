"""How long a checkpoint save blocks training, synchronous vs asynchronous.

  python -m benchmarks.checkpoint_stall --config=launch/configs/dcgan.py:cpu --widths=32,128

For each generator/discriminator width it builds the config's trainer, trains a few steps (so optimizer slots
exist), then saves --saves times with each mode into a scratch directory and reports the median time the
``Store.save`` call blocks the training loop (the stall), the median time until the checkpoint is committed, and
the checkpoint size. With asynchronous saves the stall is the copy of the variables to host memory; the write
happens while training goes on.
"""

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", "launch/configs/dcgan.py:cpu", "Config file and variant.")
flags.DEFINE_list("widths", ["32", "128"], "model.g_width = model.d_width values to measure.")
flags.DEFINE_integer("saves", 5, "Saves per mode; medians are reported.")
FLAGS = flags.FLAGS


def measure(config, asynchronous):
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  from launch.trainer import Trainer  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  runtime = runtime_lib.create(config.runtime)
  source = pipelines.open_source(config.data, config.get("input"))
  trainer = Trainer(config, runtime, source)
  trainer.run(2)
  scratch = tempfile.mkdtemp(prefix="genscale-ckpt-bench-")
  store = checkpoints.Store(scratch, trainer.checkpoint, keep=2, asynchronous=asynchronous)
  stalls, commits = [], []
  try:
    for i in range(FLAGS.saves + 1):
      trainer.run(1)
      start = time.perf_counter()
      store.save(i + 1)
      stalled = time.perf_counter() - start
      store.wait()
      committed = time.perf_counter() - start
      if i:  # the first save traces TensorFlow's copy functions
        stalls.append(stalled)
        commits.append(committed)
    store.close()
    directory = checkpoints.directory_of(scratch)
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)
               if n.startswith(f"ckpt-{FLAGS.saves + 1}."))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  params = sum(int(v.shape.num_elements()) for v in trainer.model.trainable_variables)
  return statistics.median(stalls), statistics.median(commits), size, params


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  print("command: python -m benchmarks.checkpoint_stall " + " ".join(sys.argv[1:]))
  print(f"machine: {platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}; local disk")
  print("| width | parameters | checkpoint MB | mode | stall ms (median) | until committed ms |")
  print("|---|---|---|---|---|---|")
  for width in FLAGS.widths:
    config = rundir.prepare_config(FLAGS.config)
    config.model.g_width = config.model.d_width = int(width)
    for asynchronous in (False, True):
      stall, commit, size, params = measure(config, asynchronous)
      print(f"| {width} | {params:,} | {size / 1e6:.1f} | {'async' if asynchronous else 'sync'} | "
            f"{1000 * stall:.1f} | {1000 * commit:.1f} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
