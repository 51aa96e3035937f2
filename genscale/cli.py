"""What every command-line entry point shares: quiet TensorFlow start-up and one-line errors.

Every mistake a user can fix, from a mistyped flag to a bad config value, ends in one line
``genscale: error: <what to change>`` and exit status 2; that includes the errors of flag parsing (a missing
required flag, an unknown variant of a config file, a config key that doesn't exist, a value of the wrong type),
which absl would otherwise report as a ``FATAL Flags parsing error`` with status 1 or a traceback.
"""

import difflib
import os
import sys

USAGE_EXIT = 2


def configure_environment():
  """Sets TensorFlow's environment defaults; call before importing TensorFlow. A user's own setting wins.

  - TF_CPP_MIN_LOG_LEVEL=2 hides the C++ start-up chatter.
  - TF_ENABLE_ONEDNN_OPTS=1 uses oneDNN kernels on every x86 CPU. TensorFlow only turns them on by itself for CPUs
    with AVX-512 VNNI/BF16 or AMX; on an AVX2 CPU they made a DCGAN step 1.5-2x faster (docs/benchmarks.md).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def fail(message):
  """Prints ``genscale: error: message`` and exits with status 2."""
  sys.stderr.write(f"genscale: error: {message}\n")
  sys.stderr.flush()
  sys.exit(USAGE_EXIT)


def _flatten(section, prefix=""):
  keys = []
  for key, value in section.items():
    keys.append(prefix + key)
    if hasattr(value, "items"):
      keys += _flatten(value, f"{prefix}{key}.")
  return keys


def _config_argument(argv):
  """(path, variant) of the ``--config=path[:variant]`` argument, or None."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path, _, variant = arg[len("--config="):].partition(":")
      return path, variant or None
  return None


def _load_config(path, variant):
  """The config file's config, loaded as config_flags loads it, or None when that fails."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  try:
    spec = importlib.util.spec_from_file_location("genscale_config_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant) if variant is not None else module.get_config()
  except Exception:  # pylint: disable=broad-except
    return None


def _unknown_config_key(argv):
  """The message for a ``--config.<key>`` override whose key the config doesn't have, or None."""
  located = _config_argument(argv)
  config = _load_config(*located) if located else None
  if config is None:
    return None
  keys = _flatten(config)
  for arg in argv[1:]:
    if arg.startswith("--config."):
      key = arg[len("--config."):].partition("=")[0]
      if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        hint = f"; did you mean --config.{close[0]}?" if close else "; see the config file for its keys"
        return f"--config.{key}: the config {located[0]} has no key {key!r}{hint}"
  return None


def _flag_error(error, argv, flag_values):
  """One line that says what to change, for an exception raised while parsing ``argv``."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if isinstance(error, UserError):
    return str(error)
  if isinstance(error, (KeyError, AttributeError)):
    return _unknown_config_key(argv) or str(error).strip("'\"").splitlines()[0]
  text = str(error).strip().splitlines()[0]
  if isinstance(error, flags.UnrecognizedFlagError):
    name = getattr(error, "flagname", None) or ""
    close = difflib.get_close_matches(name, list(flag_values), n=1)
    return f"unknown flag --{name}" + (f"; did you mean --{close[0]}?" if close else "; see --helpshort")
  if "must have a value other than None" in text:
    name = text.split("--")[1].split("=")[0]
    return f"--{name} is required: {flag_values[name].help}"
  return text[len("flag "):] if text.startswith("flag ") else text


# The config files beside this package (in a checkout and in an installed wheel alike): launch/configs/.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "configs")


def resolve_config_path(path):
  """Where ``--config=path`` points: the path itself when it exists; else, for a bare family name (``dcgan``) or a
  path given relative to the project (``launch/configs/dcgan.py``), that file of the installed package, so the
  commands work from any directory."""
  if os.path.exists(path):
    return path
  name = os.path.basename(path)
  name = name if name.endswith(".py") else name + ".py"
  candidate = os.path.join(CONFIG_DIR, name)
  if (os.sep not in path or path.replace(os.sep, "/").startswith("launch/configs/")) and os.path.exists(candidate):
    return candidate
  return path


def _resolved_argv(argv):
  out = list(argv[:1])
  for arg in argv[1:]:
    if arg.startswith("--config=") and not arg.startswith("--config.="):
      path, colon, variant = arg[len("--config="):].partition(":")
      arg = f"--config={resolve_config_path(path)}{colon}{variant}"
    out.append(arg)
  return out


def parse_flags(argv, flag_values=None):
  """absl's flag parsing (of ``flag_values``, default absl's global flags), with every error as one
  ``genscale: error:`` line and exit status 2. Returns the arguments that are not flags.

  ``--config=dcgan:cpu`` is short for ``--config=launch/configs/dcgan.py:cpu`` (``resolve_config_path``)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  argv = _resolved_argv(argv)
  try:
    remaining = flag_values(argv)
  except Exception as e:  # pylint: disable=broad-except
    fail(_flag_error(e, argv, flag_values))
  if "config" in flag_values:
    value = flag_values["config"].value
    if type(value).__name__ == "_ErrorConfig":  # config_flags defers a file it could not load
      located = _config_argument(argv)
      path = located[0] if located else "?"
      why = "no such file" if not os.path.exists(path) else "it does not load: " + str(
          value._error).strip().splitlines()[-1].strip()  # pylint: disable=protected-access
      fail(f"--config={path}: {why}; give launch/configs/<family>.py:<variant>, e.g. launch/configs/dcgan.py:cpu")
  return remaining


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
      fail(e)

  app.run(wrapped, flags_parser=parse_flags)
