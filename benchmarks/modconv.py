"""StyleGAN2's two modulated-convolution implementations against each other: one layer, forward and gradient.

  python -m benchmarks.modconv
  python -m benchmarks.modconv --batch=8 --cases=grouped:true:grad --layers=16:64:64:up

``scaled`` scales the activations by the styles around one convolution shared by the batch; ``grouped`` builds a
kernel per example and runs one grouped convolution (models/stylegan2/ops.py). For each layer shape and each case
(implementation : XLA : fwd | grad) it times the compiled function (median of --repeats calls of --calls each) and
reports GFLOP/s against the float32 matmul peak measured in the same process. ``grad`` is the forward pass plus
the gradients for the activations, the weight and the styles (what a training step needs).

TensorFlow has no CPU kernel for the gradient of a grouped convolution, so ``grouped:false:grad`` can't run on a
CPU; each case runs in a subprocess, and one that hasn't finished --compile_limit + 120 seconds after it started
is reported as such and skipped. Run it on an otherwise idle machine.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

from benchmarks.peak import matmul_peak
from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("batch", 32, "Examples per call (the stylegan2 cpu config's batch).")
flags.DEFINE_list("layers", ["16:64:64:up", "32:64:32:up", "32:32:32:same"],
                  "resolution:in:out:up|same of each layer (output resolution); the defaults are the cpu config's "
                  "two largest upsampling layers and its top 3x3 layer.")
flags.DEFINE_list("cases", ["scaled:false:fwd", "scaled:true:fwd", "grouped:false:fwd", "grouped:true:fwd",
                            "scaled:false:grad", "scaled:true:grad", "grouped:true:grad"],
                  "impl:xla:fwd|grad cases to time.")
flags.DEFINE_integer("calls", 10, "Calls per timed repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats; the median is reported.")
flags.DEFINE_integer("compile_limit", 300, "Seconds a case may take to compile; it is given up 120 s after that "
                     "(the timed calls included).")
flags.DEFINE_string("one", None, "Internal: run one case given as JSON and print its result as JSON.")
FLAGS = flags.FLAGS


def layer_flops(batch, resolution, cin, cout, up):
  """Multiply-adds x 2 of the convolution itself (the 3x3 kernel at the input resolution when upsampling, as
  the transposed convolution computes it), forward only."""
  pixels = (resolution // 2)**2 if up else resolution**2
  return 2.0 * batch * pixels * 9 * cin * cout


def run_case(case):
  """Times one case in this process; returns a dict."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models.stylegan2 import ops  # pylint: disable=g-import-not-at-top
  res, cin, cout, up = case["resolution"], case["cin"], case["cout"], case["up"]
  size = res // 2 if up else res
  x = tf.random.normal([case["batch"], size, size, cin])
  weight = tf.random.normal([3, 3, cin, cout]) / (9 * cin)**0.5
  styles = 1.0 + 0.3 * tf.random.normal([case["batch"], cin])

  def forward(x, weight, styles):
    y = ops.modulated_conv(x, weight, styles, up=up, impl=case["impl"])
    # The upsampling layer's low-pass filter, as the model's "auto" setting picks it.
    return ops.fir(y, 1, 1, gain=4.0, impl=ops.filter_impl_for(case["xla"])) if up else y

  def gradient(x, weight, styles):
    with tf.GradientTape() as tape:
      tape.watch([x, weight, styles])
      y = forward(x, weight, styles)
      loss = tf.reduce_sum(tf.square(y))
    return tape.gradient(loss, [x, weight, styles])

  fn = tf.function(gradient if case["mode"] == "grad" else forward, jit_compile=case["xla"])

  def call():
    out = fn(x, weight, styles)
    for t in tf.nest.flatten(out):
      t.numpy()

  t0 = time.perf_counter()
  call()
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    for _ in range(FLAGS.calls):
      call()
    times.append((time.perf_counter() - t0) / FLAGS.calls)
  flops = layer_flops(case["batch"], res, cin, cout, up) * (3.0 if case["mode"] == "grad" else 1.0)
  ms = statistics.median(times) * 1000
  return dict(compile_s=compile_s, ms=ms, gflop_per_s=flops / (ms / 1000) / 1e9)


def main(argv):
  del argv
  if FLAGS.one:
    print("RESULT " + json.dumps(run_case(json.loads(FLAGS.one))), flush=True)
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print("command: python -m benchmarks.modconv " + " ".join(sys.argv[1:]))
  print(f"machine: {platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}")
  peak = matmul_peak(tf.float32, 2048)
  print(f"float32 matmul peak: {peak:.1f} GFLOP/s (grad counts 3x the forward FLOPs)")
  header = "| layer (res in->out) | impl    | xla   | pass | compile s | ms/call | GFLOP/s | % peak |"
  print(header)
  print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
  for layer in FLAGS.layers:
    res, cin, cout, kind = layer.split(":")
    for spec in FLAGS.cases:
      impl, xla, mode = spec.split(":")
      case = dict(resolution=int(res), cin=int(cin), cout=int(cout), up=kind == "up", impl=impl,
                  xla=xla.lower() == "true", mode=mode, batch=FLAGS.batch)
      name = f"{res}x{res} {cin}->{cout} {kind}"
      prefix = f"| {name:<19} | {impl:<7} | {str(case['xla']):<5} | {mode:<4} |"
      if impl == "grouped" and mode == "grad" and not case["xla"]:
        print(f"{prefix} no CPU gradient kernel for grouped convolutions |", flush=True)
        continue
      try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.modconv", "--one", json.dumps(case),
                               f"--calls={FLAGS.calls}", f"--repeats={FLAGS.repeats}"],
                              capture_output=True, text=True, timeout=FLAGS.compile_limit + 120, check=False)
      except subprocess.TimeoutExpired:
        print(f"{prefix} did not finish within {FLAGS.compile_limit + 120} s |", flush=True)
        continue
      lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
      if not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1][:80]
        print(f"{prefix} failed: {error} |", flush=True)
        continue
      r = json.loads(lines[-1][len("RESULT "):])
      print(f"{prefix} {r['compile_s']:>9.1f} | {r['ms']:>7.2f} | {r['gflop_per_s']:>7.1f} | "
            f"{100 * r['gflop_per_s'] / peak:>5.1f}% |", flush=True)


if __name__ == "__main__":
  cli.run(main)
