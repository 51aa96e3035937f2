"""Flag parsing as every command does it: each mistake is one ``genscale: error:`` line that names the fix, and
exit status 2 (in-process; tests/launch/test_train_cli.py runs the command itself once for the status)."""

import os

from absl import flags
from ml_collections import config_flags
import pytest

from genscale import cli
from tests.conftest import ROOT


def _parse(capsys, *args):
  """Parses ``args`` as ``launch.train`` declares its flags: (exit status or None, error lines, the flags)."""
  flag_values = flags.FlagValues()
  argv = ["train", *args]
  config_flags.DEFINE_config_file("config", None, "Config file and variant.", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)  # overrides are declared from the arguments
  flags.DEFINE_string("workdir", None, "Run directory, local or gs://bucket/path.", flag_values=flag_values)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
  status = None
  cwd = os.getcwd()
  os.chdir(ROOT)  # config paths are relative to where the user runs the command
  try:
    cli.parse_flags(argv, flag_values)
  except SystemExit as e:
    status = e.code
  finally:
    os.chdir(cwd)
  lines = [line for line in capsys.readouterr().err.splitlines() if line]
  return status, lines, flag_values


GOOD = "--config=launch/configs/dcgan.py:cpu"


@pytest.mark.parametrize("args,expected", [
    (["--config=launch/configs/dcgan.py:nope", "--workdir=w"],
     "unknown variant 'nope' of launch/configs/dcgan.py: choose one of cpu, cpu_mlp, gpu, tpu"),
    ([GOOD, "--config.modle.lr=1", "--workdir=w"],
     "--config.modle.lr: the config launch/configs/dcgan.py has no key 'modle.lr'; did you mean --config.model.lr?"),
    ([GOOD, "--config.model.lrr=1", "--workdir=w"], "did you mean --config.model.lr?"),
    ([GOOD, "--config.stpes=5", "--workdir=w"], "has no key 'stpes'; did you mean --config.steps?"),
    ([GOOD, "--config.model.lr=abc", "--workdir=w"], "--config.model.lr=abc: could not convert string to float"),
    ([GOOD], "--workdir is required: Run directory"),
    ([GOOD, "--workdir=w", "--workdri=x"], "unknown flag --workdri; did you mean --workdir?"),
    (["--config=launch/configs/nope.py:cpu", "--workdir=w"], "--config=launch/configs/nope.py: no such file"),
])
def test_a_flag_mistake_is_one_line_with_status_2(capsys, args, expected):
  status, lines, _ = _parse(capsys, *args)
  assert status == 2
  assert len(lines) == 1 and lines[0].startswith("genscale: error: ") and expected in lines[0], lines


def test_good_flags_parse_with_their_overrides(capsys):
  status, lines, parsed = _parse(capsys, GOOD, "--config.model.lr=0.5", "--config.steps=7", "--workdir=w")
  assert status is None and not lines
  assert parsed.config.model.lr == 0.5 and parsed.config.steps == 7 and parsed.workdir == "w"


def test_a_family_name_or_a_project_path_finds_the_packaged_config_from_any_directory(capsys, tmp_path,
                                                                                      monkeypatch):
  monkeypatch.chdir(tmp_path)  # not the repository: the user runs an installed command elsewhere
  packaged = os.path.join(ROOT, "launch", "configs", "dcgan.py")
  assert cli.resolve_config_path("dcgan") == packaged
  assert cli.resolve_config_path("launch/configs/dcgan.py") == packaged
  assert cli.resolve_config_path("nope") == "nope" and cli.resolve_config_path("x/dcgan.py") == "x/dcgan.py"
  (tmp_path / "dcgan.py").write_text("")  # a file of the user's own with that name wins
  assert cli.resolve_config_path("dcgan.py") == "dcgan.py"
  flag_values = flags.FlagValues()
  argv = ["train", "--config=dcgan:cpu", "--config.steps=7"]
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv)
  cli.parse_flags(argv, flag_values)
  assert flag_values.config.model.name == "dcgan" and flag_values.config.steps == 7
