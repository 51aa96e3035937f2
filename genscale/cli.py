"""What every command-line entry point shares: quiet TensorFlow start-up and one-line errors."""

import os
import sys


def configure_environment():
  """Sets TensorFlow's environment defaults; call before importing TensorFlow. A user's own setting wins.

  - TF_CPP_MIN_LOG_LEVEL=2 hides the C++ start-up chatter.
  - TF_ENABLE_ONEDNN_OPTS=1 uses oneDNN kernels on every x86 CPU. TensorFlow only turns them on by itself for CPUs
    with AVX-512 VNNI/BF16 or AMX; on an AVX2 CPU they made a DCGAN step 1.5-2x faster (docs/benchmarks.md).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def run(main_fn):
  """Runs an absl main, turning a UserError into ``genscale: error: ...`` with exit status 2."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top

  def wrapped(argv):
    from absl import logging  # pylint: disable=g-import-not-at-top
    if logging.get_verbosity() == logging.INFO and not os.environ.get("GENSCALE_VERBOSE"):
      logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines (saver timings...) drown the progress
    try:
      return main_fn(argv)
    except UserError as e:
      sys.stderr.write(f"genscale: error: {e}\n")
      sys.stderr.flush()
      sys.exit(2)

  app.run(wrapped)
