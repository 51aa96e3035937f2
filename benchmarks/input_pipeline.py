"""Input pipeline throughput, and how long training waits for input.

  python -m benchmarks.input_pipeline

1. Writes --count RGB JPEG images of 256x256 (embedded digits, enlarged and tinted) to a scratch directory and
   prepares them as TFRecords at 32, 64 and 256 with ``pipelines.prepare``.
2. Reads each through the training pipeline (one input pipeline, global batch 64, shuffling and flips on) and
   reports images/s: TFRecords at their stored resolution, and the JPEG folder decoded and resized on the fly.
   Median of --repeats timed runs of --batches batches each, after a warm-up.
3. Trains each cpu config for a few compiled calls and reports the fraction of step time spent waiting for input
   (the loop's ``perf/input_wait_fraction``), with the embedded data and with the 32x32 TFRecords.
Run it on an otherwise idle machine.
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

flags.DEFINE_integer("count", 2000, "Images in the scratch dataset.")
flags.DEFINE_integer("batches", 50, "Batches per timed run.")
flags.DEFINE_integer("repeats", 3, "Timed runs; the median is reported.")
flags.DEFINE_list("configs", ["launch/configs/dcgan.py:cpu"], "cpu configs for the input-wait measurement.")
flags.DEFINE_integer("train_steps", 100, "Training steps per config for the input-wait measurement.")
flags.DEFINE_string("scratch", None, "Scratch directory (default: a temporary one, removed afterwards).")
flags.DEFINE_list("resolutions", ["32", "64", "256"], "Resolutions of the reading table (32 is always prepared: the "
                  "input-wait measurement reads it).")
FLAGS = flags.FLAGS


def make_images(root, count):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from pipelines import embedded  # pylint: disable=g-import-not-at-top
  digits, labels = embedded.load("all")
  rng = np.random.default_rng(0)
  for i in range(count):
    gray = Image.fromarray(digits[i % len(digits), :, :, 0]).resize((256, 256), Image.BILINEAR)
    tint = rng.uniform(0.3, 1.0, 3)
    rgb = (np.asarray(gray, np.float32)[..., None] * tint).astype(np.uint8)
    directory = os.path.join(root, str(labels[i % len(labels)]))
    os.makedirs(directory, exist_ok=True)
    Image.fromarray(rgb).save(os.path.join(directory, f"{i:05d}.jpg"), quality=90)


def read_rate(source, resolution):
  """Median images/s reading ``source`` at ``resolution`` through the training pipeline."""
  import pipelines  # pylint: disable=g-import-not-at-top
  layout = pipelines.InputLayout(64)
  dataset = source.dataset(layout, seed=0, start_step=0, resolution=resolution, channels=3, flip=True)
  iterator = iter(dataset)
  for _ in range(5):
    next(iterator)
  rates = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
      next(iterator)["image"].numpy()
    rates.append(FLAGS.batches * 64 / (time.perf_counter() - start))
  return statistics.median(rates)


def input_wait(config_arg, data=None, channels=None):
  """(fraction of step time waiting for input, img/s) for a config over a few compiled calls."""
  import keras  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  from launch.trainer import Trainer  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  path, variant = config_arg.split(":")
  config = config_flags.config_flags._ConfigFileParser("config").parse(f"{path}:{variant}")  # pylint: disable=protected-access
  if data:
    config.data = data
    config.channels = channels
  config = rundir.prepare_config(config)
  runtime = runtime_lib.create(config.runtime)
  source = pipelines.open_source(config.data, config.get("input"))
  trainer = Trainer(config, runtime, source)
  per_call = runtime.steps_per_loop
  trainer.run(per_call)
  waited, elapsed, steps = 0.0, 0.0, 0
  while steps < FLAGS.train_steps:
    start = time.perf_counter()
    result = trainer.run(per_call)
    elapsed += time.perf_counter() - start
    waited += result.metrics["perf/input_wait_fraction"].total  # seconds waited in the call
    steps += per_call
  keras.mixed_precision.set_global_policy("float32")
  return waited / elapsed, steps * trainer.global_batch / elapsed


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pipelines import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  print("command: python -m benchmarks.input_pipeline " + " ".join(sys.argv[1:]))
  print(f"machine: {platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}, "
        f"oneDNN={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}")
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix="genscale-input-bench-")
  try:
    folder = os.path.join(scratch, "jpeg256")
    if not os.path.exists(folder):
      make_images(folder, FLAGS.count)
    rows = []
    for resolution in sorted({32, *map(int, FLAGS.resolutions)}):
      out = os.path.join(scratch, f"records{resolution}")
      if not os.path.exists(os.path.join(out, "metadata.json")):
        prepare_lib.prepare(f"folder:{folder}", out, resolution, shards=8, folder_labels=True,
                            stream=open(os.devnull, "w"))
      records_rate = read_rate(pipelines.open_source(f"tfrecord:{out}"), resolution)
      folder_rate = read_rate(pipelines.open_source(f"folder:{folder}"), resolution)
      rows.append((resolution, records_rate, folder_rate))
    print(f"\nreading, global batch 64, {FLAGS.count} images, median of {FLAGS.repeats} x {FLAGS.batches} batches")
    print("| resolution | TFRecords img/s | JPEG folder img/s |")
    print("|---|---|---|")
    for resolution, records_rate, folder_rate in rows:
      print(f"| {resolution}x{resolution} | {records_rate:,.0f} | {folder_rate:,.0f} |")

    print(f"\ninput wait during training ({FLAGS.train_steps} steps after a warm-up call)")
    print("| config | data | input wait | img/s |")
    print("|---|---|---|---|")
    for config_arg in FLAGS.configs:
      for label, data, channels in (("embedded", None, None),
                                    ("tfrecord 32x32", f"tfrecord:{os.path.join(scratch, 'records32')}", 3)):
        fraction, rate = input_wait(config_arg, data, channels)
        print(f"| {config_arg} | {label} | {100 * fraction:.2f}% | {rate:,.0f} |", flush=True)
  finally:
    if not FLAGS.scratch:
      shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  cli.run(main)
