"""Train a model: ``python -m launch.train --config=launch/configs/<family>.py:<variant> --workdir=DIR``.

Override any config key with ``--config.key=value`` (e.g. ``--config.steps=50``,
``--config.runtime.precision=mixed_bfloat16``). Running the same command again resumes from the newest checkpoint
in the workdir. Exit status: 0 done (or already done), 2 bad input, 3 non-finite loss (nothing saved after the
last checkpoint), 75 stopped by SIGTERM/SIGINT after saving a checkpoint at the current step (EX_TEMPFAIL: rerun to
resume). A second Ctrl-C interrupts without saving.

``--dry_run`` prints the resolved config and the config file's variants, and exits without training (no workdir
needed). ``--config=dcgan:cpu`` is short for ``--config=launch/configs/dcgan.py:cpu``, from any directory.
"""

import sys

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file("config", None, "Config file and variant, e.g. launch/configs/dcgan.py:cpu "
                                "or dcgan:cpu.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory, local or gs://bucket/path.")
flags.DEFINE_bool("break_lock", False, "Remove a stale lock left in the workdir by a dead run.")
flags.DEFINE_bool("dry_run", False, "Print the resolved config and the file's variants; don't train.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS
NONFINITE_EXIT = 3
PREEMPTED_EXIT = 75


def _dry_run():
  """The resolved config as JSON, then the variants of its file, one line each."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(FLAGS.config)
  print(config.to_json_best_effort(indent=2, sort_keys=True))
  path = cli.resolve_config_path(FLAGS["config"].config_filename.partition(":")[0])
  spec = importlib.util.spec_from_file_location("genscale_dry_run_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name, changes in getattr(module, "VARIANTS", {}).items():
    print(f"variant {name}: " + ", ".join(f"{key}={value!r}" for key, value in changes.items()))


def main(argv):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {' '.join(argv[1:])}; use --config.key=value for overrides")
  if FLAGS.dry_run:
    _dry_run()
    return
  if FLAGS.workdir is None:
    raise UserError(f"--workdir is required: {FLAGS['workdir'].help}")
  from launch import loop  # pylint: disable=g-import-not-at-top
  try:
    loop.train(FLAGS.config, FLAGS.workdir, break_lock=FLAGS.break_lock)
  except loop.NonFiniteLoss as e:
    sys.stderr.write(f"genscale: error: {e}\n")
    sys.exit(NONFINITE_EXIT)
  except loop.Preempted as e:
    sys.stderr.write(f"genscale: {e}; rerun the same command to resume\n")
    sys.exit(PREEMPTED_EXIT)


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
