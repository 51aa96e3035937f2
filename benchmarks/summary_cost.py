"""What monitoring costs: training calls with and without the host-side summaries the loop writes.

  python -m benchmarks.summary_cost --config=launch/configs/dcgan.py:cpu

Runs compiled calls of --steps steps and times them in four settings, alternating so machine noise hits all of
them alike: plain calls; calls whose last step is a diagnostic step (gradient norms) followed by the scalar
summaries of a log line; the same plus weight and gradient histograms; and the same plus the two sample grids.
Reports the median time per call and the overhead per logged call. Summaries are written between compiled calls,
so their cost is paid once per log interval, not per step.
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
flags.DEFINE_integer("steps", 10, "Steps per compiled call.")
flags.DEFINE_integer("repeats", 7, "Calls per setting; medians are reported.")
FLAGS = flags.FLAGS

SETTINGS = ("plain", "scalars", "scalars+histograms", "scalars+histograms+grids")


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  from launch import monitor as monitor_lib  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  from launch import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top

  config = rundir.prepare_config(FLAGS.config)
  runtime = runtime_lib.create(config.runtime)
  source = pipelines.open_source(config.data, config.get("input"))
  trainer = trainer_lib.Trainer(config, runtime, source)
  scratch = tempfile.mkdtemp(prefix="genscale-summary-bench-")
  monitor = monitor_lib.Monitor(scratch, 10**9, 0, stream=open(os.devnull, "w"))
  sampler = Sampler(runtime, trainer.model, int(config.sample_grid))

  def call(setting):
    diagnostics = setting != "plain"
    histograms = "histograms" in setting
    start = time.perf_counter()
    measure = (trainer_lib.GRAD_NORMS,) if diagnostics else ()
    measure += (trainer_lib.GRADIENTS,) if histograms else ()
    result = trainer.run(FLAGS.steps, measure=measure)
    step = result.step
    if diagnostics:
      extra = trainer.optimizer_stats()
      monitor.log(step, result.values(), nimg=result.nimg, extra=extra)
    if histograms:
      monitor.histograms(step, {v.name: v.numpy() for v in trainer.model.trainable_variables}, "weights")
      for phase in trainer.phases:
        named = {v.name: g for v, g in zip(phase.variables, result.gradients.get(phase.name, []))}
        monitor.histograms(step, named, f"gradients/{phase.name}")
    if "grids" in setting:
      for ema in (True, False):
        pixels = image_lib.grid(image_lib.to_uint8(sampler.batch([0, 1])))
        monitor.image_grid(step, f"samples/{'ema' if ema else 'raw'}", pixels)
    return time.perf_counter() - start

  try:
    for setting in SETTINGS:  # trace and compile every variant first
      call(setting)
    times = {s: [] for s in SETTINGS}
    for _ in range(FLAGS.repeats):
      for setting in SETTINGS:
        times[setting].append(call(setting))
  finally:
    monitor.close()
    shutil.rmtree(scratch, ignore_errors=True)
  print("command: python -m benchmarks.summary_cost " + " ".join(sys.argv[1:]))
  print(f"machine: {platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}; "
        f"{config.model.name}, {FLAGS.steps} steps per call, median of {FLAGS.repeats}")
  base = statistics.median(times["plain"])
  per_step = base / FLAGS.steps
  print("| setting | ms per call | overhead ms | overhead in steps | per 100-step log interval |")
  print("|---|---|---|---|---|")
  for setting in SETTINGS:
    median = statistics.median(times[setting])
    overhead = median - base
    print(f"| {setting} | {1000 * median:.0f} | {1000 * overhead:.0f} | {overhead / per_step:.2f} | "
          f"{100 * overhead / (100 * per_step):.1f}% |")
  del np


if __name__ == "__main__":
  cli.run(main)
