"""The machine's measured matmul peak, the yardstick for "fraction of peak" in the benchmarks."""

import statistics
import time


def matmul_peak(dtype, n, repeats=5):
  """Median GFLOP/s of an n x n matmul chain in ``dtype`` (one tf.function call = 10 matmuls)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]) / (n**0.5), dtype)

  @tf.function
  def chain(x):
    for _ in range(10):
      x = tf.matmul(x, b)
    return x

  chain(a).numpy()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    chain(a).numpy()
    times.append(time.perf_counter() - t0)
  return 10 * 2 * n**3 / statistics.median(times) / 1e9
