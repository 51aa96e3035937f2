"""Diffusion sampling speed: images per second for DDIM-50 and Heun-18 (35 network calls).

  python -m benchmarks.sampling_speed --config=launch/configs/edm.py:cpu
  python -m benchmarks.sampling_speed --workdir=runs/edm       # the trained run's config and EMA weights

For each sampler it builds ``Sampler`` (the compiled, distributed ``model.generate`` that sample grids and
``launch.sample`` use) for --batch images, times the first call (tracing and compilation), then --repeats timed
calls, and reports the median. The weights don't change the speed, so without --workdir the network keeps its
initial weights. Prints the exact command first. Run it on an otherwise idle machine; on a shared one the figures
vary by tens of percent.
"""

import os
import platform
import statistics
import sys
import time

from genscale import cli

cli.configure_environment()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", "launch/configs/edm.py:cpu", "Config file and variant (no --workdir).")
flags.DEFINE_string("workdir", None, "A trained run: its config and newest checkpoint instead of --config.")
flags.DEFINE_list("samplers", ["ddim:50", "heun:18"], "sampler:steps pairs to time.")
flags.DEFINE_integer("batch", 64, "Images per compiled call.")
flags.DEFINE_integer("repeats", 3, "Timed calls per sampler; the median is reported.")
flags.DEFINE_string("precision", None, "runtime.precision; default the config's.")
flags.DEFINE_bool("xla", None, "Compile sampling with XLA; default the config's setting.")
FLAGS = flags.FLAGS


def _network_calls(sampler, steps):
  return 2 * steps - 1 if sampler == "heun" else steps


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top

  print("command: python -m benchmarks.sampling_speed " + " ".join(sys.argv[1:]))
  options = dict(strategy="auto", precision=FLAGS.precision, xla=FLAGS.xla)
  if FLAGS.workdir:
    run = rundir.load_run(FLAGS.workdir, **options)
    config, runtime, model = run.config, run.runtime, run.model
  else:
    config = rundir.prepare_config(FLAGS.config)
    height, width = pipelines.parse_resolution(config.resolution)
    info = pipelines.DataInfo(spec=config.data, count=0, resolution=height, width=width,
                              channels=int(config.channels), num_classes=10 if config.model.conditional else 0)
    runtime = rundir.runtime_for(config, **options)
    with runtime.strategy.scope():
      model = models.build(config, info, runtime.hardware)
  if config.model.name not in ("ddpm", "edm"):
    raise UserError(f"{config.model.name} is not a diffusion model; use a ddpm or edm config or run")
  print(f"machine: {platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}; {runtime.describe()}")
  print(f"model: {config.model.name}, {config.resolution} px, {config.channels} channel(s), channels "
        f"{config.model.channels} x ({config.model.channel_mults}), batch {FLAGS.batch}")
  print(f"| {'sampler':<8} | {'steps':>5} | {'net calls':>9} | {'compile s':>9} | {'s/batch':>8} | {'img/s':>7} |")
  print("|----------|-------|-----------|-----------|----------|---------|")
  for item in FLAGS.samplers:
    name, _, steps = item.partition(":")
    steps = int(steps or config.model.sample_steps)
    sampler = Sampler(runtime, model, FLAGS.batch, ema=True, sampler=name, steps=steps)
    t0 = time.perf_counter()
    sampler.batch([0, 0])
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(FLAGS.repeats):
      t0 = time.perf_counter()
      sampler.batch([0, i + 1])
      times.append(time.perf_counter() - t0)
    per_batch = statistics.median(times)
    print(f"| {name:<8} | {steps:>5} | {_network_calls(name, steps):>9} | {compile_s:>9.1f} | {per_batch:>8.2f} | "
          f"{sampler.batch_size / per_batch:>7.1f} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
