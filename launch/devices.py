"""What a config would train on, without training: ``python -m launch.devices --config=launch/configs/dcgan.py:tpu``.

Builds the config's strategy (connecting to and initialising a TPU, or waiting for the other workers of a
multi-worker cluster) and prints it with the split of the global batch, then exits. Useful as the first cell of a
notebook and as a check of a new machine. Takes the same ``--config.key=value`` overrides as ``launch.train``.
"""

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", None, "Config file and variant, e.g. launch/configs/dcgan.py:tpu.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(FLAGS.config)
  from genscale.errors import require  # pylint: disable=g-import-not-at-top
  runtime = runtime_lib.create(config.runtime)
  batch, replicas = int(config.batch_size), runtime.num_replicas
  require(batch % replicas == 0,
          f"--config.batch_size {batch} is not divisible by {replicas} replicas; use a multiple of {replicas}")
  print(runtime.describe())
  print(f"global batch {batch}: {batch // runtime.num_replicas} per replica, {runtime.steps_per_loop} steps per "
        "compiled call")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
