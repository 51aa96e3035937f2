"""Sampling speed: diffusion samplers in images per second, and the transformers' token decoding.

  python -m benchmarks.sampling_speed --config=launch/configs/edm.py:cpu
  python -m benchmarks.sampling_speed --workdir=runs/edm       # the trained run's config and EMA weights
  python -m benchmarks.sampling_speed --config=launch/configs/imagegpt.py:cpu
  python -m benchmarks.sampling_speed --config=launch/configs/maskgit.py:cpu

Diffusion: for each sampler (DDIM-50 and Heun-18, 35 network calls, by default) it builds ``Sampler`` (the
compiled, distributed ``model.generate`` that sample grids and ``launch.sample`` use) for --batch images, times the
first call (tracing and compilation), then --repeats timed calls, and reports the median.

ImageGPT: one batch of a whole image's tokens (256 at the cpu config) drawn from the key/value cache and by
recomputing every slot at every step, each with XLA off and on, in tokens per second, and the cache's speed-up
over recomputing at the same XLA setting (ratios measured in one run). MaskGIT: images per second at 8, 10 and 12
decoding steps, XLA off and on.

The weights don't change the speed, so without --workdir the network keeps its initial weights. Prints the exact
command and the CPU first. Run it on an otherwise idle machine; on a shared one the figures vary by tens of percent.
"""

import statistics
import sys
import time

from genscale import cli

cli.configure_environment()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

import benchmarks  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", "launch/configs/edm.py:cpu", "Config file and variant (no --workdir).")
flags.DEFINE_string("workdir", None, "A trained run: its config and newest checkpoint instead of --config.")
flags.DEFINE_list("samplers", ["ddim:50", "heun:18"], "sampler:steps pairs to time.")
flags.DEFINE_integer("batch", 64, "Images per compiled call.")
flags.DEFINE_list("decode_steps", ["8", "10", "12"], "MaskGIT: decoding steps to time.")
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
  print(f"machine: {benchmarks.cpu_description()}; TF {tf.__version__}; {runtime.describe()}")
  if config.model.name in ("imagegpt", "maskgit"):
    return _transformer(config, model)
  if config.model.name not in ("ddpm", "edm"):
    raise UserError(f"{config.model.name} is not a diffusion model or a transformer; use a ddpm, edm, imagegpt or "
                    "maskgit config or run")
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


def _timed(function, repeats):
  """(seconds of the first call, median seconds of ``repeats`` further calls) of ``function(i)``."""
  t0 = time.perf_counter()
  function(0).numpy()
  first = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    function(i + 1).numpy()
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def _transformer(config, model):
  """The token-decoding table of an ImageGPT or MaskGIT model (module docstring), on one device."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models.base import BatchRng  # pylint: disable=g-import-not-at-top
  batch, m = FLAGS.batch, config.model
  labels = tf.range(batch) % 10 if model.num_classes else None
  print(f"model: {m.name}, {model.length} tokens of a vocabulary of {model.vocab}, {m.depth} layers x {m.width}, "
        f"batch {batch}")

  def compiled(xla, **options):
    @tf.function(jit_compile=xla)
    def draw(key):
      rng = BatchRng(tf.stack([tf.constant(0, tf.int64), key]), 0, batch, 1)
      return model.serve(rng, labels, **options)  # the sampling defaults, with ``options`` changed
    return lambda i: draw(tf.constant(i, tf.int64))

  if m.name == "imagegpt":
    print(f"| {'decoding':<10} | {'xla':<5} | {'compile s':>9} | {'s/batch':>8} | {'tokens/s':>9} | "
          f"{'cache speed-up':>14} |")
    print("|------------|-------|-----------|----------|-----------|----------------|")
    for xla in (False, True):
      seconds = {}
      for cache in (True, False):
        first, seconds[cache] = _timed(compiled(xla, cache=cache), FLAGS.repeats)
        speedup = f"{seconds[False] / seconds[True]:.1f}x" if not cache else ""
        print(f"| {'kv-cache' if cache else 'recompute':<10} | {str(xla).lower():<5} | {first:>9.1f} | "
              f"{seconds[cache]:>8.2f} | {batch * model.length / seconds[cache]:>9.0f} | {speedup:>14} |",
              flush=True)
    return
  print(f"| {'steps':>5} | {'xla':<5} | {'compile s':>9} | {'s/batch':>8} | {'img/s':>7} |")
  print("|-------|-------|-----------|----------|---------|")
  for xla in (False, True):
    for steps in FLAGS.decode_steps:
      first, per_batch = _timed(compiled(xla, steps=int(steps)), FLAGS.repeats)
      print(f"| {int(steps):>5} | {str(xla).lower():<5} | {first:>9.1f} | {per_batch:>8.2f} | "
            f"{batch / per_batch:>7.1f} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
