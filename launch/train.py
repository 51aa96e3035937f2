"""Train a model: ``python -m launch.train --config=launch/configs/<family>.py:<variant> --workdir=DIR``.

Override any config key with ``--config.key=value`` (e.g. ``--config.steps=50``,
``--config.runtime.precision=mixed_bfloat16``). Running the same command again resumes from the newest checkpoint
in the workdir. Exit status: 0 done, 2 bad input, 3 non-finite loss.
"""

import sys

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", None, "Config file and variant, e.g. launch/configs/dcgan.py:cpu.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory, local or gs://bucket/path.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f"unexpected arguments {' '.join(argv[1:])}; use --config.key=value for overrides")
  from launch import loop  # pylint: disable=g-import-not-at-top
  try:
    loop.train(FLAGS.config, FLAGS.workdir)
  except loop.NonFiniteLoss as e:
    sys.stderr.write(f"genscale: error: {e}\n")
    sys.exit(3)


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
