"""Training throughput of a config: img/s, step time, compile time and the fraction of matmul peak achieved.

  python -m benchmarks.train_throughput --config=launch/configs/dcgan.py:cpu
  python -m benchmarks.train_throughput --config=launch/configs/edm.py:cpu \
      --settings=float32:false,float32:true,mixed_bfloat16:true
  python -m benchmarks.train_throughput --config=launch/configs/stylegan2.py:cpu --config.model.modconv=grouped \
      --label=sg2-grouped --settings=float32:true

Any config works (dcgan, ddpm, edm, stylegan2, pggan; for pggan's final resolution add
--config.model.start_resolution=32 so the networks don't grow).

For every combination of --precisions and --xla it builds the config's trainer, times the first compiled call
(compile time), then runs --repeats timed calls of --steps steps each and reports the median step time. The FLOP
count of one step comes from TensorFlow's profiler over the traced forward and backward graph of every phase
(a phase that runs every k steps counts 1/k). The matmul peak is measured in the same process, for float32 and
bfloat16, so the percentages are ratios from one run on one machine. Run it on an otherwise idle machine.
"""

import os
import platform
import statistics
import sys
import time

from benchmarks.peak import matmul_peak
from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", "launch/configs/dcgan.py:cpu", "Config file and variant.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Precision policies to measure.")
flags.DEFINE_list("xla", ["false", "true"], "XLA settings to measure.")
flags.DEFINE_list("settings", None, "precision:xla pairs to measure instead of every --precisions x --xla "
                  "combination, e.g. float32:false,float32:true,mixed_bfloat16:true.")
flags.DEFINE_string("label", None, "Name in the model column (default the config's model name), e.g. to tell "
                    "two implementations of one model apart.")
flags.DEFINE_integer("steps", 10, "Steps per timed compiled call.")
flags.DEFINE_integer("repeats", 5, "Timed calls per setting; the median is reported.")
flags.DEFINE_integer("peak_size", 2048, "Matrix size for the matmul peak.")
FLAGS = flags.FLAGS


def step_flops(trainer):
  """FLOPs of one training step (all replicas), from the profiler over each phase's gradient graph."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-import-not-at-top
  spec = trainer.dataset_spec()
  options = option_builder.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  tf.get_logger().setLevel("ERROR")  # the profiler's shape helper logs a deprecation warning per node type
  total = 0.0
  for phase in trainer.phases:
    fn = tf.function(trainer._gradient_fn(phase))  # pylint: disable=protected-access
    graph = fn.get_concrete_function(spec, tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int32)).graph
    flops = model_analyzer.profile(graph, options=options).total_float_ops
    total += flops / phase.interval
  return total * trainer.runtime.num_replicas


def measure(config, precision, xla):
  import keras  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  from launch.trainer import Trainer  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.runtime.precision = precision
  config.runtime.xla = xla
  config.runtime.steps_per_loop = FLAGS.steps
  config = rundir.prepare_config(config)
  runtime = runtime_lib.create(config.runtime)
  source = pipelines.open_source(config.data)
  trainer = Trainer(config, runtime, source)
  t0 = time.perf_counter()
  trainer.run(FLAGS.steps)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    finite = trainer.run(FLAGS.steps).finite
    times.append((time.perf_counter() - t0) / FLAGS.steps)
    if not finite:
      raise RuntimeError("non-finite loss during the benchmark")
  flops = step_flops(trainer)
  keras.mixed_precision.set_global_policy("float32")
  step = statistics.median(times)
  return dict(compile_s=compile_s, step_ms=1000 * step, img_per_s=trainer.global_batch / step,
              gflop_per_step=flops / 1e9, gflop_per_s=flops / step / 1e9,
              spread=(max(times) - min(times)) / step)


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  print("command: python -m benchmarks.train_throughput " + " ".join(sys.argv[1:]))
  print(f"machine: {platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}, "
        f"oneDNN={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}")
  peaks = {"float32": matmul_peak(tf.float32, FLAGS.peak_size),
           "mixed_float16": matmul_peak(tf.float16, FLAGS.peak_size),
           "mixed_bfloat16": matmul_peak(tf.bfloat16, FLAGS.peak_size)}
  print("matmul peak (GFLOP/s, median of 5, n=%d): float32 %.1f  float16 %.1f  bfloat16 %.1f" % (
      FLAGS.peak_size, peaks["float32"], peaks["mixed_float16"], peaks["mixed_bfloat16"]))
  header = (f"| {'model':<8} | {'precision':<14} | {'xla':<5} | {'batch':>5} | {'compile s':>9} | "
            f"{'step ms':>8} | {'img/s':>7} | {'GFLOP/step':>10} | {'GFLOP/s':>8} | {'% peak':>6} | "
            f"{'spread':>6} |")
  print(header)
  print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
  is_true = lambda text: text.lower() in ("1", "true", "yes")
  if FLAGS.settings:
    settings = [(pair.split(":")[0], is_true(pair.split(":")[1])) for pair in FLAGS.settings]
  else:
    settings = [(precision, is_true(xla)) for precision in FLAGS.precisions for xla in FLAGS.xla]
  label = FLAGS.label or config.model.name
  for precision, xla in settings:
    if precision not in peaks:
      raise ValueError(f"unknown precision {precision!r} in --settings/--precisions")
    r = measure(config, precision, xla)
    pct = 100 * r["gflop_per_s"] / peaks[precision]
    print(f"| {label:<8} | {precision:<14} | {str(xla):<5} | {config.batch_size:>5} | "
          f"{r['compile_s']:>9.1f} | {r['step_ms']:>8.1f} | {r['img_per_s']:>7.0f} | "
          f"{r['gflop_per_step']:>10.2f} | {r['gflop_per_s']:>8.1f} | {pct:>5.1f}% | "
          f"{100 * r['spread']:>5.0f}% |", flush=True)
  print("% peak: achieved GFLOP/s over the matmul peak of the same precision; spread: (max - min) / median "
        "step time over the timed calls")


if __name__ == "__main__":
  cli.run(main)
